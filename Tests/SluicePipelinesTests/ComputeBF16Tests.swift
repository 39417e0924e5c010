import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluicePipelines
import SluiceTestSupport
import Testing

/// `--compute bf16` on the tiny Z-Image against diffusers computing in bf16
/// (tools/reference/make_zimage_bf16.py; "a red fox", seed 7, 4 steps, 64×64). torch's bf16 run rounds
/// every weight and activation to bf16; Sluice rounds only the linear layers' inputs (weights are
/// bf16 already), so the two differ by up to torch's own bf16-versus-f32 spread. Tolerance: within
/// twice that spread of torch's bf16 run (latents and image), while visibly not the f32 run.
@Suite(.enabled(if: KernelPath.hasAVX512BF16, "the CPU lacks AVX512-BF16"))
struct ComputeBF16Tests {
    static func maxDifference(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max() ?? .infinity }

    @Test func zImageInBF16IsWithinTorchsBF16Spread() throws {
        let model = Fixtures.directory + "/models/z-image-tiny"
        let pipe = try PipelineRegistry.shared.load(model: model, device: "cpu", compute: .bf16)
        let r = GenerationRequest(prompt: "a red fox", seed: 7, steps: 4, width: 64, height: 64, guidance: 0)
        let out = try pipe.generate(r)
        #expect(out.report.compute == "bf16")
        let bf = try Fixtures.file("zimage_bf16_reference.safetensors"), f32 = try Fixtures.file("zimage_reference.safetensors")
        for (what, ours, torchBF16, torchF32) in [
            ("latents", try out.latents.toFloats(), try bf.tensor("latents").toFloats(), try f32.tensor("latents_3").toFloats()),
            ("image", try out.image.toFloats(), try bf.tensor("image").toFloats(), try f32.tensor("image").toFloats()),
        ] {
            let spread = Self.maxDifference(torchBF16, torchF32)
            let fromBF16 = Self.maxDifference(ours, torchBF16), fromF32 = Self.maxDifference(ours, torchF32)
            #expect(spread > 0 && fromBF16 <= 2 * spread, "\(what): \(fromBF16) from torch's bf16 run; torch's bf16 is \(spread) from its f32")
            #expect(fromF32 > 1e-4, "\(what): bf16 compute gave the f32 result")
        }
        // f32 stays the default and refuses nothing; bf16 on Vulkan is refused naming --compute.
        #expect(try PipelineRegistry.shared.load(model: model, device: "cpu").generate(r).report.compute == "f32")
    }

    @Test func bf16ComputeIsRefusedOnVulkan() {
        do {
            _ = try ComputeDevice.select("vulkan", compute: .bf16)
            Issue.record("vulkan took bf16 compute")
        } catch let SluiceError.invalidParameter(p, _) { #expect(p == .compute) } catch { Issue.record("\(error)") }
    }
}
