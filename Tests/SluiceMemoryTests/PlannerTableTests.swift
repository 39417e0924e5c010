import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceTestSupport
import Testing

/// The planner and the offload model on the real models' group tables, with the tables' own
/// (model-agnostic) estimates: this layer knows no model. (A registered family's formulas on its
/// table are the pipelines' tests.)
@Suite struct PlannerTableTests {
    static let gib = 1 << 30
    func table(_ name: String) throws -> [ComponentDescription] { try ModelTable.resolve(name).genericDescriptions }
    func denoiser(_ t: [ComponentDescription]) -> ComponentDescription { t.first { $0.phase == .denoise }! }

    /// Parameter counts built from the configs match the published model sizes.
    @Test func tablesMatchPublishedSizes() throws {
        let expected: [(String, String, Double)] = [
            ("z-image-turbo", "transformer", 6.15e9), ("flux1-dev", "transformer", 11.90e9),
            ("qwen-image", "transformer", 20.43e9), ("sdxl", "unet", 2.567e9), ("sd15", "unet", 0.860e9),
            ("flux1-dev", "text_encoder_2", 4.76e9), ("z-image-turbo", "text_encoder", 4.02e9),
        ]
        for (model, component, params) in expected {
            let c = try ModelTable.resolve(model).components.first { $0.name == component }!
            #expect(abs(Double(c.parameters) - params) / params < 0.005, "\(model) \(component): \(c.parameters)")
        }
    }

    @Test func realModelsFitSmallCardsByStreaming() throws {
        let cases: [(String, Int, DType)] = [("qwen-image", 8, .f8e4m3fn), ("flux1-dev", 12, .bf16), ("z-image-turbo", 6, .bf16)]
        for (model, gib, storage) in cases {
            let t = try table(model)
            let budget = gib * Self.gib
            let plan = try PipelinePlanner.plan(t, PlanRequest(deviceBudget: budget, storage: storage, profile: .rtx3060))
            let d = plan.component(denoiser(t).name)!
            #expect(!d.streamed.isEmpty && !d.resident.isEmpty, "\(model)")
            #expect(plan.peakDeviceBytes <= budget, "\(model): \(plan.peakDeviceBytes) > \(budget)")
            for c in plan.components { #expect(c.deviceBytes <= budget, "\(model) \(c.component)") }
            // fp8 storage halves what crosses the link compared with bf16 at the same budget.
            if storage == .f8e4m3fn {
                let bf16 = try PipelinePlanner.plan(t, PlanRequest(deviceBudget: budget, storage: .bf16, profile: .rtx3060))
                #expect(d.streamedBytesPerCall < bf16.component(d.component)!.streamedBytesPerCall)
            }
        }
    }

    /// The error names the smallest budget that works, and that budget does work.
    @Test func tooSmallBudgetsNameTheMinimum() throws {
        for name in ModelTable.known {
            let t = try table(name)
            do {
                _ = try PipelinePlanner.plan(t, PlanRequest(deviceBudget: 64 << 20, storage: .bf16))
                Issue.record("\(name) planned in 64 MiB")
            } catch let PlanError.budgetTooSmall(component, _, minimum) {
                #expect(minimum > 64 << 20)
                // That component plans at exactly its minimum, and not one MiB below.
                let c = t.first { $0.name == component }!
                let r = PlanRequest(deviceBudget: minimum, storage: .bf16)
                let act = PipelinePlanner.activationBytes(c, r)
                #expect(throws: Never.self) {
                    try Planner.planComponent(name: c.name, phase: c.phase.rawValue, groups: PipelinePlanner.sizes(c, r), activationBytes: act, budget: minimum, prefetchDepth: 1)
                }
                #expect(throws: PlanError.self) {
                    try Planner.planComponent(name: c.name, phase: c.phase.rawValue, groups: PipelinePlanner.sizes(c, r), activationBytes: act, budget: minimum - (1 << 20), prefetchDepth: 1)
                }
                // Raising the budget to each reported minimum in turn ends in a plan for the whole pipeline.
                var budget = minimum, tries = 0
                while tries < 8 {
                    do {
                        let plan = try PipelinePlanner.plan(t, PlanRequest(deviceBudget: budget, storage: .bf16))
                        #expect(plan.peakDeviceBytes <= budget, "\(name): peak \(plan.peakDeviceBytes) over \(budget)")
                        break
                    }
                    catch let PlanError.budgetTooSmall(_, _, m) { #expect(m > budget); budget = m; tries += 1 }
                }
                #expect(tries < 8)
            }
        }
    }

    @Test func batchesScaleActivationsAndFallBackToOneByOne() throws {
        let t = try table("sdxl")
        let unet = denoiser(t)
        var r = PlanRequest(deviceBudget: 400 << 20)
        let one = PipelinePlanner.activationBytes(unet, r)
        r.batch = 8
        #expect(PipelinePlanner.activationBytes(unet, r) == 8 * one)
        // 8 images' activations exceed 400 MiB; one image's fit.
        #expect(throws: PlanError.self) { try PipelinePlanner.plan(t, r) }
        let plan = try PipelinePlanner.plan(t, r, allowOneByOne: true)
        #expect(plan.oneByOne && plan.peakDeviceBytes <= 400 << 20)
        r.deviceBudget = 24 * Self.gib
        let roomy = try PipelinePlanner.plan(t, r, allowOneByOne: true)
        #expect(!roomy.oneByOne)
    }

    @Test func vaeTilesWhenItsActivationsDoNotFit() throws {
        let t = try table("sdxl")
        let roomy = try PipelinePlanner.plan(t, PlanRequest(deviceBudget: 24 * Self.gib))
        #expect(roomy.component("vae")!.tiled == false)
        let tight = try PipelinePlanner.plan(t, PlanRequest(deviceBudget: 1 * Self.gib, width: 2048, height: 2048))
        #expect(tight.component("vae")!.tiled == true)
        #expect(tight.component("vae")!.deviceBytes <= 1 * Self.gib)
        #expect(roomy.swappedBetweenPhases.isEmpty)
        #expect(!tight.swappedBetweenPhases.isEmpty)
    }

    /// Every table × profile × budget (all-fits down to the smallest, 15% apart) × 512² and 1024²:
    /// the sluice is never slower than diffusers-style group offloading, stays under its budget,
    /// and is compared with the physical bound (SIMULATION; see bench/README.md for the figures).
    @Test func sluiceNeverTrailsGroupOffloadAndTracksTheBound() throws {
        var worstDiT = 0.0, worstAll = 0.0, cases = 0, worstStaged = 0.0
        var unreachable: [String] = [], overStaged = 0, overList: [String] = []
        for name in ModelTable.known {
            let t = try table(name)
            let c = denoiser(t)
            let isDiT = c.name == "transformer"
            for profile in DeviceProfile.all {
                for side in [512, 1024] {
                    let base = PlanRequest(deviceBudget: 0, storage: .bf16, width: side, height: side, profile: profile)
                    let k = OffloadModel.costs(c, base)
                    let total = k.bytes.reduce(0, +), act = PipelinePlanner.activationBytes(c, base)
                    var budget = total + act + 4096
                    while true {
                        var r = base
                        r.deviceBudget = budget
                        guard let plan = try? PipelinePlanner.plan(t, r), let p = plan.component(c.name) else { break }
                        let device = DeviceMemory(profile: profile, capBytes: 2 * budget, backed: false)
                        let s = OffloadModel.sluiceStepSeconds(plan: p, costs: OffloadModel.costs(c, r, activation: p.activationBytes), profile: profile, device: device)
                        let g = OffloadModel.groupOffloadSeconds(k, profile)
                        let b = OffloadModel.boundSeconds(k, profile, budget: budget, activation: act).seconds
                        #expect(s <= g * 1.0000001, "\(name) \(profile.name) \(side)² \(budget): sluice \(s) > group offload \(g)")
                        #expect(device.peakBytes <= budget)
                        // A lower bound: a steady-state step below it would be a modelling error (1% for
                        // the two-call average not being the exact period).
                        #expect(s >= b * 0.99, "\(name) \(profile.name) \(side)² \(budget): \(s) s below the bound \(b) s")
                        // The issue's target, where it holds: DiT tables at budgets of at least 20% of
                        // the weights (below that only FLUX on a 4090 at 1024² misses it).
                        if isDiT && Double(budget) >= 0.2 * Double(total) {
                            #expect(s <= 1.05 * b, "\(name) \(profile.name) \(side)² \(budget): sluice \(s) s vs bound \(b) s")
                            worstDiT = max(worstDiT, s / b)
                        }
                        worstAll = max(worstAll, s / b)
                        // The staging-aware bound is a lower bound for every plan and schedule under
                        // this budget (OffloadModel): the sluice can never beat it…
                        let lb = OffloadModel.stagingAwareBoundSeconds(k, profile, budget: budget, activation: act)
                        #expect(s >= lb * 0.99, "\(name) \(profile.name) \(side)² \(budget): \(s) s below the staging-aware bound \(lb) s")
                        worstStaged = max(worstStaged, s / lb)
                        if s > 1.05 * lb {
                            overStaged += 1
                            overList.append("\(name) \(profile.name) \(side)² at \(Int(100 * Double(budget) / Double(total)))%: \(s / lb) (depth \(p.prefetchDepth), ring \(p.slotCount) × \(p.slotBytes >> 20) MiB, \(p.resident.count) resident)")
                        }
                        // …and where it exceeds 1.05 × the specified bound, no plan can meet the issue's
                        // target there.
                        if lb > 1.05 * b { unreachable.append("\(name) \(profile.name) \(side)² at \(Int(100 * Double(budget) / Double(total)))%: ≥ \(lb / b)") }
                        cases += 1
                        budget = Int(Double(budget) * 0.85)
                    }
                }
            }
        }
        #expect(cases > 300)
        // Measured: UNets, whose compute sits at high resolution and whose parameters at low, reach
        // 1.5× the bound at small budgets (the bound assumes unlimited staging), FLUX 1.18× at 2–14%
        // of its weights on a 4090 at 1024². Issue 4 asks 1.05 everywhere: not met there yet.
        #expect(worstDiT <= 1.05, "DiT worst \(worstDiT)")
        #expect(worstAll <= 1.60, "worst \(worstAll)")
        // Measured: the sluice is within 1.039× of the staging-aware bound everywhere (which also charges
        // the staging room: every byte of it is a byte not resident, and a run's first group frees no
        // room for the run's copies). Before that last point the bound had slack at SD1.5 512² with 86%
        // of its weights (1.057× on a 4090, where simulated annealing over plans found nothing below
        // 1.056×). 77 cases — FLUX on a 4090 at 1024² below 13% of its weights, SDXL and SD1.5 at many
        // budgets, where parameters and FLOPs sit in different parts of the forward pass — are provably
        // out of reach of 1.05× the specified bound for any plan (up to 1.42×).
        #expect(worstStaged <= 1.05, "worst vs the staging-aware bound \(worstStaged)")
        #expect(unreachable.count >= 20, "\(unreachable)")
        #expect(overStaged == 0, "\(overStaged) of \(cases) cases above 1.05 × the staging-aware bound")
        print("cases provably beyond 1.05 × the bound: \(unreachable.count) of \(cases); above 1.05 × the staging-aware bound: \(overStaged); worst \(worstStaged)\n" + unreachable.joined(separator: "\n") + "\nabove 1.05 × the staging-aware bound:\n" + overList.joined(separator: "\n"))
    }
}

@Suite struct ByteSizeTests {
    @Test func parsesWhatUsersType() {
        #expect(parseByteSize("8G") == 8 << 30)
        #expect(parseByteSize("12GB") == 12 << 30)
        #expect(parseByteSize("1.5GiB") == 3 << 29)
        #expect(parseByteSize("512m") == 512 << 20)
        #expect(parseByteSize("4096") == 4096)
        #expect(parseByteSize("banana") == nil)
        #expect(parseByteSize("-1G") == nil)
        #expect(parseByteSize("99999999999T") == nil)
        #expect(DeviceProfile.rtx3060.defaultBudget == 11 << 30)
        #expect(DeviceProfile.h100pcie.defaultBudget == 79 << 30)
    }
}
