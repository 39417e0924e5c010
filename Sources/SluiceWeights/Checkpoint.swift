import Foundation
import SluiceCore

/// Several safetensors files read as one: a sharded checkpoint with its
/// `*.safetensors.index.json`, a folder of shards, or a single file.
public final class Checkpoint: Sendable {
    public let files: [SafetensorsFile]
    private let owner: [String: Int]

    public init(files: [SafetensorsFile]) throws(SluiceError) {
        var owner: [String: Int] = [:]
        for (i, f) in files.enumerated() {
            for name in f.names {
                if let j = owner[name] {
                    throw .invalidCheckpoint(file: f.path, tensor: name, reason: "also present in \(files[j].path)")
                }
                owner[name] = i
            }
        }
        self.files = files
        self.owner = owner
    }

    /// Opens a `.safetensors` file, a `.safetensors.index.json`, or a folder holding either.
    public convenience init(path: String) throws(SluiceError) {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw .io(path: path, reason: "no such file or folder") }
        if isDir.boolValue {
            let entries = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
            if let index = entries.first(where: { $0.hasSuffix(".safetensors.index.json") }) {
                try self.init(indexPath: path + "/" + index)
                return
            }
            let shards = entries.filter { $0.hasSuffix(".safetensors") }
            guard !shards.isEmpty else { throw .io(path: path, reason: "no .safetensors files in this folder") }
            var files: [SafetensorsFile] = []
            for s in shards { files.append(try SafetensorsFile(path: path + "/" + s)) }
            try self.init(files: files)
        } else if path.hasSuffix(".index.json") {
            try self.init(indexPath: path)
        } else {
            try self.init(files: [try SafetensorsFile(path: path)])
        }
    }

    /// Opens the shards an index names and checks that every tensor it maps is in its shard.
    public convenience init(indexPath: String) throws(SluiceError) {
        guard let data = FileManager.default.contents(atPath: indexPath) else { throw .io(path: indexPath, reason: "cannot read") }
        let result: Result<JSONValue, JSONParseError> = data.withUnsafeBytes { b in
            do throws(JSONParseError) { return .success(try HeaderJSONParser.parse(b, maxDepth: 8)) } catch { return .failure(error) }
        }
        let parsed: JSONValue
        switch result {
        case .success(let v): parsed = v
        case .failure(let error):
            throw .invalidCheckpoint(file: indexPath, tensor: nil, reason: "not valid JSON at byte \(error.offset): \(error.reason)")
        }
        guard case .object(let top) = parsed, let mapValue = top.first(where: { $0.0 == "weight_map" })?.1,
              case .object(let map) = mapValue else {
            throw .invalidCheckpoint(file: indexPath, tensor: nil, reason: "no \"weight_map\" object")
        }
        let folder = (indexPath as NSString).deletingLastPathComponent
        var shardNames: [String] = []
        var expected: [(String, String)] = []
        for (tensor, v) in map {
            guard case .string(let shard) = v, !shard.isEmpty, !shard.contains("/"), shard != ".." else {
                throw .invalidCheckpoint(file: indexPath, tensor: tensor, reason: "weight_map value is not a shard file name")
            }
            if !shardNames.contains(shard) { shardNames.append(shard) }
            expected.append((tensor, shard))
        }
        var files: [SafetensorsFile] = []
        for shard in shardNames.sorted() {
            let p = folder.isEmpty ? shard : folder + "/" + shard
            guard FileManager.default.fileExists(atPath: p) else {
                throw .io(path: p, reason: "shard named by \(indexPath) is missing")
            }
            files.append(try SafetensorsFile(path: p))
        }
        try self.init(files: files)
        for (tensor, shard) in expected {
            guard let f = file(containing: tensor), (f.path as NSString).lastPathComponent == shard else {
                throw .invalidCheckpoint(file: indexPath, tensor: tensor, reason: "index maps it to \(shard), which does not hold it")
            }
        }
    }

    public var names: [String] { files.flatMap(\.names) }

    public func file(containing name: String) -> SafetensorsFile? { owner[name].map { files[$0] } }

    public func info(_ name: String) -> TensorInfo? { file(containing: name)?.info(name) }

    public func tensor(_ name: String) throws(SluiceError) -> Tensor {
        guard let f = file(containing: name) else {
            throw .missingTensor(key: name, file: files.map(\.path).joined(separator: ", "))
        }
        return try f.tensor(name)
    }
}
