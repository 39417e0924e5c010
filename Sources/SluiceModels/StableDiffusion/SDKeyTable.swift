import SluiceCore
import SluiceWeights

/// One tensor of a diffusers component: its name and shape there, and where the original (LDM) layout
/// stores it, relative to the component's prefix in the single file ("model.diffusion_model." …).
struct SDTensorSpec: Sendable, Equatable {
    let key: String
    let shape: Shape
    let source: String
    let sourceShape: Shape
    let form: TensorRecipe.Form
}

/// Builds a component's table in diffusers' module order. Every entry point takes the diffusers name
/// first and the stored one second.
struct SDKeyTableBuilder {
    private(set) var specs: [SDTensorSpec] = []

    mutating func add(_ key: String, _ shape: Shape, _ source: String, _ sourceShape: Shape? = nil, _ form: TensorRecipe.Form = .asStored) {
        specs.append(SDTensorSpec(key: key, shape: shape, source: source, sourceShape: sourceShape ?? shape, form: form))
    }

    /// A GroupNorm's or LayerNorm's weight and bias.
    mutating func norm(_ key: String, _ source: String, width: Int) {
        add(key + ".weight", Shape([width]), source + ".weight")
        add(key + ".bias", Shape([width]), source + ".bias")
    }

    mutating func linear(_ key: String, _ source: String, out: Int, in width: Int, bias: Bool = true) {
        add(key + ".weight", Shape([out, width]), source + ".weight")
        if bias { add(key + ".bias", Shape([out]), source + ".bias") }
    }

    mutating func conv(_ key: String, _ source: String, out: Int, in width: Int, kernel: Int) {
        add(key + ".weight", Shape([out, width, kernel, kernel]), source + ".weight")
        add(key + ".bias", Shape([out]), source + ".bias")
    }

    /// A linear the original layout stores as a 1×1 convolution: the same numbers, read as [out, in].
    mutating func linearFromConv1x1(_ key: String, _ source: String, out: Int, in width: Int) {
        add(key + ".weight", Shape([out, width]), source + ".weight", Shape([out, width, 1, 1]), .reshaped(Shape([out, width])))
        add(key + ".bias", Shape([out]), source + ".bias")
    }

    /// Linears the original layout stores as one, stacked along the output rows in `keys`' order.
    mutating func fused(_ keys: [String], _ source: String, rows: Int, in width: Int) {
        let total = rows * keys.count
        for (i, key) in keys.enumerated() {
            let range = (i * rows)..<((i + 1) * rows)
            add(key + ".weight", Shape([rows, width]), source + "_weight", Shape([total, width]), .rows(range))
            add(key + ".bias", Shape([rows]), source + "_bias", Shape([total]), .rows(range))
        }
    }
}

/// A component's config field that the key table cannot follow: names the field and its file.
func unsupportedConfig(_ component: SingleFileComponent, _ field: String, _ reason: String) -> SluiceError {
    .invalidArgument(name: "\(component.rawValue)/config.json: \(field)", reason: reason)
}
