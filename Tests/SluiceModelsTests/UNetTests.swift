import Foundation
import SluiceBackends
import SluiceCore
import SluiceModels
import SluiceTestSupport
import SluiceWeights
import Testing

/// Stable Diffusion's UNet against diffusers 0.42.1 (tools/reference/make_unet_reference.py): the tiny
/// SD1.5 and SDXL UNets of tools/reference/make_sd_tiny.py (widths 16/24/32, 2 layers per block, bf16
/// weights; SD1.5 with conv projections, SDXL with linear ones, per-level heads, two transformer
/// layers at the deepest level and the text_time embedding) called directly on an 8×12 sample
/// (every level: 8×12 → 4×6 → 2×3), t = 637, 7 context tokens.
@Suite struct UNetTests {
    static func folder(_ variant: String) -> String { Fixtures.directory + "/models/\(variant)-tiny/unet" }

    static func configJSON(_ variant: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: folder(variant) + "/config.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    static func load(_ variant: String) throws -> (UNet2DCondition, Checkpoint) {
        let config = try JSONDecoder().decode(UNetConfig.self, from: Data(contentsOf: URL(fileURLWithPath: folder(variant) + "/config.json")))
        return (UNet2DCondition(config: config), try Checkpoint(path: folder(variant) + "/diffusion_pytorch_model.safetensors"))
    }

    static func weights(_ ckpt: Checkpoint) -> ModuleWeights { ModuleWeights { k throws(SluiceError) in try ckpt.tensor(k) } }

    static func state(_ variant: String) throws -> UNet2DCondition.State {
        let ref = try Fixtures.file("unet_reference.safetensors")
        let xl = variant == "sdxl"
        return UNet2DCondition.State(sample: try ref.tensor("sample"), timestep: try ref.tensor("timestep").toFloats()[0],
                                     context: try ref.tensor("\(variant)_context"),
                                     textEmbeds: xl ? try ref.tensor("sdxl_text_embeds") : nil, timeIds: xl ? try ref.tensor("sdxl_time_ids") : nil)
    }

    /// Tolerance 1e-5 abs + 1e-5 rel on the output (values up to ~2; measured 1.5e-6), 5e-5 abs on the
    /// mid block's (up to ~10; measured 9e-6): f32 against torch's f64 through ~35 convolutions, 24 group
    /// norms and 8–11 transformer blocks, whose sums torch orders differently. The sinusoid of t = 637 is
    /// computed in f32 on both sides, as torch computes it even for an f64 model.
    @Test(arguments: ["sd15", "sdxl"])
    func tinyUNetMatchesDiffusers(variant: String) throws {
        try Self.check(variant, on: try CPUBackend())
    }

    /// The same on a Vulkan device (lavapipe in CI): every op of the UNet (convolutions with stride 2,
    /// group and layer norms, exact GELU, upsampling, concatenation) as a kernel, within the same
    /// tolerances of diffusers, and within 2e-5 abs + 1e-5 rel of the CPU (measured 2.4e-6: the device
    /// orders its sums unlike the CPU, and its exp and erf are its own).
    @Test(.enabled(if: Vulkan.unavailableReason == nil && ((try? Vulkan.devices().count) ?? 0) > 0, "no Vulkan device"),
          arguments: ["sd15", "sdxl"])
    func vulkanUNetMatchesCPU(variant: String) throws {
        let vulkan = try ComputeDevice.select("vulkan").backend
        try Self.check(variant, on: vulkan)
        let (model, ckpt) = try Self.load(variant)
        let onCPU = try model.forward(try Self.state(variant), Self.weights(ckpt), CPUBackend())
        let onDevice = try model.forward(try Self.state(variant), Self.weights(ckpt), vulkan)
        let c = compare(try onDevice.toFloats(), try onCPU.toFloats(), atol: 2e-5, rtol: 1e-5)
        #expect(c.ok, "Vulkan against CPU: \(c)")
    }

    static func check(_ variant: String, on backend: any Backend) throws {
        let (model, ckpt) = try load(variant)
        let ref = try Fixtures.file("unet_reference.safetensors")
        var s = try state(variant)
        // Group by group to mid_block, to check the bottom of the U on its own (the down path).
        let mid = model.groupNames.firstIndex(of: "mid_block")!
        for i in 0...mid { s = try model.run(group: i, weights(ckpt), s, backend) }
        let m = compare(try s.hidden!.toFloats(), try ref.tensor("\(variant)_mid").toFloats(), atol: 5e-5, rtol: 1e-5)
        #expect(m.ok, "mid_block: \(m)")
        let out = try model.forward(try state(variant), weights(ckpt), backend)
        #expect(out.shape == [1, 4, 8, 12])
        let c = compare(try out.toFloats(), try ref.tensor("\(variant)_out").toFloats(), atol: 1e-5, rtol: 1e-5)
        #expect(c.ok, "\(c)")
    }

    /// diffusers' other sinusoid convention (flip_sin_to_cos false: sin half first; freq_shift 1:
    /// frequencies over half − 1), on SD1.5's weights with the config overridden. Same tolerance.
    @Test func otherSinusoidConventionMatchesDiffusers() throws {
        var json = try Self.configJSON("sd15")
        json["flip_sin_to_cos"] = false
        json["freq_shift"] = 1
        let model = UNet2DCondition(config: try JSONDecoder().decode(UNetConfig.self, from: JSONSerialization.data(withJSONObject: json)))
        let (_, ckpt) = try Self.load("sd15")
        let out = try model.forward(try Self.state("sd15"), Self.weights(ckpt), CPUBackend())
        let ref = try Fixtures.file("unet_reference.safetensors")
        let c = compare(try out.toFloats(), try ref.tensor("sd15_sin_shift1_out").toFloats(), atol: 1e-5, rtol: 1e-5)
        #expect(c.ok, "\(c)")
        // And the convention matters: the default one's output is not this.
        #expect(!compare(try out.toFloats(), try ref.tensor("sd15_out").toFloats(), atol: 1e-3, rtol: 0).ok)
    }

    /// Run group by group, each group seeing only its own tensors (as a streamed group does): the same
    /// output as `forward`, bit for bit; and a group asking for another group's tensor would fail here.
    @Test(arguments: ["sd15", "sdxl"])
    func groupByGroupEqualsForward(variant: String) throws {
        let (model, ckpt) = try Self.load(variant)
        let backend = try CPUBackend()
        var s = try Self.state(variant)
        for (i, name) in model.groupNames.enumerated() {
            let w = ModuleWeights { k throws(SluiceError) in
                guard model.group(of: k) == name else { throw .missingTensor(key: k, file: "group \(name)") }
                return try ckpt.tensor(k)
            }
            s = try model.run(group: i, w, s, backend)
        }
        let whole = try model.forward(try Self.state(variant), Self.weights(ckpt), backend)
        #expect(try s.output!.toFloats() == whole.toFloats())
    }

    /// Every tensor of the checkpoint belongs to a group, and every group has tensors; keys this
    /// architecture does not have belong to none.
    @Test func groupsCoverTheCheckpoint() throws {
        for variant in ["sd15", "sdxl"] {
            let (model, ckpt) = try Self.load(variant)
            let unmapped = ckpt.names.filter { model.group(of: $0) == nil }
            #expect(unmapped.isEmpty, "\(variant): \(unmapped.prefix(5))")
            #expect(Set(ckpt.names.compactMap(model.group(of:))) == Set(model.groupNames), "\(variant)")
            #expect(model.groupNames.count == 1 + 3 * 2 + 1 + 3 * 3 + 1)
        }
        let (sd15, _) = try Self.load("sd15"), (sdxl, _) = try Self.load("sdxl")
        #expect(sd15.group(of: "down_blocks.1.downsamplers.0.conv.weight") == "down_blocks.1.1")
        #expect(sd15.group(of: "up_blocks.1.upsamplers.0.conv.bias") == "up_blocks.1.2")
        #expect(sd15.group(of: "up_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k.weight") == "up_blocks.2.1")
        #expect(sdxl.group(of: "up_blocks.0.attentions.2.transformer_blocks.1.ff.net.2.weight") == "up_blocks.0.2")
        #expect(sdxl.group(of: "add_embedding.linear_2.bias") == "embedders")
        for key in ["add_embedding.linear_1.weight",                                // no text_time in SD1.5
                    "down_blocks.2.attentions.0.norm.weight",                      // DownBlock2D
                    "down_blocks.2.downsamplers.0.conv.weight",                    // the deepest level
                    "up_blocks.2.upsamplers.0.conv.weight",                        // the final up block
                    "down_blocks.0.resnets.2.conv1.weight", "up_blocks.1.resnets.3.conv1.weight",
                    "down_blocks.3.resnets.0.conv1.weight", "mid_block.resnets.2.conv1.weight",
                    "mid_block.attentions.1.norm.weight",
                    "down_blocks.0.attentions.0.transformer_blocks.1.norm1.weight", // one layer per block
                    "class_embedding.linear_1.weight", "conv_in", "foo.weight"] {
            #expect(sd15.group(of: key) == nil, "\(key)")
        }
        #expect(sdxl.group(of: "down_blocks.0.attentions.0.norm.weight") == nil)
        #expect(sdxl.group(of: "mid_block.attentions.0.transformer_blocks.1.norm1.weight") == "mid_block")
        #expect(sdxl.group(of: "mid_block.attentions.0.transformer_blocks.2.norm1.weight") == nil)
    }

    /// The estimate covers what the CPU backend actually allocates in one call, without being loose by
    /// more than 4×; at the fixture's size and at twice it (a zero sample: the sizes are what count).
    @Test(arguments: ["sd15", "sdxl"], [1, 2])
    func activationEstimateCoversTheMeasuredPeak(variant: String, scale: Int) throws {
        let (model, ckpt) = try Self.load(variant)
        let counter = AllocationCounter()
        let backend = try CPUBackend(allocations: counter)
        var s = try Self.state(variant)
        if scale > 1 { s.sample = Tensor(zeros: [1, 4, 8 * scale, 12 * scale]) }
        let before = counter.currentBytes
        _ = try model.forward(s, Self.weights(ckpt), backend)
        let measured = counter.peakBytes - before
        let estimate = UNet2DCondition.activationBytes(config: model.config, height: 8 * scale, width: 12 * scale)
        #expect(measured > 0 && measured <= estimate && estimate <= 4 * measured, "measured \(measured), estimate \(estimate)")
    }

    static func decodeError(_ json: [String: Any]) -> String? {
        do {
            _ = try JSONDecoder().decode(UNetConfig.self, from: JSONSerialization.data(withJSONObject: json))
            return nil
        } catch { return "\(error)" }
    }

    /// Unsupported or inconsistent configs fail at decoding, naming the field.
    @Test func badConfigNamesTheField() throws {
        let cases: [(String, String, Any)] = [
            ("sd15", "down_block_types", ["CrossAttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D"]),
            ("sd15", "up_block_types", ["UpBlock2D", "CrossAttnUpBlock2D"]),
            ("sd15", "mid_block_type", NSNull()),
            ("sd15", "class_embed_type", "timestep"),
            ("sd15", "addition_embed_type", "text"),
            ("sd15", "attention_head_dim", [2, 2]),
            ("sd15", "attention_head_dim", 5),                        // 5 heads do not divide 16 channels
            ("sd15", "norm_num_groups", 5),
            ("sd15", "transformer_layers_per_block", [[1], [1], [2]]),
            ("sd15", "resnet_time_scale_shift", "scale_shift"),
            ("sd15", "time_embedding_type", "fourier"),
            ("sd15", "only_cross_attention", true),
            ("sd15", "cross_attention_dim", "wide"),
            ("sdxl", "addition_time_embed_dim", NSNull()),
        ]
        for (variant, field, value) in cases {
            var json = try Self.configJSON(variant)
            json[field] = value
            let error = Self.decodeError(json)
            #expect(error?.contains(field) == true, "\(field) = \(value): \(error ?? "no error")")
        }
        for variant in ["sd15", "sdxl"] { #expect(Self.decodeError(try Self.configJSON(variant)) == nil) }
    }

    /// The configs as decoded: diffusers' head-count quirk and the per-level lists.
    @Test func configsDecodeAsDiffusersReadsThem() throws {
        let (sd15, _) = try Self.load("sd15"), (sdxl, _) = try Self.load("sdxl")
        #expect(sd15.config.attentionHeads == [2, 2, 2] && sd15.config.transformerLayers == [1, 1, 1])
        #expect(sd15.config.downHasAttention == [true, true, false] && sd15.config.upHasAttention == [false, true, true])
        #expect(!sd15.config.useLinearProjection && !sd15.config.textTimeConditioning && sd15.config.timeEmbedDim == 64)
        #expect(sdxl.config.attentionHeads == [2, 2, 4] && sdxl.config.transformerLayers == [1, 1, 2])
        #expect(sdxl.config.textTimeConditioning && sdxl.config.additionTimeEmbedDim == 8 && sdxl.config.projectionClassEmbeddingsInputDim == 64)
        // num_attention_heads, when given, wins over attention_head_dim.
        var json = try Self.configJSON("sd15")
        json["num_attention_heads"] = [4, 4, 8]
        let c = try JSONDecoder().decode(UNetConfig.self, from: JSONSerialization.data(withJSONObject: json))
        #expect(c.attentionHeads == [4, 4, 8])
    }

    /// The real models' configs (runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-xl-base-1.0
    /// unet/config.json, abridged to the fields that matter): heads of 40 and 64, SDXL's 10 transformer
    /// layers at the deepest level; the activation estimate at their native sizes is in the hundreds of MB.
    @Test func realConfigsDecode() throws {
        let sd15 = try JSONDecoder().decode(UNetConfig.self, from: Data("""
            {"act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
             "cross_attention_dim": 768, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
             "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
             "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
            """.utf8))
        #expect(sd15.attentionHeads == [8, 8, 8, 8] && sd15.timeEmbedDim == 1280 && !sd15.useLinearProjection)
        let sdxl = try JSONDecoder().decode(UNetConfig.self, from: Data("""
            {"addition_embed_type": "text_time", "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
             "block_out_channels": [320, 640, 1280], "class_embed_type": null, "cross_attention_dim": 2048,
             "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], "encoder_hid_dim": null,
             "layers_per_block": 2, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_num_groups": 32, "num_attention_heads": null,
             "only_cross_attention": false, "projection_class_embeddings_input_dim": 2816, "resnet_out_scale_factor": 1.0,
             "time_embedding_dim": null, "transformer_layers_per_block": [1, 2, 10],
             "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "upcast_attention": null, "use_linear_projection": true}
            """.utf8))
        #expect(sdxl.attentionHeads == [5, 10, 20] && sdxl.transformerLayers == [1, 2, 10] && sdxl.textTimeConditioning)
        #expect(UNet2DCondition(config: sdxl).groupNames.count == 1 + 6 + 1 + 9 + 1)
        for (config, side) in [(sd15, 64), (sdxl, 128)] {
            let mb = UNet2DCondition.activationBytes(config: config, height: side, width: side) >> 20
            #expect(mb > 100 && mb < 1000, "\(mb) MB")
        }
    }

    /// Inputs of the wrong shape fail before any compute, naming the tensor.
    @Test func wrongInputsNameTheTensor() throws {
        let (sd15, c15) = try Self.load("sd15"), (sdxl, cxl) = try Self.load("sdxl")
        let backend = try CPUBackend()
        let good15 = try Self.state("sd15"), goodXL = try Self.state("sdxl")
        func message(_ model: UNet2DCondition, _ ckpt: Checkpoint, _ s: UNet2DCondition.State) -> String? {
            do { _ = try model.forward(s, Self.weights(ckpt), backend); return nil } catch { return "\(error)" }
        }
        var s = good15
        s.sample = Tensor(zeros: [1, 4, 8, 10])                       // 10 is not a multiple of 4
        #expect(message(sd15, c15, s)?.contains("sample") == true)
        s.sample = Tensor(zeros: [1, 3, 8, 12])
        #expect(message(sd15, c15, s)?.contains("sample") == true)
        s = good15
        s.context = Tensor(zeros: [7, 25])
        #expect(message(sd15, c15, s)?.contains("encoder_hidden_states") == true)
        s = good15
        s.textEmbeds = Tensor(zeros: [1, 16])
        #expect(message(sd15, c15, s)?.contains("text_embeds") == true)
        s = goodXL
        s.textEmbeds = nil
        #expect(message(sdxl, cxl, s)?.contains("text_embeds") == true)
        s = goodXL
        s.textEmbeds = Tensor(zeros: [1, 15])
        #expect(message(sdxl, cxl, s)?.contains("text_embeds") == true)
        s = goodXL
        s.timeIds = Tensor(zeros: [5])
        #expect(message(sdxl, cxl, s)?.contains("time_ids") == true)
    }
}
