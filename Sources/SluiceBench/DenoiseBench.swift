import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluiceModels
import SluicePipelines
import SluiceWeights

/// `sluice bench denoise`: steady-state denoising steps of a random-weight Z-Image transformer at the
/// real widths (dim 3840, 30 heads, caption features 2560) with `layers` main blocks and 2 + 2
/// refiners, on the CPU or a Vulkan device, optionally under a device budget — and, with a reference,
/// diffusers' ZImageTransformer2DModel on the same folder in the same run (CUDA when torch sees a GPU,
/// else the CPU). The model is written once (bf16 safetensors, diffusers layout, in a git-ignored
/// folder) and reused. A step is one transformer call (guidance off, as Turbo runs).
public struct DenoiseBench {
    public var device: String
    public var width: Int
    public var height: Int
    public var layers: Int
    public var refiners = 2
    /// Model width (3840 is Z-Image-Turbo's; smaller widths are for quick checks, e.g. CI on lavapipe).
    public var dim = 3840
    public var captionTokens = 128
    public var steps: Int
    public var memory: (budget: Int?, profile: DeviceProfile)
    public var reference: Bool
    public var threads: Int
    public var directory: String

    public init(device: String, width: Int, height: Int, layers: Int, dim: Int = 3840, steps: Int = 3,
                budget: Int? = nil, profile: DeviceProfile = .rtx4090, reference: Bool, threads: Int, directory: String = "bench/out") {
        self.device = device; self.width = width; self.height = height; self.layers = layers; self.dim = dim; self.steps = steps
        memory = (budget, profile); self.reference = reference; self.threads = threads; self.directory = directory
    }

    var heads: Int { max(dim / 128, 1) }
    var capDim: Int { dim >= 2560 ? 2560 : dim }
    var folder: String { directory + "/zimage-denoise-d\(dim)-l\(layers)-r\(refiners)" }

    var config: [String: Any] {
        let hd = dim / heads
        // Rotary axes split the head dimension as Z-Image's do (32 + 48 + 48 of 128).
        let a = hd / 4, b = (hd - a) / 2
        return ["_class_name": "ZImageTransformer2DModel", "all_patch_size": [2], "all_f_patch_size": [1], "in_channels": 16,
                "dim": dim, "n_layers": layers, "n_refiner_layers": refiners, "n_heads": heads, "n_kv_heads": heads,
                "norm_eps": 1e-5, "qk_norm": true, "cap_feat_dim": capDim, "rope_theta": 256.0, "t_scale": 1000.0,
                "axes_dims": [a, b, hd - a - b], "axes_lens": [1024, 512, 512]]
    }

    /// Every tensor of diffusers' ZImageTransformer2DModel at this size, with its shape.
    func shapes() -> [(String, Shape)] {
        let d = dim, f = Int(Double(dim) / 3 * 8), hd = dim / heads, a = min(dim, 256)
        func block(_ p: String, modulated: Bool) -> [(String, Shape)] {
            var out: [(String, Shape)] = [
                (p + "attention.to_q.weight", [d, d]), (p + "attention.to_k.weight", [d, d]), (p + "attention.to_v.weight", [d, d]),
                (p + "attention.to_out.0.weight", [d, d]), (p + "attention.norm_q.weight", [hd]), (p + "attention.norm_k.weight", [hd]),
                (p + "attention_norm1.weight", [d]), (p + "attention_norm2.weight", [d]), (p + "ffn_norm1.weight", [d]),
                (p + "ffn_norm2.weight", [d]), (p + "feed_forward.w1.weight", [f, d]), (p + "feed_forward.w2.weight", [d, f]),
                (p + "feed_forward.w3.weight", [f, d]),
            ]
            if modulated { out += [(p + "adaLN_modulation.0.weight", [4 * d, a]), (p + "adaLN_modulation.0.bias", [4 * d])] }
            return out
        }
        var out: [(String, Shape)] = [
            ("t_embedder.mlp.0.weight", [1024, 256]), ("t_embedder.mlp.0.bias", [1024]), ("t_embedder.mlp.2.weight", [a, 1024]),
            ("t_embedder.mlp.2.bias", [a]), ("cap_embedder.0.weight", [capDim]), ("cap_embedder.1.weight", [d, capDim]),
            ("cap_embedder.1.bias", [d]), ("all_x_embedder.2-1.weight", [d, 64]), ("all_x_embedder.2-1.bias", [d]),
            ("x_pad_token", [1, d]), ("cap_pad_token", [1, d]),
            ("all_final_layer.2-1.adaLN_modulation.1.weight", [d, a]), ("all_final_layer.2-1.adaLN_modulation.1.bias", [d]),
            ("all_final_layer.2-1.linear.weight", [64, d]), ("all_final_layer.2-1.linear.bias", [64]),
        ]
        for i in 0..<refiners { out += block("noise_refiner.\(i).", modulated: true) + block("context_refiner.\(i).", modulated: false) }
        for i in 0..<layers { out += block("layers.\(i).", modulated: true) }
        return out
    }

    /// Writes the model once (random bf16: weights ~ N(0, 1/fan-in), norms near 1), then reuses it.
    public func ensureModel(progress: (String) -> Void) throws -> String {
        let dir = folder + "/transformer", weights = dir + "/diffusion_pytorch_model.safetensors"
        if FileManager.default.fileExists(atPath: weights) { return folder }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        progress("writing a random \(layers)+\(refiners)+\(refiners)-block Z-Image transformer (dim \(dim)) to \(folder)")
        var rng = BenchRandom(seed: 31)
        var tensors: [(String, Tensor)] = []
        for (name, shape) in shapes() {
            let scale = name.contains("norm") ? Float(0.1) : 1 / Float(shape.dims.last ?? 1).squareRoot()
            let base: Float = name.contains("norm") ? 1 : 0
            tensors.append((name, try Tensor(rng.floats(shape.count).map { base + $0 * scale }, shape: shape).converted(to: .bf16)))
        }
        try SafetensorsWriter.write(tensors, to: weights)
        try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: dir + "/config.json"))
        return folder
    }

    public func run(progress: (String) -> Void = { _ in }) throws -> [String: Any] {
        let model = try ensureModel(progress: progress)
        let compute = try ComputeDevice.select(device)
        if let note = compute.note { progress(note) }
        let config = try ModelLocator.config(ZImageConfig.self, at: model + "/transformer/config.json")
        let transformer = ZImageTransformer(config: config)
        let checkpoint = try ModelLocator.checkpoint(component: model + "/transformer")
        let runner = try ComponentRunner(name: "transformer", phase: .denoise, checkpoint: checkpoint, groupNames: transformer.groupNames,
                                         groupOf: { transformer.group(of: $0) })
        let lh = height / 8, lw = width / 8
        let imageTokens = ZImageTransformer.padded((lh / 2) * (lw / 2)), caption = ZImageTransformer.padded(captionTokens)
        let description = try runner.describe(
            activationBytes: { _ in ZImageTransformer.activationBytes(config: config, imageTokens: imageTokens, captionTokens: caption) },
            rows: { _ in Double(imageTokens + caption) })
        let components = PipelineComponents([runner], device: compute)
        let options = MemoryOptions(deviceBudget: memory.budget, profile: memory.profile)
        let run = try components.start([description], workload: Workload(width: width, height: height), memory: options)
        defer { run.end() }

        var rng = BenchRandom(seed: 32)
        let latents = Tensor(rng.floats(16 * lh * lw), shape: [16, 1, lh, lw])
        let cap = Tensor(rng.floats(captionTokens * config.capFeatDim), shape: [captionTokens, config.capFeatDim])
        let t: Float = 0.5
        let inputs = directory + "/zimage-denoise-inputs.safetensors", outPath = directory + "/zimage-denoise-reference.safetensors"
        try SafetensorsWriter.write([("x", latents), ("cap", cap), ("t", Tensor([t], shape: [1]))], to: inputs)
        let backend = compute.backend
        var output: Tensor?
        var seconds: [Double] = []
        for step in 0...steps {
            let t0 = Date()
            // A phase ends when the device has finished its work (a device records and returns at once).
            output = try run.phase(.denoise) {
                try runner.run(ZImageTransformer.State(latents: latents, t: t, caption: cap)) { g, w, s in try transformer.run(group: g, w, s, backend) }.output
            }
            let s = Date().timeIntervalSince(t0)
            if step > 0 { seconds.append(s) }  // the first call uploads and warms up
            progress("step \(step)\(step == 0 ? " (warm-up)" : ""): \(String(format: "%.3f", s)) s")
        }
        let timed = Array(run.phases.dropFirst())
        func total(_ key: KeyPath<DeviceTraffic, Int>) -> Any { timed.compactMap(\.deviceTraffic).isEmpty ? NSNull() : timed.compactMap(\.deviceTraffic).map { $0[keyPath: key] }.reduce(0, +) / max(timed.count, 1) }
        var result: [String: Any] = [
            "benchmark": "denoise", "simulated": false, "device": compute.description, "threads": threads,
            "width": width, "height": height, "layers": layers, "refiners": refiners, "dim": dim, "heads": heads,
            "image_tokens": imageTokens, "caption_tokens": caption, "weights": "random bf16 (\(folder))",
            "sluice_seconds_per_step": median(seconds), "samples": seconds,
            "per_step": ["submits": total(\.submits), "host_waits": total(\.hostWaits), "weight_bytes_to_device": total(\.weightBytesToDevice),
                         "other_bytes_to_device": total(\.otherBytesToDevice), "bytes_to_host": total(\.bytesToHost),
                         "peak_device_bytes": timed.map(\.peakDeviceBytes).max() ?? 0] as [String: Any],
            "budget_bytes": memory.budget.map { $0 as Any } ?? NSNull(),
            "method": "median of \(steps) steady-state steps after one warm-up step (one transformer call each, guidance off)",
        ]
        if let plan = run.plan, let p = plan.component("transformer") {
            result["plan"] = ["resident_groups": p.resident.count, "streamed_groups": p.streamed.count, "streamed_bytes_per_step": p.streamedBytesPerCall]
        }
        guard reference else { result["reference"] = NSNull(); return result }
        let script = """
        import json, time
        try:
            import torch
            from diffusers import ZImageTransformer2DModel
            from safetensors.torch import load_file, save_file
        except ImportError as e:
            print(json.dumps({"unavailable": str(e)})); raise SystemExit
        torch.set_num_threads(\(threads))
        cuda = torch.cuda.is_available()
        dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
        m = ZImageTransformer2DModel.from_pretrained("\(model)/transformer", torch_dtype=dtype).to(dev).eval()
        inp = load_file("\(inputs)")
        x = inp["x"].to(dev, dtype); cap = inp["cap"].to(dev, dtype); t = inp["t"].to(dev, dtype)
        def call():
            with torch.no_grad():
                return m([x], t, [cap], return_dict=False)[0][0]
        y = call()
        if cuda: torch.cuda.synchronize()
        ts = []
        for _ in range(\(steps)):
            s = time.perf_counter(); y = call()
            if cuda: torch.cuda.synchronize()
            ts.append(time.perf_counter() - s)
        save_file({"y": y.float().cpu().contiguous()}, "\(outPath)")
        name = torch.cuda.get_device_name(0) if cuda else "cpu, " + str(torch.get_num_threads()) + " threads"
        print(json.dumps({"seconds": ts, "info": "diffusers on " + name + " (" + str(dtype) + "), torch " + torch.__version__}))
        """
        switch ReferenceRunner().run(script: script, threads: threads) {
        case .ok(let json):
            let theirs = (json["seconds"] as? [Double]) ?? []
            result["reference"] = json["info"] ?? "diffusers"
            result["reference_seconds_per_step"] = median(theirs)
            result["reference_samples"] = theirs
            result["ratio"] = median(seconds) / median(theirs)
            if let y = try? SafetensorsFile(path: outPath).tensor("y"), let out = output {
                let a = try out.toFloats(), b = try y.toFloats()
                if a.count == b.count { result["max_abs_difference"] = Double(zip(a, b).map { abs($0 - $1) }.max() ?? 0) }
                result["max_abs_output"] = Double(b.map { abs($0) }.max() ?? 0)
            }
        case .unavailable(let why):
            result["reference"] = NSNull()
            result["note"] = "reference unavailable (\(why)): no ratio recorded"
        }
        return result
    }
}
