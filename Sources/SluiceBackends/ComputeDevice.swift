import SluiceCore

/// What computes (`--device cpu|vulkan[:N]`): the backend, the host counter of the activations it
/// allocates, and on Vulkan the device whose memory the memory manager plans with. A Vulkan request
/// that cannot be met (no loader, no device, a build without Vulkan) falls back to the CPU with a
/// note saying why.
public struct ComputeDevice: @unchecked Sendable {
    public let backend: any Backend
    /// Host bytes of the activations the CPU backend allocates.
    public let activations: AllocationCounter
    /// Why the device is not what was asked, when it is not.
    public let note: String?
    /// Host copies of weights the memory manager keeps in RAM (under `--ram-limit`).
    public let hostWeights = AllocationCounter()

    public init(backend: any Backend, activations: AllocationCounter = AllocationCounter(), note: String? = nil) {
        self.backend = backend; self.activations = activations; self.note = note
    }

    /// The CPU, its activations counted.
    public static func cpu() throws(SluiceError) -> ComputeDevice {
        let counter = AllocationCounter()
        return ComputeDevice(backend: try CPUBackend(allocations: counter), activations: counter)
    }

    /// `spec`: cpu, vulkan or vulkan:N (the number `sluice devices` shows). Plain `vulkan` falls back
    /// to the CPU with a note when no Vulkan device can be used; a numbered device that cannot be is an
    /// error (it was asked for by name).
    /// `compute`: what linear layers compute in (f32, or bf16 on a CPU with AVX512-BF16).
    public static func select(_ spec: String, compute: DType = .f32) throws(SluiceError) -> ComputeDevice {
        let counter = AllocationCounter()
        let lower = spec.lowercased()
        if lower == "cpu" { return ComputeDevice(backend: try CPUBackend(allocations: counter, compute: compute), activations: counter) }
        guard compute == .f32 else {
            throw .invalidParameter(.compute, reason: "\(compute.rawValue) compute runs on the CPU only (AVX512-BF16); \(spec) computes in f32")
        }
        let cpu = try CPUBackend(allocations: counter)
        guard lower == "vulkan" || lower.hasPrefix("vulkan:") else {
            throw .invalidParameter(.device, reason: "'\(spec)' must be cpu, vulkan or vulkan:N")
        }
        var index: Int?
        if lower.hasPrefix("vulkan:") {
            guard let i = Int(lower.dropFirst("vulkan:".count)), i >= 0 else {
                throw .invalidParameter(.device, reason: "N in '\(spec)' must be a device number (see `sluice devices`)")
            }
            index = i
        }
        if let reason = Vulkan.unavailableReason {
            if index != nil { throw .invalidParameter(.device, reason: "'\(spec)' cannot be used: \(reason)") }
            return ComputeDevice(backend: cpu, activations: counter, note: "vulkan unavailable (\(reason)); using the CPU")
        }
        do {
            let ctx = try VulkanContext(index: index)
            return ComputeDevice(backend: try VulkanBackend(context: ctx, cpu: cpu), activations: counter)
        } catch {
            if index != nil {
                if case .invalidParameter(.device, let reason) = error { throw .invalidParameter(.device, reason: reason) }
                throw .invalidParameter(.device, reason: "'\(spec)' cannot be used: \(error)")
            }
            return ComputeDevice(backend: cpu, activations: counter, note: "vulkan unavailable (\(error)); using the CPU")
        }
    }

    /// What linear layers compute in ("f32" or "bf16").
    public var compute: String { ((backend as? CPUBackend)?.compute ?? .f32).rawValue }

    /// The Vulkan device the backend computes on, if it does.
    public var vulkan: VulkanContext? { (backend as? VulkanBackend)?.context }

    /// Whether work is recorded and run later (a Vulkan device) rather than done when a call returns.
    public var recordsAhead: Bool { vulkan != nil }
    /// A point in the work given to the device so far, to wait for later: a device records work and
    /// returns at once (0 on the CPU, whose work is done when a call returns).
    public func mark() -> UInt64 { vulkan?.computeMark ?? 0 }
    /// The host waits until the device has finished the work up to `mark`.
    public func wait(for mark: UInt64) throws(SluiceError) { try vulkan?.wait(mark) }
    /// The host waits until the device has finished everything given to it.
    public func finish() throws(SluiceError) { try vulkan?.finish() }

    /// "cpu", or the Vulkan device with the memory it plans with (a CPU-based Vulkan device, such as
    /// Mesa's llvmpipe, named as the software rasterizer it is).
    public var description: String {
        guard let v = vulkan else { return "cpu" }
        let software = v.info.type == "CPU" ? "; a software rasterizer on the CPU — correct, not fast" : ""
        return "vulkan: \(v.info.name) (\(v.info.type), \(formatBytes(v.info.deviceBudget)) device budget\(software))"
    }

    /// The budget the memory manager plans with: `limit`, else on a real device what its device-local
    /// heap offers (none on the CPU: weights are read from the mapped files in place). A limit above
    /// what the device has is capped to it: the plan must fit the real heap.
    public func budget(limit: Int?) -> Int? {
        guard let heap = vulkan?.info.deviceBudget else { return limit }
        return min(limit ?? heap, heap)
    }

    /// Every device allocation takes a multiple of this (1 on the simulated device).
    public var allocationGranularity: Int { vulkan?.allocationGranularity ?? 1 }

    /// The device memory the memory manager allocates from under `budget`: real Vulkan buffers
    /// charged against the budget, or the simulated device's ledger. `cap` (tests only) lets the
    /// ledger hold more than the budget, so that a plan over its budget shows in the measured peak.
    public func memory(budget: Int, profile: DeviceProfile, cap: Int? = nil) -> DeviceMemory {
        DeviceMemory(profile: profile, capBytes: cap ?? budget, backing: vulkan.map { VulkanMemory(context: $0) })
    }
}
