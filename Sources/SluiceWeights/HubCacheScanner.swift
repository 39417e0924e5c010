import Foundation

/// What `sluice models` lists: each model repo in the Hugging Face cache, its revision, which
/// diffusers components its snapshot has (and which `model_index.json` names but are missing or
/// incomplete), how many files, how many bytes (following the snapshot's symlinks into blobs/).
public struct CachedModel: Sendable, Codable {
    public let id: String
    public let revision: String?
    public let path: String
    public let pipeline: String?
    public let present: [String]
    public let missing: [String]
    public let fileCount: Int
    public let bytes: Int
    /// Files still downloading (`*.incomplete` blobs) or symlinks whose blob is gone.
    public let problems: [String]
}

public enum HubCacheScanner {
    public static func scan(cache: String = ModelLocator.hubCache()) -> [CachedModel] {
        let fm = FileManager.default
        let repos = ((try? fm.contentsOfDirectory(atPath: cache)) ?? []).filter { $0.hasPrefix("models--") }.sorted()
        return repos.compactMap { entry -> CachedModel? in
            let repo = cache + "/" + entry
            let id = entry.dropFirst("models--".count).replacingOccurrences(of: "--", with: "/")
            let snapshot = try? ModelLocator.snapshot(repo: repo, model: id)
            var problems: [String] = []
            if let blobs = try? fm.contentsOfDirectory(atPath: repo + "/blobs") {
                problems += blobs.filter { $0.hasSuffix(".incomplete") }.map { "blobs/\($0) (download not finished)" }
            }
            guard let snapshot else {
                return CachedModel(id: id, revision: nil, path: repo, pipeline: nil, present: [], missing: [], fileCount: 0, bytes: 0,
                                   problems: problems + ["no usable snapshot"])
            }
            var files = 0, bytes = 0
            if let walker = fm.enumerator(atPath: snapshot) {
                for case let rel as String in walker {
                    let full = snapshot + "/" + rel
                    var isDir: ObjCBool = false
                    guard fm.fileExists(atPath: full, isDirectory: &isDir) else {
                        problems.append("\(rel) (symlink to a missing blob)")
                        continue
                    }
                    if isDir.boolValue { continue }
                    files += 1
                    bytes += ((try? fm.attributesOfItem(atPath: full))?[.size] as? Int) ?? 0
                }
            }
            var present: [String] = [], missing: [String] = []
            let folder = try? DiffusersFolder(path: snapshot)
            for c in folder?.components ?? [] {
                if componentComplete(snapshot + "/" + c.name, name: c.name) { present.append(c.name) } else { missing.append(c.name) }
            }
            let pipeline = folder?.pipelineClass
            let revision = (snapshot as NSString).lastPathComponent
            return CachedModel(id: id, revision: revision, path: snapshot, pipeline: pipeline, present: present, missing: missing,
                               fileCount: files, bytes: bytes, problems: problems)
        }
    }

    /// A component folder with its config and, for weight-bearing ones, all the shards its index names.
    static func componentComplete(_ dir: String, name: String) -> Bool {
        let fm = FileManager.default
        guard let files = try? fm.contentsOfDirectory(atPath: dir), !files.isEmpty else { return false }
        if name == "tokenizer" { return files.contains("tokenizer.json") || files.contains("vocab.json") || files.contains("tokenizer.model") }
        if name == "scheduler" { return files.contains { $0.hasSuffix(".json") } }
        if let index = files.first(where: { $0.hasSuffix(".safetensors.index.json") }) {
            guard let data = fm.contents(atPath: dir + "/" + index),
                  let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let map = obj["weight_map"] as? [String: String] else { return false }
            return Set(map.values).allSatisfy { fm.fileExists(atPath: dir + "/" + $0) }
        }
        let weightBearing = ["text_encoder", "text_encoder_2", "text_encoder_3", "transformer", "unet", "vae"]
        if weightBearing.contains(name) { return files.contains { $0.hasSuffix(".safetensors") } }
        return true
    }
}
