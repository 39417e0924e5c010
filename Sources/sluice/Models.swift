import ArgumentParser
import Foundation
import SluiceCore
import SluiceModels
import SluiceWeights

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the models in the Hugging Face cache (components present or missing, files, size), or with --dir the single-file checkpoints in a folder (family and components, from their headers).")
    @Option(help: "Cache folder (default: $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub).") var cache: String?
    @Option(help: "List the single .safetensors checkpoints in this folder instead (A1111's models/Stable-diffusion, ComfyUI's models/checkpoints).")
    var dir: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        if let dir {
            try listSingleFiles(in: dir)
            return
        }
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

/// One single-file checkpoint of a `--dir` listing.
struct SingleFileEntry: Encodable {
    let file: String
    let bytes: Int
    /// nil when the header could not be read (then `problem` says why).
    let family: String?
    let supported: Bool
    let components: [String]
    let tensors: Int
    let sampleKeys: [String]
    let summary: String
    let problem: String?
}

extension Models {
    /// The folder's .safetensors files (not its subfolders), each with what its tensor names say it holds.
    func listSingleFiles(in dir: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw CommandError(message: "--dir \(dir): no such folder")
        }
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
        var entries: [SingleFileEntry] = []
        for name in names {
            let path = dir + "/" + name
            let bytes = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0
            do throws(SluiceError) {
                let file = try SafetensorsFile(path: path)
                let c = SingleFileContents.detect(names: file.names, shape: { file.info($0)?.shape })
                entries.append(SingleFileEntry(file: name, bytes: bytes, family: c.family.rawValue, supported: c.family.isSupported,
                                               components: c.components.map(\.rawValue), tensors: c.tensorCount, sampleKeys: c.sampleKeys,
                                               summary: c.summary, problem: nil))
            } catch {
                entries.append(SingleFileEntry(file: name, bytes: bytes, family: nil, supported: false, components: [], tensors: 0,
                                               sampleKeys: [], summary: "unreadable", problem: "\(error)"))
            }
        }
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try e.encode(entries), as: UTF8.self))
            return
        }
        if entries.isEmpty { print("no .safetensors files in \(dir)"); return }
        for entry in entries {
            print("\(entry.file)  \(formatBytes(entry.bytes))  \(entry.problem.map { "unreadable: \($0)" } ?? entry.summary)")
        }
    }
}
