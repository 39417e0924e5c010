import Foundation

/// The shape every `sluice bench` comparison shares: time Sluice and a reference (a Python
/// snippet that prints {"seconds": [...], ...}) in the same run, interleaved by round so drift on
/// a noisy machine hits both, and report medians and their ratio.
struct ComparisonBench {
    var name: String
    var threads: Int
    var rounds: Int
    var repeats: Int
    /// Floating-point operations per call, for GFLOP/s figures.
    var flops: Double
    /// Python that defines the inputs in `setup` and the timed expression in `call`.
    var referenceSetup: String
    var referenceCall: String
    /// Python module the reference needs (its absence is reported, not a failure).
    var referenceModule: String

    func run(ours: () throws -> Void, progress: (String) -> Void) throws -> [String: Any] {
        try ours()  // warm-up: page in, spin up threads
        var mine = [Double](), theirs = [Double]()
        var referenceInfo = "unavailable", note: String?
        let script = """
        import json, time
        try:
            import numpy as np
            import \(referenceModule)
        except ImportError as e:
            print(json.dumps({"unavailable": str(e)})); raise SystemExit
        \(ReferenceRunner.blasKernelProbe)
        \(referenceSetup)
        def call():
            \(referenceCall)
        call()
        ts = []
        for _ in range(\(repeats)):
            t = time.perf_counter(); call(); ts.append(time.perf_counter() - t)
        print(json.dumps({"seconds": ts, "info": info()}))
        """
        for round in 0..<rounds {
            for _ in 0..<repeats { mine.append(try Stopwatch.seconds(ours)) }
            switch ReferenceRunner().run(script: script, threads: threads) {
            case .ok(let json):
                theirs += (json["seconds"] as? [Double]) ?? []
                referenceInfo = "\(json["info"] ?? "unknown")"
            case .unavailable(let why):
                note = "reference unavailable (\(why)): no ratio recorded"
            }
            let ours = String(format: "%.2f", flops / median(mine) / 1e9)
            let ref = theirs.isEmpty ? "n/a" : String(format: "%.2f", flops / median(theirs) / 1e9)
            progress("\(name) round \(round + 1)/\(rounds): sluice \(ours) GFLOP/s, reference \(ref) GFLOP/s")
        }
        let ourSeconds = median(mine)
        let refSeconds: Double? = theirs.isEmpty ? nil : median(theirs)
        var result: [String: Any] = [
            "benchmark": name, "threads": threads,
            "sluice_seconds": ourSeconds, "sluice_gflops": flops / ourSeconds / 1e9,
            "reference_seconds": refSeconds.map { $0 as Any } ?? NSNull(),
            "reference_gflops": refSeconds.map { flops / $0 / 1e9 as Any } ?? NSNull(),
            // ratio > 1 means Sluice is faster (throughput ratio, = reference time / Sluice time)
            "ratio": refSeconds.map { $0 / ourSeconds as Any } ?? NSNull(),
            "reference": referenceInfo,
            "samples": ["sluice": mine, "reference": theirs],
            "method": "median of \(rounds) rounds × \(repeats) calls each, Sluice and reference interleaved by round",
            "simulated": false,
        ]
        if let note { result["note"] = note }
        return result
    }
}
