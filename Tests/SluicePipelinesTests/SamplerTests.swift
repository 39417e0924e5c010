import Foundation
import SluiceCore
import SluicePipelines
import SluiceTestSupport
import SluiceWeights
import Testing

/// One case of tools/reference/make_sampler_reference.py (the fixture's metadata lists them).
/// How many f32 values lie between `a` and `b` (both of one sign).
private func ulps(_ a: Float, _ b: Float) -> Int { abs(Int(a.bitPattern) - Int(b.bitPattern)) }

private struct SamplerCase: Decodable {
    let name: String
    let config: String
    let sampler: String
    let overrides: DiscreteScheduleConfig
    let steps: Int
    let run: String?
    let strength: Double?
    let seed: UInt64
}

private enum SamplerFixture {
    static let file: SafetensorsFile = try! Fixtures.file("sampler_reference.safetensors")
    static let cases: [SamplerCase] = try! JSONDecoder().decode([SamplerCase].self, from: Data(file.metadata["cases"]!.utf8))
    static let shape: Shape = [1, 4, 6, 8]

    static func configPath(_ name: String) -> String {
        Fixtures.directory + "/models/\(name)-tiny/" + DiscreteScheduleConfig.fileName
    }

    /// The checkpoint's own scheduler_config.json (read from the model folder), with the case's overrides.
    static func config(_ c: SamplerCase) throws -> DiscreteScheduleConfig {
        try DiscreteScheduleConfig.load(path: configPath(c.config)).overriding(with: c.overrides)
    }

    static func floats(_ name: String) throws -> [Float] { try file.tensor(name).toFloats() }

    /// The script's stand-in for the UNet: x·f32(0.1·cos(t/100)) + f32(0.05·sin(t/37)).
    static func fakeModel(_ x: Tensor, _ t: Float) throws -> Tensor {
        let a = Float(0.1 * cos(Double(t) / 100)), b = Float(0.05 * sin(Double(t) / 37))
        return Tensor(try x.toFloats().map { $0 * a + b }, shape: x.shape)
    }

    /// What the script's `make_case` does for a run: every step's latents, the starting ones first.
    /// `stepNoise` replaces the generator handed to `step` (the initial draw still comes from `seed`).
    static func run(_ c: SamplerCase, stepNoise: TorchGenerator? = nil) throws -> [[Float]] {
        var s = try Sampler.parse(c.sampler).scheduler(config: config(c), steps: c.steps)
        var g = TorchGenerator(seed: c.seed)
        var x: Tensor
        var start = 0
        if c.run == "i2i" {
            start = try s.startIndex(strength: c.strength!)
            var imageGenerator = TorchGenerator(seed: 7)
            x = try s.addNoise(imageGenerator.randn(shape), noise: g.randn(shape), stepIndex: start)
        } else {
            x = try s.initialLatents(shape, generator: &g)
        }
        if let stepNoise { g = stepNoise }
        var out = [try x.toFloats()]
        for i in start..<s.steps {
            let model = try fakeModel(s.scaleModelInput(x, stepIndex: i), s.timesteps[i])
            x = try s.step(model, stepIndex: i, sample: x, generator: &g)
            out.append(try x.toFloats())
        }
        return out
    }

    /// The fixture's latents of a run, split by step.
    static func latents(_ c: SamplerCase) throws -> [[Float]] {
        let all = try floats("\(c.name)/latents")
        let n = shape.count
        return stride(from: 0, to: all.count, by: n).map { Array(all[$0..<$0 + n]) }
    }
}

@Suite struct SamplerScheduleTests {
    @Test func fixtureCoversEverySamplerBothConfigsAndEveryRunKind() {
        let cases = SamplerFixture.cases
        #expect(cases.count >= 90)
        for sampler in Sampler.allCases {
            for config in ["sd15", "sdxl"] {
                #expect(cases.contains { $0.sampler == sampler.name && $0.config == config && $0.run == "t2i" }, "\(sampler) \(config)")
            }
            #expect(cases.contains { $0.sampler == sampler.name && $0.run == "i2i" }, "\(sampler) image-to-image")
            #expect(cases.contains { $0.sampler == sampler.name && $0.overrides.predictionType == "v_prediction" }, "\(sampler) v")
        }
    }

    /// Timesteps bit for bit; sigmas and init_noise_sigma within one f32 ulp. diffusers computes them in
    /// f64 numpy from torch's f32 training table and stores f32; ours follow the same arithmetic (torch's
    /// fused linspace, double-accumulated cumprod, numpy's interp, arange and half-to-even rounding),
    /// except that torch's f32 sqrt (MKL's vsSqrt) is not correctly rounded — about one value in six is
    /// an ulp off, differently on other CPUs — and σ = √((1 − ᾱ)/ᾱ) passes through it. Timesteps, even
    /// DPM++ Karras' (rounded from σ), do not move.
    @Test func schedulesEqualDiffusers() throws {
        var sigmaCount = 0, sigmaExact = 0
        for c in SamplerFixture.cases {
            let s = try Sampler.parse(c.sampler).scheduler(config: SamplerFixture.config(c), steps: c.steps)
            let want = try SamplerFixture.floats("\(c.name)/timesteps")
            #expect(s.timesteps.map(\.bitPattern) == want.map(\.bitPattern), "\(c.name): timesteps \(s.timesteps) ≠ \(want)")
            if SamplerFixture.file.info("\(c.name)/sigmas") != nil {
                let want = try SamplerFixture.floats("\(c.name)/sigmas")
                let got = s.sigmas ?? []
                #expect(got.count == want.count && zip(got, want).allSatisfy { ulps($0, $1) <= 1 }, "\(c.name): sigmas \(got) ≠ \(want)")
                sigmaCount += want.count
                sigmaExact += zip(got, want).filter { $0 == $1 }.count
            } else {
                #expect(s.sigmas == nil, "\(c.name)")
            }
            let initSigma = try SamplerFixture.floats("\(c.name)/init_noise_sigma")[0]
            #expect(ulps(s.initNoiseSigma, initSigma) <= 2, "\(c.name): init_noise_sigma \(s.initNoiseSigma) ≠ \(initSigma)")
            #expect(s.sampler.name == c.sampler)
        }
        // The ulp differences are the exception: most sigmas are bit-identical.
        #expect(sigmaExact * 4 > sigmaCount * 3, "\(sigmaExact) of \(sigmaCount) sigmas exact")
    }

    /// Image-to-image at strength 0.6: the start index and the timesteps from it, as
    /// StableDiffusionImg2ImgPipeline.get_timesteps gives them.
    @Test func imageToImageStartsWhereDiffusersStarts() throws {
        var checked = 0
        for c in SamplerFixture.cases where c.run == "i2i" {
            let s = try Sampler.parse(c.sampler).scheduler(config: SamplerFixture.config(c), steps: c.steps)
            let start = try s.startIndex(strength: c.strength!)
            #expect(Float(start) == (try SamplerFixture.floats("\(c.name)/begin_index"))[0], "\(c.name)")
            #expect(Array(try s.timesteps(forStrength: c.strength!)) == (try SamplerFixture.floats("\(c.name)/i2i_timesteps")), "\(c.name)")
            checked += 1
        }
        #expect(checked == Sampler.allCases.count)
        let s = try Sampler.euler.scheduler(config: DiscreteScheduleConfig(), steps: 10)
        #expect(try s.startIndex(strength: 1) == 0 && s.startIndex(strength: 0) == 10 && s.startIndex(strength: 0.7) == 3)
        #expect(throws: SluiceError.self) { try s.startIndex(strength: 1.5) }
    }
}

@Suite struct SamplerDenoisingTests {
    /// Every run, every step, against diffusers' latents, end to end (errors carry from step to step):
    /// |error| ≤ 2e-6 + 2e-6·|want|. Both sides do each step's tensor math in f32 one torch op at a time
    /// (the same roundings: no fused multiply-adds, scalars first), so the whole difference is torch's
    /// f32 sqrt, log and exp (MKL's, not correctly rounded; ours are libm's): σ and the scalars built
    /// from it (√(σ² + 1), √ᾱ, DPM-Solver's λ = log α − log σ and e^{−h}) may be an ulp apart. Measured
    /// on this fixture: with atol 1e-6 the largest relative error needed is 1.1e-6 (DPM++ 2M Karras, 25
    /// steps, |x| up to ~15 at σ_max), 3.7e-7 for Euler, Euler a and DDIM — a few f32 ulps.
    @Test func denoisingRunsMatchDiffusersStepByStep() throws {
        var runs = 0
        for c in SamplerFixture.cases where c.run != nil {
            let got = try SamplerFixture.run(c), want = try SamplerFixture.latents(c)
            #expect(got.count == want.count, "\(c.name): \(got.count) steps, fixture \(want.count)")
            for (i, (g, w)) in zip(got, want).enumerated() {
                let r = compare(g, w, atol: 2e-6, rtol: 2e-6)
                #expect(r.ok, "\(c.name) step \(i): \(r)")
                if !r.ok { break }
            }
            runs += 1
        }
        #expect(runs >= 30)
    }

    /// Euler a's per-step noise comes from the run's generator: the same initial latents with other
    /// step noise end far from diffusers' result, so the test above would catch a wrong draw.
    @Test func eulerAncestralNoiseComesFromTheRunsGenerator() throws {
        let c = try #require(SamplerFixture.cases.first { $0.name == "sdxl/euler_a/7" })
        let want = try SamplerFixture.latents(c)
        let same = try SamplerFixture.run(c)
        let other = try SamplerFixture.run(c, stepNoise: TorchGenerator(seed: c.seed + 1))
        #expect(compare(same.last!, want.last!, atol: 2e-6, rtol: 2e-6).ok)
        #expect(compare(other[0], want[0], atol: 2e-6, rtol: 2e-6).ok)
        #expect(compare(other.last!, want.last!, atol: 0.05, rtol: 0).maxAbs > 0.1, "other step noise left the result unchanged")
        // Plain Euler from the same start is deterministic and differs from Euler a.
        let euler = SamplerCase(name: c.name, config: c.config, sampler: "Euler", overrides: c.overrides, steps: c.steps,
                            run: c.run, strength: nil, seed: c.seed)
        #expect(compare(try SamplerFixture.run(euler).last!, want.last!, atol: 0.05, rtol: 0).maxAbs > 0.1)
    }

    /// A scheduler reused for a second run gives the same result (DPM-Solver's history starts afresh
    /// when a step does not follow the one before).
    @Test func aSchedulerRunsTwiceAlike() throws {
        let config = try DiscreteScheduleConfig.load(path: SamplerFixture.configPath("sdxl"))
        for sampler in Sampler.allCases {
            var s = try sampler.scheduler(config: config, steps: 5)
            var results: [[Float]] = []
            for _ in 0..<2 {
                var g = TorchGenerator(seed: 3)
                var x = try g.randn(SamplerFixture.shape)
                for i in 0..<s.steps {
                    x = try s.step(SamplerFixture.fakeModel(s.scaleModelInput(x, stepIndex: i), s.timesteps[i]),
                                   stepIndex: i, sample: x, generator: &g)
                }
                results.append(try x.toFloats())
            }
            #expect(results[0] == results[1], "\(sampler)")
        }
    }

    @Test func mismatchedShapesAndIndicesAreRefused() throws {
        var s = try Sampler.dpmpp2M.scheduler(config: DiscreteScheduleConfig(), steps: 4)
        var g = TorchGenerator(seed: 1)
        let x = try g.randn([1, 4, 6, 8])
        #expect(throws: SluiceError.self) { try s.step(Tensor(zeros: [1, 4, 6, 9]), stepIndex: 0, sample: x, generator: &g) }
        #expect(throws: SluiceError.self) { try s.step(x, stepIndex: 4, sample: x, generator: &g) }
        #expect(throws: SluiceError.self) { try s.addNoise(x, noise: x, stepIndex: -1) }
    }
}

/// The name and reason of the `invalidArgument` error `body` throws; nil if it throws none or another.
private func invalidArgument(_ body: () throws -> Void) -> (name: String, reason: String)? {
    do { try body() } catch let error as SluiceError {
        if case let .invalidArgument(name, reason) = error { return (name, reason) }
    } catch {}
    return nil
}

@Suite struct SamplerNameAndConfigTests {
    @Test func namesParseWithAliases() throws {
        #expect(Sampler.allNames == ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM"])
        let aliases: [(String, Sampler)] = [
            ("Euler", .euler), ("euler", .euler), ("k_euler", .euler),
            ("Euler a", .eulerAncestral), ("euler_a", .eulerAncestral), ("EULER A", .eulerAncestral),
            ("k_euler_ancestral", .eulerAncestral), ("euler-ancestral", .eulerAncestral),
            ("DPM++ 2M", .dpmpp2M), ("dpmpp_2m", .dpmpp2M), ("k_dpmpp_2m", .dpmpp2M), ("dpm++ 2m", .dpmpp2M),
            ("DPM++ 2M Karras", .dpmpp2MKarras), ("dpmpp_2m_karras", .dpmpp2MKarras), ("k_dpmpp_2m_karras", .dpmpp2MKarras),
            ("DDIM", .ddim), ("ddim", .ddim),
        ]
        for (name, sampler) in aliases { #expect(Sampler(name: name) == sampler, "\(name)") }
        for name in Sampler.allNames { #expect(try Sampler.parse(name).name == name) }
        for bad in ["", "euler b", "dpm++ 3m", "karras", "PNDM"] {
            #expect(Sampler(name: bad) == nil, "\(bad)")
        }
        var refusal: (Parameter, String)?
        do { _ = try Sampler.parse("LMS") } catch let SluiceError.invalidParameter(p, reason) { refusal = (p, reason) } catch {}
        #expect(refusal?.0 == .sampler && refusal?.1.contains("LMS") == true && refusal?.1.contains("Euler a") == true, "\(String(describing: refusal))")
    }

    /// The real configs decode; the SD1.5 one has no timestep_spacing, so each class takes its own default.
    @Test func checkpointConfigsDecode() throws {
        let sd15 = try DiscreteScheduleConfig.load(path: SamplerFixture.configPath("sd15"))
        #expect(sd15.timestepSpacing == nil && sd15.betaSchedule == "scaled_linear" && sd15.stepsOffset == 1)
        #expect(sd15.trainedBetas == nil && sd15.clipSample == false && sd15.setAlphaToOne == false)
        let sdxl = try DiscreteScheduleConfig.load(path: SamplerFixture.configPath("sdxl"))
        #expect(sdxl.timestepSpacing == "leading" && sdxl.useKarrasSigmas == false && sdxl.interpolationType == "linear")
        #expect(try Sampler.euler.scheduler(config: sd15, steps: 3).timesteps == [999, 499.5, 0])
        #expect(try Sampler.ddim.scheduler(config: sd15, steps: 3).timesteps == [667, 334, 1])
        // diffusers writes an unset lambda_min_clipped as -Infinity.
        let dpm = try DiscreteScheduleConfig.decode(Data(#"{"lambda_min_clipped": -Infinity, "beta_schedule": "linear"}"#.utf8))
        #expect(dpm.lambdaMinClipped == -.infinity)
        #expect(try Sampler.dpmpp2M.scheduler(config: dpm, steps: 3).steps == 3)
    }

    /// `overriding(with:)` carries every key: a config with all of them set, laid over an empty one,
    /// gives itself back.
    @Test func overridingCarriesEveryKey() throws {
        let json = """
        {"num_train_timesteps": 500, "beta_start": 0.001, "beta_end": 0.01, "beta_schedule": "linear",
         "trained_betas": [0.1], "rescale_betas_zero_snr": false, "prediction_type": "v_prediction",
         "timestep_spacing": "trailing", "steps_offset": 2, "interpolation_type": "linear", "use_karras_sigmas": true,
         "use_exponential_sigmas": false, "use_beta_sigmas": false, "use_lu_lambdas": false, "use_flow_sigmas": false,
         "sigma_min": 0.1, "sigma_max": 10, "timestep_type": "discrete", "final_sigmas_type": "sigma_min",
         "algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "heun", "lower_order_final": false,
         "euler_at_final": true, "lambda_min_clipped": -5, "variance_type": "fixed", "use_dynamic_shifting": false,
         "set_alpha_to_one": true, "clip_sample": true, "clip_sample_range": 2, "thresholding": false}
        """
        let full = try DiscreteScheduleConfig.decode(Data(json.utf8))
        let mirror = Mirror(reflecting: full)
        let unset = mirror.children.filter { "\($0.value)" == "nil" }.map { $0.label ?? "?" }
        #expect(unset.isEmpty, "the test JSON leaves out \(unset)")
        #expect(DiscreteScheduleConfig().overriding(with: full) == full)
        #expect(full.overriding(with: DiscreteScheduleConfig()) == full)
    }

    /// Unsupported values fail with the key's name; keys a class does not read are ignored, as
    /// diffusers' from_config ignores them.
    @Test func badConfigsNameTheKey() throws {
        let cases: [(String, Sampler, String)] = [
            (#"{"beta_schedule": "squaredcos_cap_v2"}"#, .euler, "beta_schedule"),
            (#"{"beta_schedule": "cosine"}"#, .ddim, "beta_schedule"),
            (#"{"timestep_spacing": "uniform"}"#, .eulerAncestral, "timestep_spacing"),
            (#"{"prediction_type": "sample"}"#, .dpmpp2M, "prediction_type"),
            (#"{"prediction_type": "flow_prediction"}"#, .euler, "prediction_type"),
            (#"{"rescale_betas_zero_snr": true}"#, .ddim, "rescale_betas_zero_snr"),
            (#"{"interpolation_type": "log_linear"}"#, .euler, "interpolation_type"),
            (#"{"use_exponential_sigmas": true}"#, .euler, "use_exponential_sigmas"),
            (#"{"timestep_type": "continuous"}"#, .euler, "timestep_type"),
            (#"{"final_sigmas_type": "denoise_to_zero"}"#, .dpmpp2MKarras, "final_sigmas_type"),
            (#"{"solver_type": "rk4"}"#, .dpmpp2M, "solver_type"),
            (#"{"thresholding": true}"#, .dpmpp2M, "thresholding"),
            (#"{"thresholding": true}"#, .ddim, "thresholding"),
            (#"{"lambda_min_clipped": -5.1}"#, .dpmpp2M, "lambda_min_clipped"),
            (#"{"variance_type": "learned_range"}"#, .dpmpp2M, "variance_type"),
            (#"{"use_lu_lambdas": true}"#, .dpmpp2MKarras, "use_lu_lambdas"),
            (#"{"trained_betas": [0.1, 0.2], "num_train_timesteps": 3}"#, .euler, "trained_betas"),
            (#"{"num_train_timesteps": 1}"#, .ddim, "num_train_timesteps"),
            (#"{"beta_start": 0.5, "beta_end": 1.5}"#, .euler, "beta_start"),
        ]
        for (json, sampler, key) in cases {
            let config = try DiscreteScheduleConfig.decode(Data(json.utf8))
            let e = invalidArgument { _ = try sampler.scheduler(config: config, steps: 5) }
            #expect(e?.name == "scheduler/scheduler_config.json: \(key)", "\(sampler) \(json): \(String(describing: e))")
        }
        // A value of the wrong kind fails to decode, naming the file and the key.
        let e = invalidArgument { _ = try DiscreteScheduleConfig.decode(Data(#"{"beta_start": "small"}"#.utf8)) }
        #expect(e?.name == "scheduler/scheduler_config.json" && e?.reason.contains("beta_start") == true, "\(String(describing: e))")
        // Keys only other classes read are ignored: Euler a takes no interpolation or Karras options,
        // Euler no DPM-Solver ones.
        let foreign = try DiscreteScheduleConfig.decode(Data(#"{"interpolation_type": "log_linear", "solver_type": "rk4", "thresholding": true, "final_sigmas_type": "x"}"#.utf8))
        #expect(try Sampler.eulerAncestral.scheduler(config: foreign, steps: 5).steps == 5)
        // Steps out of range name `steps`.
        for steps in [0, 1001] {
            #expect(throws: SluiceError.invalidParameter(.steps, reason: steps == 0 ? "must be at least 1" : "1001 is more than the model's 1000 training timesteps")) {
                _ = try Sampler.ddim.scheduler(config: DiscreteScheduleConfig(), steps: steps)
            }
        }
    }
}
