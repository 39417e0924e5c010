import Foundation

/// Wall-clock timing for benchmarks (never used in tests).
public enum Stopwatch {
    public static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
}

public func median(_ xs: [Double]) -> Double {
    guard !xs.isEmpty else { return .nan }
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Writes a JSON object with sorted keys, atomically.
public func writeJSON(_ object: [String: Any], to path: String) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    try data.write(to: URL(fileURLWithPath: path), options: .atomic)
}

/// Deterministic pseudo-random floats in [-1, 1) for benchmark inputs (xorshift; no Foundation RNG).
public struct BenchRandom {
    var state: UInt64
    public init(seed: UInt64) { state = seed &* 0x9E3779B97F4A7C15 | 1 }
    public mutating func next() -> Float {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return Float(state >> 40) / Float(1 << 23) - 1
    }
    public mutating func floats(_ n: Int) -> [Float] { (0..<n).map { _ in next() } }
}

/// The machine a benchmark ran on: every result records it (CPUs differ between machines).
public enum CPUInfo {
    /// /proc/cpuinfo's "model name" (e.g. "AMD EPYC 9B45"), or "unknown".
    public static let model: String = {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown" }
        for line in text.split(separator: "\n") where line.hasPrefix("model name") {
            if let colon = line.firstIndex(of: ":") { return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces) }
        }
        return "unknown"
    }()
}
