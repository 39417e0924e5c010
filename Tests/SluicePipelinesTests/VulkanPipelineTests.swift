import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluicePipelines
import SluiceTestSupport
import SluiceWeights
import Testing

/// `--device vulkan` on the tiny Z-Image (lavapipe in CI): every op runs as a Vulkan kernel and the
/// memory manager places the weights in real Vulkan buffers.
@Suite(.enabled(if: Vulkan.unavailableReason == nil && ((try? Vulkan.devices().count) ?? 0) > 0, "no Vulkan device"))
struct VulkanPipelineTests {
    static let model = Fixtures.directory + "/models/z-image-tiny"
    static let request = GenerationRequest(prompt: "a red fox", seed: 7, steps: 4, width: 64, height: 64, guidance: 0)

    /// Within 1e-4 of the CPU image: the shaders sum each dot product in their own order (f32), over
    /// 4 transformer calls and the VAE. Without --vram-limit the plan comes from the device's heap
    /// budget (everything resident); with budgets that force streaming — groups copied through the
    /// staging ring on the copy queue (lavapipe: the compute queue, in order) into real buffers — the
    /// latents are identical to that run, and the peak of real device allocations stays ≤ budget.
    @Test func vulkanMatchesCPUAndStreamingChangesNothing() throws {
        let cpu = try ZImagePipeline(directory: Self.model, device: "cpu").generate(Self.request).image.toFloats()
        let vk = try ZImagePipeline(directory: Self.model, device: "vulkan")
        #expect(vk.device.note == nil)
        let ctx = try #require(vk.device.vulkan)
        let kernels: [VulkanContext.Kernel] = [.gemm, .conv2d, .attention, .rows, .rotary, .unary, .binary, .upsample]
        let before = kernels.map { ctx.dispatchCount($0) }
        let free = try vk.generate(Self.request)
        for (k, n) in zip(kernels, before) { #expect(ctx.dispatchCount(k) > n, "\(k) never ran on the device") }
        let report = free.report
        #expect(report.device.hasPrefix("vulkan"))
        #expect(try #require(report.plan).components.allSatisfy { $0.streamed.isEmpty }, "the heap holds the tiny model whole")
        let c = compare(try free.image.toFloats(), cpu, atol: 1e-4, rtol: 0)
        #expect(c.ok, "\(c)")
        var streamedSomewhere = false, tiledSomewhere = false
        let cpuPipeline = try ZImagePipeline(directory: Self.model, device: "cpu")
        for budget in [2_450_000, 2_440_000] {
            // Device memory twice the budget: the measured peak, not a refused allocation, shows the plan kept to it.
            var memory = MemoryOptions(deviceBudget: budget, profile: .rtx3060)
            memory.deviceCapBytes = 2 * budget
            // The device's own count of what it granted (every buffer, per-op ones included), from an
            // empty device (what the previous run kept is given back first).
            vk.components.releaseKept()
            ctx.resetPeak()
            let streamed = try vk.generate(Self.request, memory: memory)
            let granted = ctx.memoryStats
            #expect(granted.peak <= budget && granted.peak > 0, "budget \(budget): the device granted \(granted.peak) bytes at peak")
            if let usage = granted.heapUsage { #expect(usage > 0) }
            #expect(try streamed.latents.toFloats().map(\.bitPattern) == (try free.latents.toFloats().map(\.bitPattern)))
            if let tile = streamed.vaeTileLatent {
                // The CPU's tiled image under the same budget (whose tiled decode ZImagePipelineTests holds
                // to diffusers'): within 1e-4, as the whole image above.
                tiledSomewhere = true
                let onCPU = try cpuPipeline.generate(Self.request, memory: memory)
                #expect(onCPU.vaeTileLatent == tile)
                let c = compare(try streamed.image.toFloats(), try onCPU.image.toFloats(), atol: 1e-4, rtol: 0)
                #expect(c.ok, "budget \(budget), tile \(tile): \(c)")
            } else {
                #expect(try streamed.image.toFloats() == (try free.image.toFloats()))
            }
            #expect(streamed.report.phases.allSatisfy { $0.peakDeviceBytes <= budget && $0.peakDeviceBytes > 0 })
            streamedSomewhere = streamedSomewhere || !(streamed.report.plan?.component("transformer")?.streamed.isEmpty ?? true)
        }
        #expect(streamedSomewhere)
        #expect(tiledSomewhere)
        #expect(ctx.stagingBytes > 0, "copies went through the staging ring")
    }

    /// The discrete-GPU path, run on lavapipe with mapping turned off: weights reach device-local
    /// buffers only through the staging ring and the copy queue, host shadows mirror them for the CPU,
    /// per-op inputs go up and results come down through staging copies. Streaming under a budget gives
    /// the same latents, bit for bit, as the mapped device (the same kernels on the same values).
    @Test func unmappedMemoryTakesTheStagingPathAndChangesNothing() throws {
        let request = GenerationRequest(prompt: "a red fox", seed: 7, steps: 2, width: 64, height: 64, guidance: 0)
        let memory = MemoryOptions(deviceBudget: 2_450_000, profile: .rtx3060)
        let folder = try DiffusersFolder(path: Self.model)
        let mapped = try ZImagePipeline(folder: folder, device: ComputeDevice(backend: VulkanBackend(context: VulkanContext())))
        let ctx = try VulkanContext(forceUnmapped: true)
        let unmapped = try ZImagePipeline(folder: folder, device: ComputeDevice(backend: VulkanBackend(context: ctx)))
        let a = try mapped.generate(request, memory: memory), b = try unmapped.generate(request, memory: memory)
        #expect(try b.latents.toFloats().map(\.bitPattern) == (try a.latents.toFloats().map(\.bitPattern)))
        #expect(try b.image.toFloats() == (try a.image.toFloats()))
        #expect(b.report.phases.allSatisfy { $0.peakDeviceBytes <= 2_450_000 })
        #expect(ctx.stagingBytes > 0)
        // Every crossing is counted where it happens: the weights the memory manager copied are the
        // weight bytes the device took in; each phase also took in inputs; the denoise phase read nothing
        // back (the latents stay on the device), the decoder its image.
        for run in [a, b] {
            for phase in run.report.phases {
                let t = try #require(phase.deviceTraffic, "\(phase.phase)")
                #expect(t.weightBytesToDevice == phase.bytesHostToDevice, "\(phase.phase): \(t)")
                #expect(t.otherBytesToDevice > 0 && t.submits > 0, "\(phase.phase): \(t)")
                if phase.phase == "denoise" { #expect(t.bytesToHost == 0, "\(t)") }
                if phase.phase == "decode" { #expect(t.bytesToHost >= 3 * 64 * 64 * 4 && t.hostWaits > 0, "\(t)") }
            }
        }
    }

    /// A steady-state denoise step — between two progress reports of the denoise phase, neither the
    /// first step nor the last — on the mapped and the forced-discrete path, resident and streamed: the host waits for the
    /// device at most once, nothing comes back (the latents stay on the device: the Euler step is a
    /// kernel), the weight bytes in are exactly the streamed groups' bytes of one transformer call, and
    /// the other bytes in are the step's own inputs, the same every step (timestep features, position
    /// tables, a few constants; plus the caption features when the text encoder's memory was given back).
    @Test(arguments: [false, true]) func steadyStateStepCrossesOnlyItsInputs(unmapped: Bool) throws {
        let ctx = try VulkanContext(forceUnmapped: unmapped)
        let pipe = try ZImagePipeline(folder: try DiffusersFolder(path: Self.model), device: ComputeDevice(backend: VulkanBackend(context: ctx)))
        for budget in [nil, 2_450_000] {
            var inputs: Set<Int> = []
            var marks: [VulkanContext.Counters] = []
            let memory = budget.map { MemoryOptions(deviceBudget: $0, profile: .rtx3060) } ?? MemoryOptions()
            var request = Self.request
            request.steps = 5
            let result = try pipe.generate(request, memory: memory, progress: { p in
                if p.phase == .denoise, p.step > 0 { marks.append(ctx.counters) }
            }, afterStep: { _, _ in }, isCancelled: { false })
            let transformer = try #require(result.report.plan?.component("transformer"))
            #expect(budget == nil || !transformer.streamed.isEmpty, "the budget streams the transformer")
            // The streamed groups are blocks, named by their module path: their tensors' bytes, from the file.
            let file = try SafetensorsFile(path: Self.model + "/transformer/diffusion_pytorch_model.safetensors")
            let streamedBytes = try transformer.streamed.reduce(0) { sum, group in
                let keys = file.names.filter { $0.hasPrefix(group + ".") }
                #expect(!keys.isEmpty, "\(group) is a module path")
                return try sum + keys.reduce(0) { try $0 + file.tensor($1).byteCount }
            }
            #expect(marks.count == request.steps)
            // The device runs a step behind the host: step k is reported once it has finished, while
            // step k + 1 is recorded. Between the reports of steps 2, 3 and 4 lie whole steady steps.
            let steady = Array(marks[1...3])
            for (a, b) in zip(steady, steady.dropFirst()) {
                let step = b - a
                #expect(step.hostWaits <= 1 && step.bytesOut == 0 && step.submits > 0, "\(step)")
                #expect(step.weightBytesIn == streamedBytes, "\(step) vs \(streamedBytes)")
                #expect(step.otherBytesIn > 0 && step.otherBytesIn < 64 << 10, "\(step)")
                inputs.insert(step.otherBytesIn)
            }
            // Nothing comes back in the whole denoise phase: the final latents stay on the device until the decoder reads them.
            let latents = try #require(result.report.phases.first { $0.phase == "denoise" }?.deviceTraffic)
            #expect(latents.bytesToHost == 0, "\(latents)")
            #expect(inputs.count == 1, "every steady step takes in the same inputs: \(inputs)")
        }
    }

    /// The ring's reuse hazard on the device's timelines: in a trace of what the device was asked, every
    /// weight copy waits (on the device) for a compute timeline value at or past that of every kernel that
    /// read the bytes it overwrites before it was issued. With that wait removed (a test hook) the same
    /// check finds copies that would start early. (lavapipe runs copies and kernels on one queue in
    /// order, so the image is right either way: the check is on the timeline values a GPU obeys.)
    @Test func ringCopiesWaitForTheKernelsThatReadThem() throws {
        let ctx = try VulkanContext()
        let pipe = try ZImagePipeline(folder: try DiffusersFolder(path: Self.model), device: ComputeDevice(backend: VulkanBackend(context: ctx)))
        let memory = MemoryOptions(deviceBudget: 2_450_000, profile: .rtx3060)
        func earlyCopies() throws -> (early: Int, copies: Int) {
            ctx.startTrace()
            defer { ctx.stopTrace() }
            _ = try pipe.generate(Self.request, memory: memory)
            var reads: [UInt: [(range: Range<Int>, value: UInt64)]] = [:]
            var early = 0, copies = 0
            for e in ctx.trace {
                switch e.kind {
                case .created: reads[e.buffer] = []
                case .read: reads[e.buffer, default: []].append((e.range, e.value))
                case .copy:
                    copies += 1
                    if reads[e.buffer, default: []].contains(where: { $0.range.overlaps(e.range) && $0.value > e.value }) { early += 1 }
                case .write: break
                }
            }
            return (early, copies)
        }
        let waited = try earlyCopies()
        #expect(waited.copies > 0 && waited.early == 0, "\(waited)")
        ctx.skipCopyWaits(true)
        defer { ctx.skipCopyWaits(false) }
        let skipped = try earlyCopies()
        #expect(skipped.early > 0, "\(skipped)")
    }

    /// A budget below what one group needs is an error with the numbers, before anything runs; a
    /// budget is never more than the device has.
    @Test func tooLittleDeviceMemoryIsAnErrorWithNumbers() throws {
        let vk = try ZImagePipeline(directory: Self.model, device: "vulkan")
        let error = #expect(throws: SluiceError.self) {
            _ = try vk.generate(Self.request, memory: MemoryOptions(deviceBudget: 200_000))
        }
        let text = error.map { "\($0)" } ?? ""
        #expect(text.contains("vramLimit") && text.contains("budget of 0.2 MiB") && text.contains("smallest that works is"), "\(text)")
        // A limit beyond the device's heap is capped to the heap's budget; none means the heap's budget.
        let heap = try #require(vk.device.vulkan).info.deviceBudget
        #expect(heap > 0)
        #expect(vk.device.budget(limit: 1 << 50) == heap)
        #expect(vk.device.budget(limit: nil) == heap)
        #expect(vk.device.budget(limit: 5_000_000) == 5_000_000)
    }

    @Test func badDeviceSpecIsAnError() {
        #expect(throws: SluiceError.self) { try ZImagePipeline(directory: Self.model, device: "tpu") }
    }
}
