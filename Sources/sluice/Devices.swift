import ArgumentParser
import Foundation
import SluiceBackends
import SluiceCore

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List compute devices: the CPU, and each Vulkan device with its heaps and queues.")
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let reason = Vulkan.unavailableReason
        let vulkan = reason == nil ? (try? Vulkan.devices()) ?? [] : []
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            let cpu = ["cores": "\(CPUBackend.coreCount)", "kernels": KernelPath.supported.map(\.rawValue).joined(separator: ",")]
            struct Out: Encodable { let cpu: [String: String]; let vulkan: [VulkanDeviceInfo]; let vulkanUnavailable: String? }
            print(String(decoding: try e.encode(Out(cpu: cpu, vulkan: vulkan, vulkanUnavailable: reason)), as: UTF8.self))
            return
        }
        print("cpu: \(CPUBackend.coreCount) cores, kernel paths \(KernelPath.supported.map(\.rawValue).joined(separator: ", "))")
        if let reason { print("vulkan: unavailable — \(reason)"); return }
        if vulkan.isEmpty { print("vulkan: no devices") }
        for d in vulkan {
            print("vulkan:\(d.index): \(d.name) (\(d.type)), Vulkan \(d.apiVersion), driver \(d.driver)")
            for (i, h) in d.heaps.enumerated() {
                print("    heap \(i): \(formatBytes(h.size))\(h.deviceLocal ? " device-local" : ""), budget \(formatBytes(h.budget))\(d.memoryBudgetExtension ? "" : " (heap less a reserve: no VK_EXT_memory_budget)")")
            }
            for (i, f) in d.queueFamilies.enumerated() {
                let caps = [f.graphics ? "graphics" : nil, f.compute ? "compute" : nil, f.transfer ? "transfer" : nil].compactMap { $0 }
                print("    queue family \(i): \(f.count) × \(caps.joined(separator: "+"))")
            }
            print("    copy engine: \(d.hasTransferQueue ? "a transfer-only queue" : "none (copies share the compute queue)"); timeline semaphores \(d.timelineSemaphore ? "yes" : "no"); storage-buffer range \(formatBytes(d.maxStorageBufferRange)); subgroup \(d.subgroupSize)")
        }
    }
}
