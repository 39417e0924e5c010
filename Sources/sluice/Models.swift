import ArgumentParser
import Foundation
import SluiceCore
import SluiceWeights

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the models in the Hugging Face cache: components present or missing, files, size.")
    @Option(help: "Cache folder (default: $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub).") var cache: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let dir = cache ?? ModelLocator.hubCache()
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw CommandError(message: "\(dir): no such folder — no Hugging Face cache there (set --cache, $HF_HUB_CACHE or $HF_HOME)")
        }
        let models = HubCacheScanner.scan(cache: dir)
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(models), as: UTF8.self))
            return
        }
        if models.isEmpty { print("no models in \(dir)"); return }
        for m in models {
            print("\(m.id)  rev \(m.revision.map { String($0.prefix(12)) } ?? "-")  \(m.pipeline ?? "no model_index.json")  \(m.fileCount) files  \(formatBytes(m.bytes))")
            if !m.present.isEmpty { print("    present: \(m.present.joined(separator: ", "))") }
            if !m.missing.isEmpty { print("    MISSING: \(m.missing.joined(separator: ", "))") }
            for p in m.problems { print("    problem: \(p)") }
        }
    }
}
