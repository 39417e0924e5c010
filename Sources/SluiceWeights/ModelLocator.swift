import Foundation
import SluiceCore

/// Finds a model on disk: a diffusers folder given by path, or a repo id ("Org/Name") in the Hugging
/// Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), laid out as
/// `models--Org--Name/{refs/main, snapshots/<revision>/…}` with files symlinked into `blobs/`.
/// Nothing is ever downloaded.
public enum ModelLocator {
    public static func hubCache(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let c = environment["HF_HUB_CACHE"], !c.isEmpty { return c }
        if let h = environment["HF_HOME"], !h.isEmpty { return h + "/hub" }
        return FileManager.default.homeDirectoryForCurrentUser.path + "/.cache/huggingface/hub"
    }

    /// A directory holding the model (the folder itself, or the cached snapshot).
    public static func resolve(_ model: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(SluiceError) -> String {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: model, isDirectory: &isDir) {
            guard isDir.boolValue else {
                throw .invalidParameter(.model, reason: "\(model) is a file, not a diffusers folder or repo id (SD1.5/SDXL single files: --model FILE; FLUX: --transformer FILE)")
            }
            return (model as NSString).standardizingPath
        }
        let parts = model.split(separator: "/")
        guard parts.count == 2, !model.hasPrefix("."), !model.hasPrefix("/") else {
            throw .invalidParameter(.model, reason: "\(model): no such folder, and not a Hugging Face repo id (Org/Name)")
        }
        let cache = hubCache(environment: environment)
        let repo = cache + "/models--\(parts[0])--\(parts[1])"
        guard FileManager.default.fileExists(atPath: repo) else {
            throw .invalidParameter(.model, reason: "\(model) is not in the Hugging Face cache (looked in \(repo)); Sluice never downloads: fetch it with `huggingface-cli download \(model)` first")
        }
        return try snapshot(repo: repo, model: model)
    }

    /// refs/main names the revision; without it, the only (or newest) snapshot.
    static func snapshot(repo: String, model: String) throws(SluiceError) -> String {
        let snapshots = repo + "/snapshots"
        if let ref = try? String(contentsOfFile: repo + "/refs/main", encoding: .utf8) {
            let rev = ref.trimmingCharacters(in: .whitespacesAndNewlines)
            let dir = snapshots + "/" + rev
            guard FileManager.default.fileExists(atPath: dir) else {
                throw .invalidParameter(.model, reason: "\(model): refs/main names revision \(rev), but \(dir) is missing (incomplete download?)")
            }
            return dir
        }
        let revs = ((try? FileManager.default.contentsOfDirectory(atPath: snapshots)) ?? []).filter { !$0.hasPrefix(".") }
        guard !revs.isEmpty else {
            throw .invalidParameter(.model, reason: "\(model): \(snapshots) holds no snapshot (incomplete download?)")
        }
        let newest = revs.max { modified(snapshots + "/" + $0) < modified(snapshots + "/" + $1) }!
        return snapshots + "/" + newest
    }

    static func modified(_ path: String) -> Date {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date) ?? .distantPast
    }

    /// The weights of one component folder: `*.safetensors.index.json` (sharded) or the single
    /// `*.safetensors`. Missing files and shards are errors naming them.
    public static func checkpoint(component dir: String) throws(SluiceError) -> Checkpoint {
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
        guard !files.isEmpty else { throw .io(path: dir, reason: "missing (the model folder lacks this component)") }
        if let index = files.first(where: { $0.hasSuffix(".safetensors.index.json") }) {
            return try Checkpoint(indexPath: dir + "/" + index)
        }
        let weights = files.filter { $0.hasSuffix(".safetensors") }
        guard !weights.isEmpty else { throw .io(path: dir, reason: "holds no .safetensors weights") }
        guard weights.count == 1 else {
            throw .invalidCheckpoint(file: dir, tensor: nil, reason: "several .safetensors files (\(weights.joined(separator: ", "))) but no index.json to say which tensors are where")
        }
        return try Checkpoint(path: dir + "/" + weights[0])
    }

    /// A component's JSON config, decoded; a missing or malformed file names itself.
    public static func config<T: Decodable>(_ type: T.Type, at path: String) throws(SluiceError) -> T {
        guard let data = FileManager.default.contents(atPath: path) else { throw .io(path: path, reason: "missing") }
        do { return try JSONDecoder().decode(T.self, from: data) } catch let e as SluiceError { throw e } catch {
            throw .invalidArgument(name: path, reason: "cannot be read: \(DecodingFailure(error))")
        }
    }
}
