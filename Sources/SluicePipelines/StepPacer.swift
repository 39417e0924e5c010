import Foundation
import SluiceBackends
import SluiceCore

/// Reports denoising steps as the device finishes them. A device that records work (Vulkan) runs one
/// step behind the host: step k is reported — progress, preview, the next cancellation point — once
/// the device has finished it, while step k + 1 is being recorded, so the host waits at most once a
/// step and the device is never idle between steps. On the CPU a step is done when its call returns
/// and is reported at once.
struct StepPacer {
    let device: ComputeDevice
    private var pending: (step: Int, latents: Tensor, mark: UInt64)?

    init(device: ComputeDevice) { self.device = device }

    /// Step `step` has been given to the device, leaving `latents`; `report` gets each finished step.
    mutating func recorded(step: Int, latents: Tensor, report: (_ step: Int, _ latents: Tensor) throws -> Void) throws {
        guard device.recordsAhead else { return try report(step, latents) }
        try finish(report: report)
        pending = (step, latents, device.mark())
    }

    /// After the last step: the host waits for the step still running and reports it.
    mutating func finish(report: (_ step: Int, _ latents: Tensor) throws -> Void) throws {
        guard let p = pending else { return }
        pending = nil
        try device.wait(for: p.mark)
        try report(p.step, p.latents)
    }
}

extension PipelineRun {
    /// The denoise phase every family runs: `steps` steps, a cancelled job stopping between two (its
    /// memory goes with `end()`), each step's latents — what `step(i)` returns — reported to
    /// `afterStep` and `progress` as the device finishes that step.
    func denoise(steps: Int, progress: (GenerationProgress) -> Void, afterStep: (Int, Tensor) -> Void, isCancelled: () -> Bool,
                 step: (Int) throws -> Tensor) throws {
        try phase(.denoise) { () throws in
            let t0 = Date()
            var pacer = StepPacer(device: components.device)
            func report(_ i: Int, _ latents: Tensor) {
                afterStep(i, latents)
                progress(withDevice(GenerationProgress(phase: .denoise, step: i + 1, total: steps, elapsed: Date().timeIntervalSince(t0))))
            }
            for i in 0..<steps {
                if isCancelled() { throw SluiceError.cancelled(stage: "before step \(i + 1) of \(steps)") }
                try pacer.recorded(step: i, latents: step(i), report: report)
            }
            try pacer.finish(report: report)
        }
    }
}
