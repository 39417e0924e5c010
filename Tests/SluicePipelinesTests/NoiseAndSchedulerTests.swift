import Foundation
import SluiceCore
import SluicePipelines
import SluiceTestSupport
import Testing

@Suite struct TorchGeneratorTests {
    /// The engine is the standard mt19937: its 10000th output from the default seed 5489 is 4123659995
    /// (C++ [rand.predef]).
    @Test func engineIsMT19937() {
        var g = TorchGenerator(seed: 5489)
        var last: UInt32 = 0
        for _ in 0..<10000 { last = g.next32() }
        #expect(last == 4_123_659_995)
    }

    /// torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)) for 5 seeds (one above
    /// 2³²: torch keeps the low 32 bits) and 6 shapes (17 and 280 are not multiples of 16: torch redraws
    /// the last 16). Tolerance 0: bit-identical.
    @Test func randnIsBitIdenticalToTorch() throws {
        let f = try Fixtures.file("randn.safetensors")
        #expect(f.names.count >= 20)
        for name in f.names {
            let parts = name.split(separator: "_")
            let seed = UInt64(parts[0].dropFirst(4))!
            let dims = parts[1].split(separator: "x").map { Int($0)! }
            var g = TorchGenerator(seed: seed)
            let got = try g.randn(Shape(dims)).toFloats()
            let want = try f.tensor(name).toFloats()
            #expect(got.count == dims.reduce(1, *) && want.count == got.count, "\(name): \(got.count) values, fixture \(want.count)")
            let same = zip(got, want).allSatisfy { $0.bitPattern == $1.bitPattern }
            #expect(same, "\(name): max |error| \(compare(got, want, atol: 0, rtol: 0).maxAbs)")
        }
    }

    @Test func tinyShapesAreRefused() {
        var g = TorchGenerator(seed: 1)
        #expect(throws: SluiceError.self) { try g.randn([3, 5]) }
    }
}

@Suite struct FlowMatchSchedulerTests {
    /// Z-Image's schedule: base sigmas linspace(1, 1/n, n), static shift 3 → diffusers' sigmas, exactly.
    @Test func sigmasMatchDiffusers() throws {
        let ref = try Fixtures.file("zimage_reference.safetensors")
        var config = FlowMatchEulerScheduler.Config()
        config.shift = 3
        let s = try FlowMatchEulerScheduler(config: config, baseSigmas: FlowMatchEulerScheduler.linspace(1, 1.0 / 4, 4))
        #expect(s.sigmas == (try ref.tensor("sigmas").toFloats()))
        #expect(s.timesteps.first == 1000)
    }

    @Test func dynamicShiftFollowsTheFormula() throws {
        var config = FlowMatchEulerScheduler.Config()
        config.useDynamicShifting = true
        let mu = FlowMatchEulerScheduler.mu(imageSeqLen: 4096, config: config)
        #expect(abs(mu - 1.15) < 1e-12)
        let s = try FlowMatchEulerScheduler(config: config, baseSigmas: [1, 0.5], mu: mu)
        let e = Float(exp(1.15))
        #expect(abs(s.sigmas[1] - e / (e + 1)) < 1e-6)
        #expect(throws: SluiceError.self) { try FlowMatchEulerScheduler(config: config, baseSigmas: [1], mu: nil) }
    }
}
