import SluiceBackends
import SluiceCore
import SluiceModels
import SluiceTestSupport
import SluiceWeights
import Testing

/// FluxTransformer, which asks for diffusers' names, runs on a BFL-layout file through its presented
/// checkpoint exactly as on diffusers' file of the same weights: every name the model asks for is
/// presented and grouped. (FluxTransformerTests checks the model against diffusers; flux_bfl.py checks
/// the layout mapping against diffusers' converter.)
@Suite struct FluxSingleFileForwardTests {
    @Test(arguments: [("bfl_bf16.safetensors", "diffusers.safetensors"), ("bfl_fp8_comfy.safetensors", "diffusers_fp8.safetensors")])
    func transformerRunsOnThePresentedCheckpoint(name: String, reference: String) throws {
        let dir = Fixtures.directory + "/flux-single-file/"
        let f = try FluxSingleFile.open(path: dir + name)
        let model = FluxTransformer(config: try f.inferred.config(axesDimsRope: [2, 2, 4]))
        #expect(f.checkpoint.names.allSatisfy { model.group(of: $0) != nil })
        #expect(Set(f.checkpoint.names.compactMap(model.group(of:))) == Set(model.groupNames))

        var g = SplitMix(seed: 5)
        func random(_ shape: Shape) -> Tensor { Tensor((0..<shape.count).map { _ in g.uniform() }, shape: shape) }
        let state = FluxTransformer.State(latents: random([2 * 3, 16]), rows: 2, columns: 3, t: 0.6, guidance: 3.5,
                                          context: random([5, 32]), pooled: random([1, 24]))
        let backend = try CPUBackend()
        let presented = f.checkpoint, stored = try Checkpoint(path: dir + reference)
        let got = try model.forward(state, ModuleWeights { k throws(SluiceError) in try presented.tensor(k) }, backend).toFloats()
        let want = try model.forward(state, ModuleWeights { k throws(SluiceError) in try stored.tensor(k) }, backend).toFloats()
        #expect(got.count == 2 * 3 * 16)
        #expect(got == want)
    }
}
