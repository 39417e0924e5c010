import Foundation
import SluiceCore
import SluiceWeights

/// Reference fixtures written by tools/reference/make_fixtures.py (torch, float64, stored as f32).
public enum Fixtures {
    /// Tests/Fixtures, found from this file's location so tests run from any working directory.
    public static let directory: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.appendingPathComponent("Tests/Fixtures").path
    }()

    /// True in CI (`CI=true`, as .ci/run and most CI services set it): there every optional
    /// prerequisite (a Vulkan device, Qwen's real vocabulary) must be present, so a test that would skip
    /// without one fails instead (see the `…PresentInCI` tests).
    public static var inCI: Bool { ProcessInfo.processInfo.environment["CI"]?.lowercased() == "true" }

    /// A file an installed Python package ships (`relative` under site-packages/dist-packages), or the
    /// path the environment variable `variable` names: the real vocabularies tests check against
    /// without running Python. Searched: the system's, ~/.local's and pyenv's Pythons.
    public static func pythonPackageFile(_ relative: String, variable: String) -> String? {
        let fm = FileManager.default
        if let p = ProcessInfo.processInfo.environment[variable], fm.fileExists(atPath: p) { return p }
        let home = fm.homeDirectoryForCurrentUser.path
        var roots = ["/usr/lib", "/usr/local/lib", home + "/.local/lib"]
        if let versions = try? fm.contentsOfDirectory(atPath: home + "/.pyenv/versions") {
            roots += versions.map { home + "/.pyenv/versions/\($0)/lib" }
        }
        for root in roots {
            for py in (try? fm.contentsOfDirectory(atPath: root)) ?? [] where py.hasPrefix("python3") {
                for sub in ["site-packages", "dist-packages"] {
                    let p = "\(root)/\(py)/\(sub)/\(relative)"
                    if fm.fileExists(atPath: p) { return p }
                }
            }
        }
        return nil
    }

    public static func file(_ name: String) throws -> SafetensorsFile {
        try SafetensorsFile(path: directory + "/" + name)
    }
}

public struct Comparison: CustomStringConvertible {
    public let maxAbs: Float
    public let worstIndex: Int
    public let ok: Bool
    public let description: String
}

/// Element-wise |got − want| ≤ atol + rtol·|want| (NaN only where the reference is NaN).
public func compare(_ got: [Float], _ want: [Float], atol: Float, rtol: Float) -> Comparison {
    guard got.count == want.count else {
        return Comparison(maxAbs: .infinity, worstIndex: -1, ok: false, description: "count \(got.count) ≠ \(want.count)")
    }
    var maxAbs: Float = 0, worst = -1, ok = true
    for i in 0..<got.count {
        let g = got[i], w = want[i]
        if w.isNaN || g.isNaN {
            if !(w.isNaN && g.isNaN) { ok = false; worst = i; maxAbs = .infinity }
            continue
        }
        if w.isInfinite || g.isInfinite {
            if g != w { ok = false; worst = i; maxAbs = .infinity }
            continue
        }
        let e = abs(g - w)
        if e > maxAbs { maxAbs = e; worst = i }
        if e > atol + rtol * abs(w) { ok = false }
    }
    let detail = worst >= 0 ? " (worst at \(worst): got \(got[worst]), want \(want[worst]))" : ""
    return Comparison(maxAbs: maxAbs, worstIndex: worst, ok: ok,
                      description: "max |error| \(maxAbs), atol \(atol), rtol \(rtol)\(detail)")
}
