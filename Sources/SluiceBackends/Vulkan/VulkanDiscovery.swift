import CVulkan
import Foundation
import SluiceCore

/// A Vulkan device as Sluice sees it (`sluice devices`), before any is opened. Everything goes through
/// the CVulkan C layer.
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
    public let minStorageOffsetAlignment: Int
    public let subgroupSize: Int

    /// What the memory manager may plan with: the smallest device-local heap's budget.
    public var deviceBudget: Int { heaps.filter(\.deviceLocal).map(\.budget).min() ?? heaps.map(\.budget).min() ?? 0 }

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
                                        maxStorageBufferRange: Int(info.max_storage_buffer_range),
                                        minStorageOffsetAlignment: max(Int(info.min_storage_offset_alignment), 1), subgroupSize: Int(info.subgroup_size)))
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
