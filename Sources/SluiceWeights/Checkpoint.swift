import Foundation
import SluiceCore

/// Several safetensors files read as one: a sharded checkpoint with its
/// `*.safetensors.index.json`, a folder of shards, or a single file. It may present its tensors under
/// other names (`presenting`): a checkpoint in another project's key layout then reads as ours.
public final class Checkpoint: Sendable {
    public let files: [SafetensorsFile]
    private let owner: [String: Int]
    private let presentation: Presentation?

    /// The names a checkpoint presents, in order, and the recipe behind each.
    private struct Presentation: Sendable {
        let names: [String]
        let recipes: [String: TensorRecipe]
    }

    public convenience init(files: [SafetensorsFile]) throws(SluiceError) {
        var owner: [String: Int] = [:]
        for (i, f) in files.enumerated() {
            for name in f.names {
                if let j = owner[name] {
                    throw .invalidCheckpoint(file: f.path, tensor: name, reason: "also present in \(files[j].path)")
                }
                owner[name] = i
            }
        }
        self.init(files: files, owner: owner, presentation: nil)
    }

    private init(files: [SafetensorsFile], owner: [String: Int], presentation: Presentation?) {
        self.files = files
        self.owner = owner
        self.presentation = presentation
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

    /// The names `tensor` answers to: the presented ones when this checkpoint presents, else the stored ones.
    public var names: [String] { presentation?.names ?? storedNames }

    /// The tensors' names as the files store them.
    public var storedNames: [String] { files.flatMap(\.names) }

    /// How a presented name is made (nil for a stored name of a checkpoint that does not present).
    public func recipe(for name: String) -> TensorRecipe? { presentation?.recipes[name] }

    /// The file holding the named tensor (for a presented name, the file holding its source).
    public func file(containing name: String) -> SafetensorsFile? {
        guard let presentation else { return owner[name].map { files[$0] } }
        return presentation.recipes[name].flatMap { owner[$0.source] }.map { files[$0] }
    }

    /// The named tensor's entry; for a presented name its dtype and presented shape, and the stored bytes
    /// it reads (for swapped halves or a transpose: all of its source's, in another order).
    public func info(_ name: String) -> TensorInfo? {
        guard let presentation else { return file(containing: name)?.info(name) }
        guard let recipe = presentation.recipes[name], let stored = file(containing: name)?.info(recipe.source),
              case .success(let shape) = recipe.presentedShape(from: stored.shape) else { return nil }
        return TensorInfo(name: name, dtype: stored.dtype, shape: shape, dataRange: recipe.dataRange(in: stored))
    }

    public func tensor(_ name: String) throws(SluiceError) -> Tensor {
        guard let f = file(containing: name) else {
            throw .missingTensor(key: name, file: files.map(\.path).joined(separator: ", "))
        }
        guard let recipe = presentation?.recipes[name] else { return try f.tensor(name) }
        do {
            return try recipe.apply(to: try f.tensor(recipe.source))
        } catch {
            throw .invalidCheckpoint(file: f.path, tensor: name, reason: "made from stored '\(recipe.source)': \(error)")
        }
    }

    /// These files with their tensors presented under other names, each made by its recipe from a stored
    /// tensor (recipes name the files' own tensors, even when this checkpoint already presents). Every
    /// recipe is checked here: a missing source, a range outside it, a shape the form cannot take or a name
    /// given twice fails, naming the presented tensor and the stored one.
    public func presenting(_ recipes: [(name: String, recipe: TensorRecipe)]) throws(SluiceError) -> Checkpoint {
        var table: [String: TensorRecipe] = [:]
        for (name, recipe) in recipes {
            guard let i = owner[recipe.source], let stored = files[i].info(recipe.source) else {
                throw .invalidCheckpoint(file: files.map(\.path).joined(separator: ", "), tensor: name,
                                         reason: "its source '\(recipe.source)' is not stored here")
            }
            if case .failure(let mismatch) = recipe.presentedShape(from: stored.shape) {
                throw .invalidCheckpoint(file: files[i].path, tensor: name, reason: "made from stored '\(recipe.source)': \(mismatch.reason)")
            }
            guard table.updateValue(recipe, forKey: name) == nil else {
                throw .invalidCheckpoint(file: files[i].path, tensor: name, reason: "presented twice (the second from '\(recipe.source)')")
            }
        }
        return Checkpoint(files: files, owner: owner, presentation: Presentation(names: recipes.map(\.name), recipes: table))
    }
}
