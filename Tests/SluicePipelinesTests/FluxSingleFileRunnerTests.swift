import SluiceCore
import SluiceMemory
import SluiceModels
import SluicePipelines
import SluiceTestSupport
import SluiceWeights
import Testing

/// A BFL-layout FLUX file reaches a component runner as a plain `Checkpoint` under diffusers' names: the
/// runner's grouping and weight lookup see the model's module paths, nothing in it changed.
@Suite struct FluxSingleFileRunnerTests {
    @Test func componentRunnerReadsABFLFileUnderDiffusersNames() throws {
        let f = try FluxSingleFile.open(path: Fixtures.directory + "/flux-single-file/bfl_fp8_comfy.safetensors")
        let groups = ["embed", "transformer_blocks.0", "transformer_blocks.1", "single_transformer_blocks.0", "single_transformer_blocks.1", "final"]
        let runner = try ComponentRunner(name: "transformer", phase: .denoise, checkpoint: f.checkpoint, groupNames: groups) { key in
            for blocks in ["transformer_blocks.", "single_transformer_blocks."] where key.hasPrefix(blocks) {
                return blocks + key.dropFirst(blocks.count).prefix { $0 != "." }
            }
            return key.hasPrefix("norm_out.") || key.hasPrefix("proj_out.") ? "final" : "embed"
        }
        #expect(runner.keyPrefix == "")
        let exec = try runner.execGroups()
        #expect(exec.reduce(0) { $0 + $1.tensors.count } == f.checkpoint.names.count)
        #expect(exec[1].tensors.contains { $0.key == "transformer_blocks.0.attn.to_k.weight" })
        var seen: [Shape] = []
        _ = try runner.run(0) { i, weights, s in
            if groups[i] == "single_transformer_blocks.1" { seen.append(try weights.scoped(groups[i])("proj_mlp.weight").shape) }
            return s
        }
        #expect(seen == [[64, 16]])
    }
}
