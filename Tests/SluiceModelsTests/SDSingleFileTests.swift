import Foundation
import SluiceCore
import SluiceMemory
import SluiceModels
import SluiceTestSupport
import SluiceWeights
import Testing

/// Stable Diffusion 1.5 and SDXL single files in the original (LDM) layout, read under diffusers' names,
/// against the tiny diffusers folders they were written from (tools/reference/sd_single_file.py, whose
/// files diffusers' own from_single_file reads back to the same tensors).
@Suite struct SDSingleFileTests {
    static let dir = Fixtures.directory + "/sd-single-file"
    static let sd15Folder = Fixtures.directory + "/models/sd15-tiny"
    static let sdxlFolder = Fixtures.directory + "/models/sdxl-tiny"

    static func bytes(_ t: Tensor) -> [UInt8] {
        let c = t.contiguous()
        return Array(UnsafeRawBufferPointer(start: c.rawPointer, count: c.byteCount))
    }

    /// A copy of a fixture with its tensors renamed, some left out, some replaced and others added.
    static func rewritten(_ name: String, renaming rename: (String) -> String = { $0 }, dropping drop: (String) -> Bool = { _ in false },
                          replacing replace: [String: Tensor] = [:], adding extra: [(String, Tensor)] = []) throws -> String {
        let f = try Fixtures.file("sd-single-file/" + name)
        let tensors = try f.names.filter { !drop($0) }.map { (rename($0), try replace[$0] ?? f.tensor($0)) } + extra
        let path = NSTemporaryDirectory() + "sluice-sd-\(UUID().uuidString).safetensors"
        try SafetensorsWriter.write(tensors, metadata: f.metadata, to: path)
        return path
    }

    /// Every tensor of every component the folder has, from the single file: same names, dtype, shape
    /// and bytes as the folder's own safetensors.
    @Test(arguments: [
        ("sd15_bf16.safetensors", SDSingleFileTests.sd15Folder, [SingleFileComponent.unet, .vae, .textEncoder]),
        ("sdxl_bf16.safetensors", SDSingleFileTests.sdxlFolder, [.unet, .vae, .textEncoder, .textEncoder2]),
    ])
    func presentsTheFolderTensorsBitForBit(name: String, folder: String, components: [SingleFileComponent]) throws {
        let f = try SDSingleFile.open(path: Self.dir + "/" + name)
        #expect(f.contents.components == components)
        #expect(f.otherKeys.isEmpty)
        let presented = try f.components(configFolder: folder)
        #expect(presented.keys.sorted() == components)
        for component in components {
            let reference = try Checkpoint(path: folder + "/" + component.rawValue)
            let got = try #require(presented[component]).checkpoint
            #expect(got.names.sorted() == reference.names.sorted(), "\(component)")
            for key in reference.names {
                let want = try reference.tensor(key), have = try got.tensor(key)
                #expect(have.dtype == want.dtype && have.shape == want.shape, "\(component) \(key): \(have.dtype) \(have.shape)")
                let same = Self.bytes(have) == Self.bytes(want)  // a Bool, so a failure does not print every byte
                #expect(same, "\(component) \(key) differs")
                #expect(got.info(key)?.shape == want.shape, "\(component) \(key)")
            }
        }
    }

    /// The family and the components are read from the names alone.
    @Test func detectsFamiliesAndComponents() throws {
        func contents(_ path: String) throws -> SingleFileContents {
            let f = try SafetensorsFile(path: path)
            return SingleFileContents.detect(names: f.names, shape: { f.info($0)?.shape })
        }
        let sd15 = try contents(Self.dir + "/sd15_bf16.safetensors")
        #expect(sd15.family == .sd15 && sd15.components == [.unet, .vae, .textEncoder] && sd15.sampleKeys.isEmpty)
        #expect(sd15.summary == "sd15: unet, vae, text_encoder")
        let sdxl = try contents(Self.dir + "/sdxl_bf16.safetensors")
        #expect(sdxl.family == .sdxl && sdxl.components == [.unet, .vae, .textEncoder, .textEncoder2])
        let textOnly = try contents(Self.dir + "/sd15_f16_text_only.safetensors")
        #expect(textOnly.family == .sd15 && textOnly.components == [.textEncoder])
        let flux = try contents(Fixtures.directory + "/flux-single-file/bfl_fp8_comfy.safetensors")
        #expect(flux.family == .flux && flux.components == [.transformer] && flux.summary == "flux: transformer")
        let unknown = try contents(Fixtures.directory + "/flux-single-file/hostile_unknown.safetensors")
        #expect(unknown.family == .unknown && unknown.components.isEmpty && unknown.tensorCount == 4)
        #expect(unknown.sampleKeys.first == "encoder.layers.0.attention.wk.weight")
        #expect(unknown.summary.hasPrefix("unknown layout: 4 tensors, e.g. 'encoder.layers.0.attention.wk.weight'"), "\(unknown.summary)")

        // ComfyUI / A1111 variants without some components, and the families not read yet.
        let sdxlFile = try SafetensorsFile(path: Self.dir + "/sdxl_bf16.safetensors")
        let sd15File = try SafetensorsFile(path: Self.dir + "/sd15_bf16.safetensors")
        func detect(_ names: [String], shapes file: SafetensorsFile? = nil) -> SingleFileContents {
            SingleFileContents.detect(names: names, shape: { file?.info($0)?.shape })
        }
        let unetOnly = { (file: SafetensorsFile) in file.names.filter { $0.hasPrefix("model.diffusion_model.") } }
        #expect(detect(unetOnly(sdxlFile), shapes: sdxlFile).family == .sdxl)  // label_emb
        let sdxlNoVAE = detect(sdxlFile.names.filter { !$0.hasPrefix("first_stage_model.") })
        #expect(sdxlNoVAE.family == .sdxl && sdxlNoVAE.components == [.unet, .textEncoder, .textEncoder2])
        #expect(detect(unetOnly(sd15File), shapes: sd15File).family == .sd15)  // proj_in a 1×1 convolution
        let sd2 = detect(["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.model.token_embedding.weight"])
        #expect(sd2.family == .sd2 && !sd2.family.isSupported && sd2.summary == "sd2 (unsupported): unet, text_encoder")
        let refiner = detect(["model.diffusion_model.label_emb.0.0.weight", "conditioner.embedders.0.model.text_projection"])
        #expect(refiner.family == .sdxlRefiner && refiner.summary == "sdxl-refiner (unsupported): unet, text_encoder_2")
        let vaeOnly = detect(sd15File.names.filter { $0.hasPrefix("first_stage_model.") })
        #expect(vaeOnly.family == .unknown && vaeOnly.components == [.vae] && vaeOnly.summary == "unknown family: vae")
    }

    /// A file carrying only the text encoder, in f16: the folder's bf16 weights rounded to f16, kept as f16.
    @Test func f16FileWithoutUNetOrVAE() throws {
        let f = try SDSingleFile.open(path: Self.dir + "/sd15_f16_text_only.safetensors")
        #expect(f.family == .sd15 && f.contents.components == [.textEncoder])
        let presented = try f.components(configFolder: Self.sd15Folder)
        #expect(presented.keys.sorted() == [.textEncoder])
        let te = try #require(presented[.textEncoder])
        #expect(te.ignoredKeys == ["cond_stage_model.transformer.text_model.embeddings.position_ids"])
        let reference = try Checkpoint(path: Self.sd15Folder + "/text_encoder")
        #expect(te.checkpoint.names.sorted() == reference.names.sorted())
        for key in reference.names {
            let got = try te.checkpoint.tensor(key)
            #expect(got.dtype == .f16, "\(key)")
            let same = Self.bytes(got) == Self.bytes(try reference.tensor(key).converted(to: .f16))
            #expect(same, "\(key) is not the folder's weights in f16")
        }
        let e = Self.failure { () throws(SluiceError) in _ = try f.component(.unet, configFolder: Self.sd15Folder) }
        #expect(e?.tensor == nil && e?.reason.contains("carries no unet (no 'model.diffusion_model.…' tensors); it holds text_encoder") == true,
                "\(String(describing: e))")
        let e2 = Self.failure { () throws(SluiceError) in _ = try f.component(.textEncoder2, configFolder: Self.sdxlFolder) }
        #expect(e2?.reason == "sd15 has no text_encoder_2", "\(String(describing: e2))")
    }

    /// OpenCLIP's q, k, v are views of in_proj's rows and the VAE's mid-attention weights views of the
    /// stored 1×1 convolutions (both in the mapping, no copy); text_projection is transposed, a copy.
    @Test func viewsAndCopies() throws {
        let f = try SDSingleFile.open(path: Self.dir + "/sdxl_bf16.safetensors")
        let file = f.file
        let te2 = try f.component(.textEncoder2, configFolder: Self.sdxlFolder).checkpoint
        let k = try te2.tensor("text_model.encoder.layers.1.self_attn.k_proj.weight")
        let fused = try #require(file.info("conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight"))
        #expect(fused.shape == [120, 40])
        #expect(te2.recipe(for: "text_model.encoder.layers.1.self_attn.k_proj.weight")?.form == .rows(40..<80))
        #expect(k.storage.mapping === file.mapping)
        let kAt: Int = file.header.dataStart + fused.dataRange.lowerBound + 40 * 40 * 2
        #expect(k.address == file.mapping.baseAddress + kAt)
        #expect(te2.recipe(for: "text_projection.weight") == .transposed("conditioner.embedders.1.model.text_projection"))
        let projection = try te2.tensor("text_projection.weight")
        #expect(projection.shape == [16, 40] && projection.storage.mapping == nil)

        let vae = try f.component(.vae, configFolder: Self.sdxlFolder).checkpoint
        let q = try vae.tensor("decoder.mid_block.attentions.0.to_q.weight")
        #expect(vae.recipe(for: "decoder.mid_block.attentions.0.to_q.weight")?.form == .reshaped([32, 32]))
        let stored = try #require(file.info("first_stage_model.decoder.mid.attn_1.q.weight"))
        #expect(stored.shape == [32, 32, 1, 1] && q.shape == [32, 32])
        #expect(q.storage.mapping === file.mapping)
        let qAt: Int = file.header.dataStart + stored.dataRange.lowerBound
        #expect(q.address == file.mapping.baseAddress + qAt)
        #expect(try vae.tensor("decoder.conv_in.weight").storage.mapping === file.mapping)
    }

    /// Variants real files come in: CLIP-L without transformers' "text_model." level (older
    /// transformers), the VAE's attention already in the linear's shape, schedule buffers and EMA
    /// weights beside the components.
    @Test func layoutVariantsGiveTheSameTensors() throws {
        let base = try Fixtures.file("sd-single-file/sd15_bf16.safetensors")
        var flat: [String: Tensor] = [:]
        for n in base.names where n.hasPrefix("first_stage_model.") && n.contains(".mid.attn_1.") && base.info(n)!.shape.rank == 4 {
            flat[n] = try base.tensor(n).reshaped(Shape(Array(base.info(n)!.shape.dims.prefix(2))))
        }
        let path = try Self.rewritten("sd15_bf16.safetensors", renaming: { $0.replacingOccurrences(of: "transformer.text_model.", with: "transformer.") },
                                      replacing: flat, adding: [("alphas_cumprod", Tensor([Float](repeating: 0.5, count: 10), shape: [10])),
                                                                ("model_ema.decay", Tensor([0.9999], shape: [1]))])
        let f = try SDSingleFile.open(path: path)
        #expect(f.otherKeys == ["alphas_cumprod", "model_ema.decay"])
        for component in [SingleFileComponent.textEncoder, .vae] {
            let got = try f.component(component, configFolder: Self.sd15Folder)
            let reference = try Checkpoint(path: Self.sd15Folder + "/" + component.rawValue)
            #expect(got.checkpoint.names.sorted() == reference.names.sorted())
            for key in reference.names {
                let same = Self.bytes(try got.checkpoint.tensor(key)) == Self.bytes(try reference.tensor(key))
                #expect(same, "\(component) \(key)")
                #expect(try got.checkpoint.tensor(key).shape == reference.tensor(key).shape, "\(key)")
            }
        }
        #expect(try f.component(.textEncoder, configFolder: Self.sd15Folder).ignoredKeys == ["cond_stage_model.transformer.embeddings.position_ids"])
    }

    /// Broken files and mismatched configs fail, naming the tensor (diffusers' name, and the stored one).
    @Test func hostileFilesNameTheKey() throws {
        // A tensor missing.
        var path = try Self.rewritten("sdxl_bf16.safetensors", dropping: { $0 == "model.diffusion_model.output_blocks.2.2.conv.weight" })
        var e = Self.failure { () throws(SluiceError) in _ = try SDSingleFile.open(path: path).component(.unet, configFolder: Self.sdxlFolder) }
        #expect(e?.file == path && e?.tensor == "up_blocks.0.upsamplers.0.conv.weight", "\(String(describing: e))")
        #expect(e?.reason == "missing (stored as 'model.diffusion_model.output_blocks.2.2.conv.weight' in the original layout)")

        // A fused projection 4 rows short.
        let fusedKey = "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight"
        let short = try Fixtures.file("sd-single-file/sdxl_bf16.safetensors").tensor(fusedKey).sliced(dim: 0, 0..<116).contiguous()
        path = try Self.rewritten("sdxl_bf16.safetensors", replacing: [fusedKey: short])
        e = Self.failure { () throws(SluiceError) in _ = try SDSingleFile.open(path: path).component(.textEncoder2, configFolder: Self.sdxlFolder) }
        #expect(e?.tensor == "text_model.encoder.layers.2.self_attn.q_proj.weight", "\(String(describing: e))")
        #expect(e?.reason == "stored as '\(fusedKey)' has shape [116, 40]; [120, 40] expected by text_encoder_2/config.json")

        // Integers where weights belong.
        let convKey = "first_stage_model.decoder.conv_in.weight"
        path = try Self.rewritten("sd15_bf16.safetensors", replacing: [convKey: Tensor(bytes: [UInt8](repeating: 0, count: 32 * 4 * 9 * 8), dtype: .i64, shape: [32, 4, 3, 3])])
        e = Self.failure { () throws(SluiceError) in _ = try SDSingleFile.open(path: path).component(.vae, configFolder: Self.sd15Folder) }
        #expect(e?.tensor == "decoder.conv_in.weight" && e?.reason.contains("has dtype I64; weights must be a float type") == true, "\(String(describing: e))")

        // A deeper UNet than the config describes: the first tensor beyond it is named.
        path = try Self.rewritten("sd15_bf16.safetensors", adding: [("model.diffusion_model.input_blocks.9.0.in_layers.0.weight", Tensor([1], shape: [1]))])
        e = Self.failure { () throws(SluiceError) in _ = try SDSingleFile.open(path: path).component(.unet, configFolder: Self.sd15Folder) }
        #expect(e?.tensor == "model.diffusion_model.input_blocks.9.0.in_layers.0.weight", "\(String(describing: e))")
        #expect(e?.reason.contains("not in the configured unet") == true)

        // SDXL's UNet read with SD1.5's config: the first tensor where they part.
        e = Self.failure { () throws(SluiceError) in _ = try SDSingleFile.open(path: Self.dir + "/sdxl_bf16.safetensors").component(.unet, configFolder: Self.sd15Folder) }
        #expect(e?.tensor == "down_blocks.0.attentions.0.norm.weight", "\(String(describing: e))")
        #expect(e?.reason.contains("missing (stored as 'model.diffusion_model.input_blocks.1.1.norm.weight'") == true)
    }

    /// Files that are no SD1.5 or SDXL checkpoint are refused on opening, saying what they hold.
    @Test(arguments: [
        (Fixtures.directory + "/flux-single-file/hostile_unknown.safetensors",
         ["not a Stable Diffusion 1.5 or SDXL checkpoint", "unknown layout: 4 tensors", "'encoder.layers.0.attention.wk.weight'"]),
        (Fixtures.directory + "/flux-single-file/bfl_bf16.safetensors", ["a FLUX.1 transformer", "FluxSingleFile"]),
    ])
    func otherFilesAreRefused(path: String, phrases: [String]) throws {
        let e = Self.failure { () throws(SluiceError) in _ = try SDSingleFile.open(path: path) }
        #expect(e?.file == path && e?.tensor == nil)
        for phrase in phrases { #expect(e?.reason.contains(phrase) == true, "'\(phrase)' not in \(String(describing: e))") }
        let sd2 = try Self.rewritten("sd15_f16_text_only.safetensors", renaming: { $0.replacingOccurrences(of: "cond_stage_model.transformer.", with: "cond_stage_model.model.") })
        let e2 = Self.failure { () throws(SluiceError) in _ = try SDSingleFile.open(path: sd2) }
        #expect(e2?.reason.contains("sd2 (unsupported): text_encoder") == true, "\(String(describing: e2))")
    }

    /// The tables follow the config, not one size: for the real SD1.5 and SDXL configs (the planner's
    /// model tables, written from diffusers' and transformers' models) each component's table holds
    /// exactly its parameter count.
    @Test(arguments: ["sd15", "sdxl"])
    func tablesCountTheRealModelsParameters(model: String) throws {
        let dir = try #require(ModelTable.directory)
        let table = try ModelTable.load(path: dir + "/\(model).json")
        var checked: [String] = []
        for component in table.components {
            let config = try JSONEncoder().encode(try #require(component.config))
            let keys: [(name: String, shape: Shape)]
            switch component.name {
            case "unet": keys = try SDSingleFile.diffusersTensors(unet: JSONDecoder().decode(SDUNetShapes.self, from: config))
            case "vae":
                // The planner's table holds the decoder's own modules only (not post_quant_conv).
                keys = try SDSingleFile.diffusersTensors(vae: JSONDecoder().decode(SDVAEShapes.self, from: config))
                    .filter { $0.name.hasPrefix("decoder.") }
            case "text_encoder": keys = try SDSingleFile.diffusersTensors(textEncoder: JSONDecoder().decode(SDTextEncoderShapes.self, from: config))
            case "text_encoder_2": keys = try SDSingleFile.diffusersTensors(textEncoder2: JSONDecoder().decode(SDTextEncoderShapes.self, from: config))
            default: continue
            }
            #expect(keys.reduce(0) { $0 + $1.shape.count } == component.parameters, "\(model) \(component.name)")
            checked.append(component.name)
        }
        #expect(checked.sorted() == (model == "sdxl" ? ["text_encoder", "text_encoder_2", "unet", "vae"] : ["text_encoder", "unet", "vae"]))
    }

    /// An invalidCheckpoint error's parts, or nil (recorded as an issue) when `body` does not fail so.
    static func failure(_ body: () throws(SluiceError) -> Void) -> (file: String, tensor: String?, reason: String)? {
        do throws(SluiceError) {
            try body()
            Issue.record("accepted")
        } catch {
            if case .invalidCheckpoint(let file, let tensor, let reason) = error { return (file, tensor, reason) }
            Issue.record("another error: \(error)")
        }
        return nil
    }
}
