import SluiceBackends
import SluiceCore

/// `--device cpu|vulkan[:N]`: the backend a pipeline computes with. A Vulkan request that cannot be
/// met (no loader, no device, a build without Vulkan) falls back to the CPU with one line saying why.
public enum DeviceSelection {
    public static func backend(_ spec: String, allocations: AllocationCounter) throws(SluiceError) -> (backend: any Backend, note: String?) {
        let cpu = try CPUBackend(allocations: allocations)
        let lower = spec.lowercased()
        if lower == "cpu" { return (cpu, nil) }
        guard lower == "vulkan" || lower.hasPrefix("vulkan:") else {
            throw .invalidArgument(name: "--device \(spec)", reason: "must be cpu, vulkan or vulkan:N")
        }
        var index: Int?
        if lower.hasPrefix("vulkan:") {
            guard let i = Int(lower.dropFirst("vulkan:".count)), i >= 0 else {
                throw .invalidArgument(name: "--device \(spec)", reason: "N in vulkan:N must be a device number (see `sluice devices`)")
            }
            index = i
        }
        if let reason = Vulkan.unavailableReason { return (cpu, "vulkan unavailable (\(reason)); using the CPU") }
        do {
            let ctx = try VulkanContext(index: index)
            return (try VulkanBackend(context: ctx, cpu: cpu), nil)
        } catch {
            return (cpu, "vulkan unavailable (\(error)); using the CPU")
        }
    }
}
