import Foundation
import SluiceCore
import SluiceWeights

/// One block of a real model, Sluice against a reference script (diffusers/torch in a fresh process),
/// rounds interleaved so both see the same machine: what `bench zimage-block` and `bench block` share.
struct BlockComparison {
    let rounds: Int
    let threads: Int
    /// A Python script printing {"seconds": [...], "info": "..."} and saving its output as "y" in
    /// `referencePath`; or {"unavailable": why}.
    let script: String
    let referencePath: String

    /// The reference around one diffusers block: `imports` brings its class; `build` makes `blk` from the
    /// weights `w` and its inputs from `inp` (both safetensors dicts); `call` is one forward and `output`
    /// the tensor of its result `y` to compare. torch gets one warm-up call, then one timed.
    init(rounds: Int, threads: Int, weights: String, inputs: String, referencePath: String,
         imports: String, build: String, call: String, output: String) {
        self.rounds = rounds
        self.threads = threads
        self.referencePath = referencePath
        script = """
        import json, time
        try:
            import torch
            \(imports)
            from safetensors.torch import load_file, save_file
        except ImportError as e:
            print(json.dumps({"unavailable": str(e)})); raise SystemExit
        torch.set_num_threads(\(threads))
        w = load_file("\(weights)")
        inp = load_file("\(inputs)")
        \(build)
        def call():
            with torch.no_grad():
                return \(call)
        y = call()
        ts = []
        for _ in range(1):
            s = time.perf_counter(); y = call(); ts.append(time.perf_counter() - s)
        save_file({"y": (\(output)).float().contiguous()}, "\(referencePath)")
        print(json.dumps({"seconds": ts, "info": "torch " + torch.__version__ + ", " + str(torch.get_num_threads()) + " threads"}))
        """
    }

    struct Samples {
        var mine: [Double] = []
        var theirs: [Double] = []
        var info = "unavailable"
        var note: String?
    }

    func run(_ ours: () throws -> Void, progress: (String) -> Void) throws -> Samples {
        var s = Samples()
        for round in 0..<rounds {
            s.mine.append(try Stopwatch.seconds(ours))
            switch ReferenceRunner().run(script: script, threads: threads) {
            case .ok(let json):
                s.theirs += (json["seconds"] as? [Double]) ?? []
                s.info = "\(json["info"] ?? "torch")"
            case .unavailable(let why):
                s.note = "reference unavailable (\(why)): no ratio recorded"
            }
            progress("round \(round + 1)/\(rounds): sluice \(String(format: "%.2f", s.mine.last!)) s, reference \(s.theirs.last.map { String(format: "%.2f", $0) } ?? "-") s")
        }
        return s
    }

    /// The timing fields, the ratio (time, Sluice / reference) and how far the outputs differ.
    func fields(_ s: Samples, output: Tensor?) throws -> [String: Any] {
        var result: [String: Any] = [
            "sluice_seconds": median(s.mine), "reference": s.info, "samples": ["sluice": s.mine, "reference": s.theirs],
            "method": "median of \(rounds) rounds, Sluice then torch each round (torch in a fresh process per round, one warm-up call, weights upcast to f32 before timing)",
        ]
        if !s.theirs.isEmpty {
            result["reference_seconds"] = median(s.theirs)
            result["ratio"] = median(s.mine) / median(s.theirs)
            if let y = try? SafetensorsFile(path: referencePath).tensor("y"), let output {
                let a = try output.toFloats(), b = try y.toFloats()
                result["max_abs_difference"] = Double(zip(a, b).map { abs($0 - $1) }.max() ?? .infinity)
                result["max_abs_output"] = Double(b.map { abs($0) }.max() ?? 0)
            }
        } else {
            result["reference_seconds"] = NSNull()
            result["ratio"] = NSNull()
        }
        if let note = s.note { result["note"] = note }
        return result
    }
}
