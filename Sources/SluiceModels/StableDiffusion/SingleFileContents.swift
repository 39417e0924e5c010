import SluiceCore

/// The model family a single .safetensors checkpoint holds, told from its tensor names.
public enum SingleFileFamily: String, Sendable, Equatable, CaseIterable {
    /// Stable Diffusion 1.x in the original (LDM) layout: CLIP-L under "cond_stage_model.transformer.".
    case sd15
    /// SDXL base: CLIP-L and OpenCLIP bigG under "conditioner.embedders.0/1.", the UNet's label_emb.
    case sdxl
    /// Stable Diffusion 2.x: OpenCLIP ViT-H under "cond_stage_model.model.". Not read yet.
    case sd2
    /// The SDXL refiner: OpenCLIP bigG alone, under "conditioner.embedders.0.model.". Not read yet.
    case sdxlRefiner = "sdxl-refiner"
    /// A FLUX.1 transformer (FluxSingleFile reads it).
    case flux
    /// A Qwen-Image transformer (ComfyUI's split file: diffusers' names, bare or under
    /// "model.diffusion_model.").
    case qwenImage = "qwen-image"
    case unknown

    /// Whether Sluice can present this family's components under diffusers' names.
    public var isSupported: Bool { self == .sd15 || self == .sdxl || self == .flux || self == .qwenImage }

    /// As a person reads it in a listing: "sdxl", "sd2 (unsupported)".
    public var label: String { self == .unknown || isSupported ? rawValue : rawValue + " (unsupported)" }
}

/// A component of a pipeline, named as its diffusers subfolder.
public enum SingleFileComponent: String, Sendable, Equatable, Hashable, CaseIterable, Comparable {
    case unet
    case transformer
    case vae
    case textEncoder = "text_encoder"
    case textEncoder2 = "text_encoder_2"

    public static func < (a: Self, b: Self) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// What a single checkpoint file holds, read from its tensor names (and one shape) only: the family, the
/// components it carries (A1111 and ComfyUI files often leave out the VAE or the text encoders) and,
/// for a file of no known family, a few of its names to show.
public struct SingleFileContents: Sendable, Equatable {
    public let family: SingleFileFamily
    /// The components present, in pipeline order (unet or transformer, vae, text encoders).
    public let components: [SingleFileComponent]
    public let tensorCount: Int
    /// The first names in sorted order, for a file whose family is unknown (empty otherwise).
    public let sampleKeys: [String]

    /// Where each original-layout component lives.
    enum Prefix {
        static let unet = "model.diffusion_model."
        static let vae = "first_stage_model."
        static let sd15TextEncoder = "cond_stage_model.transformer."
        static let sd2TextEncoder = "cond_stage_model.model."
        static let sdxlTextEncoder = "conditioner.embedders.0.transformer."
        static let sdxlTextEncoder2 = "conditioner.embedders.1.model."
        /// The refiner's only text encoder (OpenCLIP bigG) sits where SDXL base has CLIP-L.
        static let sdxlRefinerTextEncoder = "conditioner.embedders.0.model."
        static let unetModules: Set<Substring> = ["input_blocks", "middle_block", "output_blocks", "time_embed", "out", "label_emb"]
    }

    /// Reads the family and components from `names`; `shape` gives a stored tensor's shape (used only to
    /// tell a bare SD2 UNet from an SD1.5 one: SD2 projects into its transformers with linears).
    public static func detect(names: [String], shape: (String) -> Shape?) -> SingleFileContents {
        func has(_ prefix: String) -> Bool { names.contains { $0.hasPrefix(prefix) } }
        let unet = names.contains { name in
            name.hasPrefix(Prefix.unet) && name.dropFirst(Prefix.unet.count).split(separator: ".", maxSplits: 1).first.map(Prefix.unetModules.contains) == true
        }
        let vae = has(Prefix.vae)

        // FLUX.1: Black Forest Labs' double blocks (bare or under ComfyUI's prefix) or diffusers' single blocks.
        if has("double_blocks.") || has(Prefix.unet + "double_blocks.") || has("single_transformer_blocks.") || has("transformer.single_transformer_blocks.") {
            var components: [SingleFileComponent] = [.transformer]
            if vae || has("vae.") { components.append(.vae) }
            if has("text_encoders.clip_l.") { components.append(.textEncoder) }
            if has("text_encoders.t5xxl.") { components.append(.textEncoder2) }
            return SingleFileContents(family: .flux, components: components, tensorCount: names.count, sampleKeys: [])
        }

        // Qwen-Image: its text-feature norm and dual-stream modulation, bare or under ComfyUI's prefix.
        if has("txt_norm.") && has("transformer_blocks.0.img_mod.") || has(Prefix.unet + "txt_norm.") && has(Prefix.unet + "transformer_blocks.0.img_mod.") {
            return SingleFileContents(family: .qwenImage, components: [.transformer], tensorCount: names.count, sampleKeys: [])
        }

        var components: [SingleFileComponent] = []
        if unet { components.append(.unet) }
        if vae { components.append(.vae) }
        let family: SingleFileFamily
        if has(Prefix.sd2TextEncoder) {
            family = .sd2
            components.append(.textEncoder)
        } else if has(Prefix.sdxlTextEncoder) || has(Prefix.sdxlTextEncoder2) {
            family = .sdxl
            if has(Prefix.sdxlTextEncoder) { components.append(.textEncoder) }
            if has(Prefix.sdxlTextEncoder2) { components.append(.textEncoder2) }
        } else if has(Prefix.sdxlRefinerTextEncoder) {
            family = .sdxlRefiner
            components.append(.textEncoder2)
        } else if has(Prefix.sd15TextEncoder) {
            family = .sd15
            components.append(.textEncoder)
        } else if unet {
            // No text encoder to tell by: SDXL's UNet adds the text_time embedding (label_emb); SD2's
            // transformers project in with linears (proj_in [C, C]), SD1.5's with 1×1 convolutions.
            if has(Prefix.unet + "label_emb.") {
                family = .sdxl
            } else if let proj = names.first(where: { $0.hasPrefix(Prefix.unet) && $0.hasSuffix(".proj_in.weight") }), shape(proj)?.rank == 2 {
                family = .sd2
            } else {
                family = .sd15
            }
        } else {
            family = .unknown
        }
        if family == .unknown {
            // A bare LDM VAE is the same in every family: say what it is, not whose.
            return SingleFileContents(family: .unknown, components: components, tensorCount: names.count,
                                      sampleKeys: components.isEmpty ? Array(names.sorted().prefix(5)) : [])
        }
        return SingleFileContents(family: family, components: components, tensorCount: names.count, sampleKeys: [])
    }

    /// One line for a listing: "sdxl: unet, vae, text_encoder, text_encoder_2", or the names of an unknown file.
    public var summary: String {
        if family == .unknown && !components.isEmpty {
            return "unknown family: \(components.map(\.rawValue).joined(separator: ", "))"
        }
        if family == .unknown {
            let sample = sampleKeys.map { "'\($0)'" }.joined(separator: ", ")
            return "unknown layout: \(tensorCount) tensors" + (sample.isEmpty ? "" : ", e.g. \(sample)")
        }
        return "\(family.label): \(components.map(\.rawValue).joined(separator: ", "))"
    }
}
