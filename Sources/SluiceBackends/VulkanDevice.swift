import CVulkan
import Foundation
import SluiceCore

/// A Vulkan device as Sluice sees it (`sluice devices`), and an open context on one, with the
/// compute kernels SPIR-V ships for. Everything goes through the CVulkan C layer.
public struct VulkanDeviceInfo: Sendable, Codable {
    public struct Heap: Sendable, Codable { public let size: Int; public let budget: Int; public let deviceLocal: Bool }
    public struct QueueFamily: Sendable, Codable { public let count: Int; public let graphics: Bool; public let compute: Bool; public let transfer: Bool }
    public let index: Int
    public let name: String
    public let type: String
    public let driver: String
    public let apiVersion: String
    public let heaps: [Heap]
    public let queueFamilies: [QueueFamily]
    public let memoryBudgetExtension: Bool
    public let timelineSemaphore: Bool
    public let maxStorageBufferRange: Int
    public let subgroupSize: Int

    /// A transfer-only queue family: the copy engine a discrete GPU has beside compute.
    public var hasTransferQueue: Bool { queueFamilies.contains { $0.transfer && !$0.compute && !$0.graphics } }
}

public enum Vulkan {
    static func message(_ buf: [CChar]) -> String { String(cString: buf) }

    /// nil when Vulkan is usable; otherwise the one line saying why not.
    public static var unavailableReason: String? {
        var err = [CChar](repeating: 0, count: 512)
        return sk_vk_available(&err, err.count) == 0 ? nil : message(err)
    }

    public static func devices() throws(SluiceError) -> [VulkanDeviceInfo] {
        var err = [CChar](repeating: 0, count: 512)
        let n = sk_vk_device_count(&err, err.count)
        guard n >= 0 else { throw .invalidArgument(name: "vulkan", reason: message(err)) }
        var out: [VulkanDeviceInfo] = []
        for i in 0..<Int(n) {
            var info = sk_vk_device_info()
            guard sk_vk_device_info_at(Int32(i), &info, &err, err.count) == 0 else { throw .invalidArgument(name: "vulkan device \(i)", reason: message(err)) }
            let name = withUnsafeBytes(of: info.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            let driver = withUnsafeBytes(of: info.driver) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            let heaps = withUnsafeBytes(of: info.heaps) { raw in
                (0..<Int(info.heap_count)).map { j -> VulkanDeviceInfo.Heap in
                    let h = raw.load(fromByteOffset: j * MemoryLayout<sk_vk_heap>.stride, as: sk_vk_heap.self)
                    return .init(size: Int(h.size), budget: Int(h.budget), deviceLocal: h.device_local != 0)
                }
            }
            let families = withUnsafeBytes(of: info.families) { raw in
                (0..<Int(info.family_count)).map { j -> VulkanDeviceInfo.QueueFamily in
                    let f = raw.load(fromByteOffset: j * MemoryLayout<sk_vk_queue_family>.stride, as: sk_vk_queue_family.self)
                    return .init(count: Int(f.count), graphics: f.graphics != 0, compute: f.compute != 0, transfer: f.transfer != 0)
                }
            }
            let types = [0: "other", 1: "integrated GPU", 2: "discrete GPU", 3: "virtual GPU", 4: "CPU"]
            let v = info.api_version
            out.append(VulkanDeviceInfo(index: i, name: name, type: types[Int(info.type)] ?? "unknown", driver: driver,
                                        apiVersion: "\(v >> 22).\((v >> 12) & 0x3FF).\(v & 0xFFF)", heaps: heaps, queueFamilies: families,
                                        memoryBudgetExtension: info.has_memory_budget != 0, timelineSemaphore: info.has_timeline_semaphore != 0,
                                        maxStorageBufferRange: Int(info.max_storage_buffer_range), subgroupSize: Int(info.subgroup_size)))
        }
        return out
    }

    /// The device `--device vulkan` means: a discrete GPU first, then integrated, then anything.
    public static func preferredIndex(_ devices: [VulkanDeviceInfo]) -> Int? {
        for type in ["discrete GPU", "integrated GPU", "virtual GPU", "CPU", "other"] {
            if let d = devices.first(where: { $0.type == type }) { return d.index }
        }
        return nil
    }
}

/// An open logical device: buffers, uploads/downloads, kernel dispatches (each waited for on a
/// timeline semaphore).
public final class VulkanContext: @unchecked Sendable {
    let handle: OpaquePointer
    public let info: VulkanDeviceInfo

    public init(index: Int? = nil) throws(SluiceError) {
        let devices = try Vulkan.devices()
        guard let i = index ?? Vulkan.preferredIndex(devices), i < devices.count else {
            throw .invalidArgument(name: "--device vulkan", reason: devices.isEmpty ? "no Vulkan device found" : "no device \(index ?? -1) (there are \(devices.count))")
        }
        var err = [CChar](repeating: 0, count: 512)
        guard let h = sk_vk_open(Int32(i), &err, err.count) else { throw .invalidArgument(name: "vulkan device \(i)", reason: Vulkan.message(err)) }
        handle = h
        info = devices[i]
    }

    deinit { sk_vk_close(handle) }

    public var hasTransferQueue: Bool { sk_vk_has_transfer_queue(handle) != 0 }

    public final class Buffer: @unchecked Sendable {
        let handle: OpaquePointer
        let context: VulkanContext  // a buffer keeps its device open
        public let bytes: Int
        init(handle: OpaquePointer, context: VulkanContext, bytes: Int) { self.handle = handle; self.context = context; self.bytes = bytes }
        deinit { sk_vk_buffer_destroy(context.handle, handle) }
    }

    public func buffer(bytes: Int) throws(SluiceError) -> Buffer {
        var err = [CChar](repeating: 0, count: 512)
        guard let b = sk_vk_buffer_create(handle, UInt64(max(bytes, 4)), &err, err.count) else {
            let reason = Vulkan.message(err)
            if reason.contains("out of device memory") {
                throw .outOfMemory(device: info.name, requestedBytes: bytes, availableBytes: info.heaps.first { $0.deviceLocal }?.budget ?? 0)
            }
            throw .invalidArgument(name: "vulkan buffer", reason: reason)
        }
        return Buffer(handle: b, context: self, bytes: bytes)
    }

    public func upload(_ t: Tensor, to b: Buffer, offset: Int = 0) throws(SluiceError) {
        let c = t.contiguous()
        var err = [CChar](repeating: 0, count: 512)
        guard sk_vk_upload(handle, b.handle, UInt64(offset), c.rawPointer, UInt64(c.byteCount), &err, err.count) == 0 else {
            throw .invalidArgument(name: "vulkan upload", reason: Vulkan.message(err))
        }
    }

    public func download(_ b: Buffer, into t: Tensor) throws(SluiceError) {
        var err = [CChar](repeating: 0, count: 512)
        guard sk_vk_download(handle, b.handle, 0, t.rawPointer, UInt64(t.byteCount), &err, err.count) == 0 else {
            throw .invalidArgument(name: "vulkan download", reason: Vulkan.message(err))
        }
    }

    public enum Kernel { case binary, silu, matmulTransposed, rows, rotary, upsample }

    public func dispatch(_ k: Kernel, _ buffers: [Buffer], push: [UInt32], groups: (Int, Int, Int)) throws(SluiceError) {
        let kernel: sk_vk_kernel = switch k { case .binary: SK_VK_BINARY; case .silu: SK_VK_SILU; case .matmulTransposed: SK_VK_MATMUL_T; case .rows: SK_VK_ROWS; case .rotary: SK_VK_ROTARY; case .upsample: SK_VK_UPSAMPLE }
        var err = [CChar](repeating: 0, count: 512)
        let handles: [OpaquePointer?] = buffers.map { $0.handle }
        let rc = handles.withUnsafeBufferPointer { hp in
            push.withUnsafeBytes { pp in
                sk_vk_dispatch(handle, kernel, hp.baseAddress, UInt32(buffers.count), pp.baseAddress, UInt32(pp.count),
                               UInt32(groups.0), UInt32(groups.1), UInt32(groups.2), &err, err.count)
            }
        }
        guard rc == 0 else { throw .invalidArgument(name: "vulkan dispatch", reason: Vulkan.message(err)) }
    }
}
