import Foundation
import SluiceCore
import SluiceMemory
import SluicePipelines
import Testing

/// The checks every text-to-image family must pass, as diffusers' `PipelineTesterMixin` gives every
/// pipeline one battery: a new family's test calls `PipelineBattery(...).runAll()` on its tiny model.
/// Parity with the reference implementation stays in each family's own tests; these are the
/// properties the server and the command line rely on.
public struct PipelineBattery {
    /// A fresh pipeline (each check loads its own, so no state leaks between them).
    public let load: () throws -> any TextToImagePipeline
    /// A small request the tiny model runs in well under a second.
    public let request: GenerationRequest
    /// Device budgets under which the family must stream or tile and still give the same result;
    /// the first must hold everything.
    public let budgets: [Int]

    public init(request: GenerationRequest, budgets: [Int], load: @escaping () throws -> any TextToImagePipeline) {
        self.load = load; self.request = request; self.budgets = budgets
    }

    public func runAll() throws {
        try defaultsAreUsable()
        try sameSeedSameImageOtherSeedOtherImage()
        try imagesHaveTheRequestedShape()
        try badRequestsNameTheParameter()
        try progressRunsThroughThePhasesInOrder()
        try cancellingStopsBetweenStepsAndTheNextRunWorks()
        try budgetsChangeNothingButWhereTheyMayAndKeepToTheBudget()
        try imageToImageKeepsToTheBudget()
    }

    func bits(_ t: Tensor) throws -> [UInt32] { try t.toFloats().map(\.bitPattern) }

    public func defaultsAreUsable() throws {
        let d = try load().defaults
        #expect(d.steps >= 1 && d.guidance >= 0 && d.sizeMultiple >= 1 && d.maxPromptTokens >= 1)
        #expect(d.width % d.sizeMultiple == 0 && d.height % d.sizeMultiple == 0, "\(d)")
    }

    public func sameSeedSameImageOtherSeedOtherImage() throws {
        let pipe = try load()
        let a = try pipe.generate(request), b = try pipe.generate(request)
        #expect(try bits(a.image) == bits(b.image) && bits(a.latents) == bits(b.latents), "the same request gave two images")
        var other = request
        other.seed &+= 1
        #expect(try bits(pipe.generate(other).image) != bits(a.image), "seeds \(request.seed) and \(other.seed) gave one image")
    }

    public func imagesHaveTheRequestedShape() throws {
        let pipe = try load()
        var r = request
        r.width = request.width + pipe.defaults.sizeMultiple * 2
        let image = try pipe.generate(r).image
        #expect(image.shape == [3, r.height, r.width])
        #expect(try image.toFloats().allSatisfy { $0 >= 0 && $0 <= 1 }, "pixels outside [0, 1]")
    }

    /// Every refusal is an `invalidParameter` naming the parameter at fault, before any work.
    public func badRequestsNameTheParameter() throws {
        let pipe = try load()
        let m = pipe.defaults.sizeMultiple
        var cases: [(GenerationRequest, Parameter)] = []
        var r = request
        r.steps = 0; cases.append((r, .steps))
        r = request; r.guidance = -1; cases.append((r, .guidance))
        r = request; r.width = 0; cases.append((r, .width))
        r = request; r.height = -m; cases.append((r, .height))
        if m > 1 { r = request; r.width += 1; cases.append((r, .width)); r = request; r.height += 1; cases.append((r, .height)) }
        for (bad, parameter) in cases {
            for (what, call) in [("validate", { try pipe.validate(bad) }), ("plan", { _ = try pipe.plan(bad, memory: MemoryOptions()) }),
                                 ("generate", { _ = try pipe.generate(bad) })] as [(String, () throws -> Void)] {
                do {
                    try call()
                    Issue.record("\(what) accepted a bad \(parameter): \(bad)")
                } catch let SluiceError.invalidParameter(p, _) {
                    #expect(p == parameter, "\(what): \(bad) blamed \(p), not \(parameter)")
                } catch {
                    Issue.record("\(what): \(bad) failed without naming \(parameter): \(error)")
                }
            }
        }
    }

    public func progressRunsThroughThePhasesInOrder() throws {
        let pipe = try load()
        var phases: [Phase] = [], steps: [Int] = [], after: [Int] = []
        _ = try pipe.generate(request, memory: MemoryOptions(), progress: { p in
            if phases.last != p.phase { phases.append(p.phase) }
            if p.phase == .denoise { steps.append(p.step) }
        }, afterStep: { i, _ in after.append(i) }, isCancelled: { false })
        #expect(phases == [.text, .denoise, .decode], "\(phases)")
        #expect(steps == Array(1...request.steps), "\(steps)")
        #expect(after == Array(0..<request.steps), "\(after)")
    }

    public func cancellingStopsBetweenStepsAndTheNextRunWorks() throws {
        let pipe = try load()
        var stepsRun = 0
        do {
            _ = try pipe.generate(request, memory: MemoryOptions(deviceBudget: budgets.first), progress: { _ in },
                                  afterStep: { _, _ in stepsRun += 1 }, isCancelled: { stepsRun >= 1 })
            Issue.record("a cancelled run finished")
        } catch SluiceError.cancelled {
            #expect(stepsRun == 1)
        }
        #expect(try pipe.generate(request).image.count > 0)
    }

    /// Under every budget: the plan `plan` gives is the plan the run reports; latents are bit-identical
    /// to the unbudgeted run (and the image too unless the VAE tiled); the device — sized at twice the
    /// budget, so an overrun shows in the measured peak instead of failing an allocation — never held
    /// more than the budget. A budget far too small is refused up front, naming `vramLimit`.
    public func budgetsChangeNothingButWhereTheyMayAndKeepToTheBudget() throws {
        let pipe = try load()
        let free = try pipe.generate(request)
        let noPlan = try pipe.plan(request, memory: MemoryOptions())
        #expect(free.report.plan == nil && noPlan == nil)
        var streamed = false
        for (i, budget) in budgets.enumerated() {
            var memory = MemoryOptions(deviceBudget: budget, profile: .rtx3060)
            memory.deviceCapBytes = 2 * budget
            let out = try pipe.generate(request, memory: memory)
            let plan = try #require(out.report.plan)
            let planned = try pipe.plan(request, memory: memory)
            #expect(planned == plan, "budget \(budget): plan differs from the run's")
            #expect(try bits(out.latents) == bits(free.latents), "budget \(budget): latents changed")
            if out.vaeTileLatent == nil { #expect(try bits(out.image) == bits(free.image), "budget \(budget): image changed") }
            #expect(plan.peakDeviceBytes <= budget)
            for phase in out.report.phases { #expect(phase.peakDeviceBytes <= budget, "budget \(budget) \(phase.phase): \(phase.peakDeviceBytes)") }
            if i == 0 { #expect(plan.components.allSatisfy { $0.streamed.isEmpty && $0.tileLatent == nil }, "the first budget must hold everything") }
            streamed = streamed || plan.components.contains { !$0.streamed.isEmpty || $0.tileLatent != nil }
        }
        if budgets.count > 1 { #expect(streamed, "no budget made anything stream or tile") }
        do {
            _ = try pipe.generate(request, memory: MemoryOptions(deviceBudget: 1000))
            Issue.record("ran in 1000 bytes")
        } catch let SluiceError.invalidParameter(p, reason) {
            #expect(p == .vramLimit && reason.contains("smallest that works"), "\(reason)")
        }
    }

    /// Image to image (for families that take an init image) under the same budgets: every phase within the
    /// budget — components of a phase run one at a time, so a text encoder the plan swaps out leaves before
    /// the VAE encoder takes its room — and the latents the unbudgeted run's unless the encoder tiled.
    public func imageToImageKeepsToTheBudget() throws {
        let pipe = try load()
        guard pipe.supportsImageToImage else { return }
        var r = request
        var rng = SplitMix(seed: 3)
        r.initImage = InitImage(pixels: (0..<(3 * r.width * r.height)).map { _ in UInt8(rng.below(256)) }, width: r.width, height: r.height)
        r.strength = 0.6
        let free = try pipe.generate(r)
        for budget in budgets {
            var memory = MemoryOptions(deviceBudget: budget, profile: .rtx3060)
            memory.deviceCapBytes = 2 * budget
            let out = try pipe.generate(r, memory: memory)
            let plan = try #require(out.report.plan)
            for phase in out.report.phases { #expect(phase.peakDeviceBytes <= budget, "image to image, budget \(budget) \(phase.phase): \(phase.peakDeviceBytes)") }
            if plan.component("vae_encoder")?.tileLatent == nil {
                #expect(try bits(out.latents) == bits(free.latents), "image to image, budget \(budget): latents changed")
            }
        }
    }
}
