import Foundation
import SluiceCore
import SluiceModels
import SluiceTestSupport
import SluiceWeights
import Testing

/// FLUX.1 single-file transformers in Black Forest Labs' layout read under diffusers' names, against the
/// same tiny random FluxTransformer2DModel saved by diffusers (tools/reference/flux_bfl.py, whose inverse
/// of diffusers' converter is checked there at FLUX.1's real width).
@Suite struct FluxSingleFileTests {
    static let dir = Fixtures.directory + "/flux-single-file"

    static func open(_ name: String) throws -> FluxSingleFile { try FluxSingleFile.open(path: dir + "/" + name) }

    /// The tiny config the fixtures were made with (each file's "config" metadata).
    static func tinyConfig() throws -> FluxConfig {
        let f = try Fixtures.file("flux-single-file/diffusers.safetensors")
        return try JSONDecoder().decode(FluxConfig.self, from: Data(f.metadata["config"]!.utf8))
    }

    static func bytes(_ t: Tensor) -> [UInt8] {
        let c = t.contiguous()
        return Array(UnsafeRawBufferPointer(start: c.rawPointer, count: c.byteCount))
    }

    /// A copy of a fixture with its keys renamed (a prefix added), some tensors left out and others added.
    static func rewritten(_ name: String, prefix: String = "", dropping drop: (String) -> Bool = { _ in false },
                          adding extra: [(String, Tensor)] = []) throws -> String {
        let f = try Fixtures.file("flux-single-file/" + name)
        let tensors = try f.names.filter { !drop($0) }.map { (prefix + $0, try f.tensor($0)) } + extra
        let path = NSTemporaryDirectory() + "sluice-flux-\(UUID().uuidString).safetensors"
        try SafetensorsWriter.write(tensors, metadata: f.metadata, to: path)
        return path
    }

    /// Every tensor diffusers has, from BFL's layout (bare and under ComfyUI's prefix) and from diffusers'
    /// own (bare and under "transformer."): same names, dtype, shape and bytes as diffusers' file.
    @Test(arguments: [
        ("bfl_bf16.safetensors", "", FluxCheckpointLayout.bfl),
        ("bfl_bf16.safetensors", "model.diffusion_model.", .bflComfyPrefix),
        ("diffusers.safetensors", "", .diffusers),
        ("diffusers.safetensors", "transformer.", .diffusersTransformerPrefix),
    ])
    func presentsDiffusersTensorsBitForBit(name: String, prefix: String, layout: FluxCheckpointLayout) throws {
        let reference = try Fixtures.file("flux-single-file/diffusers.safetensors")
        let f = try FluxSingleFile.open(path: prefix.isEmpty ? Self.dir + "/" + name : try Self.rewritten(name, prefix: prefix))
        #expect(f.layout == layout)
        #expect(f.unusedKeys.isEmpty)
        #expect(f.checkpoint.names.sorted() == reference.names.sorted())
        for key in reference.names {
            let want = try reference.tensor(key), got = try f.checkpoint.tensor(key)
            #expect(got.dtype == want.dtype && got.shape == want.shape, "\(key): \(got.dtype) \(got.shape)")
            let same = Self.bytes(got) == Self.bytes(want)  // a Bool, so a failure does not print every byte
            #expect(same, "\(key) differs")
            #expect(f.checkpoint.info(key)?.shape == want.shape, "\(key)")
        }
    }

    /// fp8 files keep their storage type and hold exactly the diffusers weights rounded through
    /// float8_e4m3fn: torch's rounding (the stored reference) and Sluice's own conversion of the bf16 ones.
    @Test(arguments: ["bfl_fp8.safetensors", "bfl_fp8_comfy.safetensors"])
    func fp8FilesGiveTheRoundedWeights(name: String) throws {
        let torchRounded = try Fixtures.file("flux-single-file/diffusers_fp8.safetensors")
        let bf16 = try Fixtures.file("flux-single-file/diffusers.safetensors")
        let f = try Self.open(name)
        #expect(f.layout == (name.contains("comfy") ? .bflComfyPrefix : .bfl))
        #expect(f.checkpoint.names.sorted() == torchRounded.names.sorted())
        for key in torchRounded.names {
            let got = try f.checkpoint.tensor(key)
            #expect(got.dtype == .f8e4m3fn, "\(key)")
            let asTorch = Self.bytes(got) == Self.bytes(try torchRounded.tensor(key))
            let asSluice = Self.bytes(got) == Self.bytes(try bf16.tensor(key).converted(to: .f8e4m3fn))
            #expect(asTorch, "\(key) is not torch's e4m3fn rounding")
            #expect(asSluice, "\(key) is not Sluice's e4m3fn rounding")
        }
    }

    /// q, k, v (and the single blocks' MLP input) cut from BFL's fused projections are views into the
    /// mapped file at their rows' bytes, not copies; norm_out.linear (halves swapped) is a copy.
    @Test(arguments: ["bfl_bf16.safetensors", "bfl_fp8_comfy.safetensors"])
    func fusedProjectionsAreViewsIntoTheMapping(name: String) throws {
        let f = try Self.open(name)
        let file = f.file
        var views = 0
        for key in f.checkpoint.names {
            guard let recipe = f.checkpoint.recipe(for: key), case .rows(let rows) = recipe.form else { continue }
            let t = try f.checkpoint.tensor(key)
            let stored = try #require(file.info(recipe.source))
            let rowBytes = stored.dataRange.count / stored.shape[0]
            let start = stored.dataRange.lowerBound + rows.lowerBound * rowBytes
            #expect(t.storage.mapping === file.mapping, "\(key) is not in the mapping")
            let offset: Int = file.header.dataStart + start
            #expect(t.address == file.mapping.baseAddress + offset, "\(key) is not at its rows' bytes")
            #expect(t.isContiguous && t.byteCount == rows.count * rowBytes, "\(key)")
            // The view spans these rows only (releasing its pages leaves the other rows' alone).
            #expect(t.storage.byteCount == t.byteCount && t.offset == 0, "\(key)")
            #expect(f.checkpoint.info(key)?.dataRange == start..<(start + t.byteCount), "\(key)")
            views += 1
        }
        // 2 double blocks × 2 streams × q, k, v + 2 single blocks × q, k, v, mlp; weights and biases.
        #expect(views == (2 * 2 * 3 + 2 * 4) * 2)
        #expect(f.checkpoint.recipe(for: "single_transformer_blocks.1.proj_mlp.weight")?.form == .rows(48..<112))
        #expect(f.checkpoint.recipe(for: "norm_out.linear.weight")?.form == .halvesSwapped)
        #expect(try f.checkpoint.tensor("norm_out.linear.weight").storage.mapping == nil)
        #expect(try f.checkpoint.tensor("x_embedder.weight").storage.mapping === file.mapping)
    }

    /// The shapes read from every layout are the tiny config's; its own check passes.
    @Test(arguments: ["diffusers.safetensors", "bfl_bf16.safetensors", "bfl_fp8.safetensors", "bfl_fp8_comfy.safetensors"])
    func infersTheTinyConfig(name: String) throws {
        let tiny = try Self.tinyConfig()
        let f = try Self.open(name)
        #expect(try f.inferred.config(axesDimsRope: tiny.axesDimsRope) == tiny)
        #expect(f.inferred == FluxShapes(tiny))
        #expect(f.inferred.numAttentionHeads == 2 && f.inferred.mlpRatio == 4 && f.inferred.guidanceEmbeds)
        try f.check(against: tiny)
        // RoPE's axes are in no weight: only FLUX.1's 128-wide heads imply them.
        #expect(throws: SluiceError.self) { try f.inferred.config() }
    }

    /// schnell: no guidance embedder, so none is presented, and a dev config names the first missing tensor.
    @Test func schnellHasNoGuidanceEmbedder() throws {
        let f = try FluxSingleFile.open(path: try Self.rewritten("bfl_fp8.safetensors", dropping: { $0.hasPrefix("guidance_in.") }))
        #expect(!f.inferred.guidanceEmbeds)
        #expect(!f.checkpoint.names.contains { $0.contains("guidance") })
        var schnell = try Self.tinyConfig()
        schnell.guidanceEmbeds = false
        try f.check(against: schnell)
        let dev = try Self.tinyConfig()
        let error = Self.failure { () throws(SluiceError) in try f.check(against: dev) }
        #expect(error?.tensor == "time_text_embed.guidance_embedder.linear_1.weight")
        #expect(error?.reason.contains("'guidance_in.in_layer.weight'") == true, "\(String(describing: error))")
    }

    /// Checking against a config the file does not hold names the first tensor at fault.
    @Test func checkAgainstAnotherConfigNamesTheTensor() throws {
        let f = try Self.open("bfl_fp8_comfy.safetensors")
        var deeper = try Self.tinyConfig()
        deeper.numSingleLayers = 3
        var e = Self.failure { () throws(SluiceError) in try f.check(against: deeper) }
        #expect(e?.tensor == "single_transformer_blocks.2.norm.linear.weight")
        #expect(e?.reason.contains("'model.diffusion_model.single_blocks.2.modulation.lin.weight'") == true)
        #expect(e?.reason.contains("single block 2 is absent") == true, "\(String(describing: e))")

        var shallower = try Self.tinyConfig()
        shallower.numSingleLayers = 1
        e = Self.failure { () throws(SluiceError) in try f.check(against: shallower) }
        #expect(e?.tensor == "single_transformer_blocks.1.norm.linear.weight", "\(String(describing: e))")

        var wider = try Self.tinyConfig()
        wider.jointAttentionDim = 40
        e = Self.failure { () throws(SluiceError) in try f.check(against: wider) }
        #expect(e?.tensor == "context_embedder.weight")
        #expect(e?.reason.contains("'model.diffusion_model.txt_in.weight' has shape [16, 32]; [16, 40] expected") == true, "\(String(describing: e))")
    }

    /// Files that are not a readable FLUX transformer fail on opening, naming the offending tensor (the
    /// diffusers name, and the stored one) or, for an unknown layout, what the file holds.
    @Test(arguments: [
        ("hostile_unknown.safetensors", nil, ["4 tensors", "'encoder.layers.0.attention.wk.weight'", "'lm_head.weight'", "double_blocks.0.img_attn.qkv.weight"]),
        ("hostile_missing_single.safetensors", "single_transformer_blocks.0.norm.linear.weight",
         ["'single_blocks.0.modulation.lin.weight'", "single block 0 is absent"]),
        ("hostile_wrong_shape.safetensors", "transformer_blocks.1.attn.add_q_proj.weight",
         ["'double_blocks.1.txt_attn.qkv.weight' has shape [20, 8]; [24, 8] expected"]),
        ("hostile_scaled_fp8.safetensors", "model.diffusion_model.double_blocks.0.img_attn.proj.scale_weight",
         ["\"scaled fp8\"", "not supported yet"]),
    ] as [(String, String?, [String])])
    func hostileFilesAreRefusedNamingTheKey(name: String, tensor: String?, phrases: [String]) throws {
        let error = Self.failure { () throws(SluiceError) in _ = try FluxSingleFile.open(path: Self.dir + "/" + name) }
        #expect(error?.file == Self.dir + "/" + name)
        #expect(error?.tensor == tensor, "\(String(describing: error))")
        for phrase in phrases { #expect(error?.reason.contains(phrase) == true, "\(name): '\(phrase)' not in \(String(describing: error))") }
    }

    /// An all-in-one file's other components (here a VAE tensor) are left out and listed.
    @Test func otherComponentsAreListedAsUnused() throws {
        let vae = "first_stage_model.decoder.conv_in.weight"
        let f = try FluxSingleFile.open(path: try Self.rewritten("bfl_fp8.safetensors", prefix: "model.diffusion_model.",
                                                                 adding: [(vae, Tensor([1, 2], shape: [2]))]))
        #expect(f.layout == .bflComfyPrefix)
        #expect(f.unusedKeys == [vae])
        #expect(!f.checkpoint.names.contains(vae))
    }

    /// A block missing in the middle is named even though the depth is read from the highest index.
    @Test func aMissingDoubleBlockIsNamed() throws {
        let path = try Self.rewritten("bfl_bf16.safetensors", dropping: { $0.hasPrefix("double_blocks.0.") })
        let e = Self.failure { () throws(SluiceError) in _ = try FluxSingleFile.open(path: path) }
        #expect(e?.tensor == "transformer_blocks.0.norm1.linear.weight")
        #expect(e?.reason.contains("double block 0 is absent") == true, "\(String(describing: e))")
    }

    /// An invalidCheckpoint error's parts, or nil (recorded as an issue) when `body` does not fail so.
    static func failure(_ body: () throws(SluiceError) -> Void) -> (file: String, tensor: String?, reason: String)? {
        do throws(SluiceError) {
            try body()
            Issue.record("accepted")
        } catch {
            if case .invalidCheckpoint(let file, let tensor, let reason) = error { return (file, tensor, reason) }
            Issue.record("\(error)")
        }
        return nil
    }
}
