import CPNG
import Foundation
import SluiceCore
import SluiceModels
import SluicePipelines
import SluiceTestSupport
import SluiceWeights
import Testing

@Suite struct ModelLoadingTests {
    /// A fake Hugging Face cache: models--Org--Name/{refs/main, snapshots/<rev>/…} with every file a
    /// symlink into blobs/, the `sharded` checkpoints (paths without ".safetensors") in two shards with
    /// an index — as huggingface_hub lays it out. `prefixTextEncoder`: Z-Image's text encoder re-saved
    /// from a causal-LM class (keys under "model.", plus an lm_head).
    static func fakeCache(dropShard: Bool = false, source: String = "z-image-tiny", repo name: String = "Tiny-Org--Z-Image-Tiny",
                          sharded: [String] = ["transformer/diffusion_pytorch_model"], prefixTextEncoder: Bool = true) throws -> (cache: String, snapshot: String) {
        let fm = FileManager.default
        let cache = NSTemporaryDirectory() + "sluice-hub-\(UUID().uuidString)"
        let repo = cache + "/models--" + name
        let rev = "0123456789abcdef0123456789abcdef01234567"
        let snap = repo + "/snapshots/" + rev
        try fm.createDirectory(atPath: repo + "/blobs", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: repo + "/refs", withIntermediateDirectories: true)
        try (rev + "\n").write(toFile: repo + "/refs/main", atomically: true, encoding: .utf8)
        let src = Fixtures.directory + "/models/" + source
        var blob = 0
        func link(_ data: Data, _ rel: String) throws {
            blob += 1
            let b = repo + "/blobs/blob\(blob)"
            try data.write(to: URL(fileURLWithPath: b))
            let dst = snap + "/" + rel
            try fm.createDirectory(atPath: (dst as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try fm.createSymbolicLink(atPath: dst, withDestinationPath: b)
        }
        func write(_ tensors: [(String, Tensor)], _ rel: String) throws {
            let tmp = NSTemporaryDirectory() + "blob-\(UUID().uuidString).safetensors"
            try SafetensorsWriter.write(tensors, to: tmp)
            try link(try Data(contentsOf: URL(fileURLWithPath: tmp)), rel)
            try fm.removeItem(atPath: tmp)
        }
        for rel in try fm.subpathsOfDirectory(atPath: src).sorted() {
            var isDir: ObjCBool = false
            fm.fileExists(atPath: src + "/" + rel, isDirectory: &isDir)
            if isDir.boolValue || sharded.contains(where: { rel.hasPrefix($0) }) || (prefixTextEncoder && rel == "text_encoder/model.safetensors") { continue }
            try link(try Data(contentsOf: URL(fileURLWithPath: src + "/" + rel)), rel)
        }
        if prefixTextEncoder {
            let te = try SafetensorsFile(path: src + "/text_encoder/model.safetensors")
            var prefixed = try te.names.map { ("model." + $0, try te.tensor($0)) }
            prefixed.append(("lm_head.weight", try te.tensor("embed_tokens.weight")))
            try write(prefixed, "text_encoder/model.safetensors")
        }
        for stem in sharded {
            let f = try SafetensorsFile(path: src + "/" + stem + ".safetensors")
            let names = f.names.sorted()
            let halves = [Array(names[..<(names.count / 2)]), Array(names[(names.count / 2)...])]
            let folder = (stem as NSString).deletingLastPathComponent, base = (stem as NSString).lastPathComponent
            var map: [String: String] = [:]
            for (i, part) in halves.enumerated() {
                let shard = "\(base)-0000\(i + 1)-of-00002.safetensors"
                if !(dropShard && i == 1) { try write(try part.map { ($0, try f.tensor($0)) }, folder + "/" + shard) }
                for n in part { map[n] = shard }
            }
            try link(try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": map]), stem + ".safetensors.index.json")
        }
        return (cache, snap)
    }

    /// Qwen-Image as the Hub ships it: the transformer and the text encoder both sharded with indexes,
    /// read through the cache, give the folder's image.
    @Test func shardedCachedQwenImageGeneratesTheSameImage() throws {
        let (cache, _) = try Self.fakeCache(source: "qwen-image-tiny", repo: "Tiny-Org--Qwen-Image-Tiny",
                                            sharded: ["transformer/diffusion_pytorch_model", "text_encoder/model"], prefixTextEncoder: false)
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let dir = try ModelLocator.resolve("Tiny-Org/Qwen-Image-Tiny", environment: ["HF_HUB_CACHE": cache])
        let r = GenerationRequest(prompt: "a red fox", negativePrompt: "blurry", seed: 7, steps: 2, width: 64, height: 64, guidance: 4)
        let a = try QwenImagePipeline(directory: dir).generate(r).image.toFloats()
        let b = try QwenImagePipeline(directory: Fixtures.directory + "/models/qwen-image-tiny").generate(r).image.toFloats()
        #expect(a == b)
    }

    @Test func repoIdResolvesThroughTheCache() throws {
        let (cache, snap) = try Self.fakeCache()
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let dir = try ModelLocator.resolve("Tiny-Org/Z-Image-Tiny", environment: ["HF_HUB_CACHE": cache])
        #expect(dir == snap)
        #expect(throws: SluiceError.self) {
            try ModelLocator.resolve("Tiny-Org/Z-Image-Tiny", environment: ["HF_HOME": cache + "-elsewhere"])
        }
    }

    @Test func shardedCachedModelGeneratesTheSameImage() throws {
        let (cache, snap) = try Self.fakeCache()
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let r = GenerationRequest(prompt: "a red fox", seed: 7, steps: 2, width: 64, height: 64, guidance: 0)
        let a = try ZImagePipeline(directory: snap).generate(r).image.toFloats()
        let b = try ZImagePipeline(directory: Fixtures.directory + "/models/z-image-tiny").generate(r).image.toFloats()
        #expect(a == b)
        let listed = HubCacheScanner.scan(cache: cache)
        #expect(listed.count == 1 && listed[0].id == "Tiny-Org/Z-Image-Tiny" && listed[0].pipeline == "ZImagePipeline")
        #expect(listed[0].missing.isEmpty && listed[0].present.count == 5 && listed[0].fileCount >= 11, "\(listed[0])")
    }

    @Test func missingShardIsAClearError() throws {
        let (cache, snap) = try Self.fakeCache(dropShard: true)
        defer { try? FileManager.default.removeItem(atPath: cache) }
        do {
            _ = try ZImagePipeline(directory: snap)
            Issue.record("loading should fail")
        } catch let e as SluiceError {
            #expect("\(e)".contains("diffusion_pytorch_model-00002-of-00002.safetensors"), "\(e)")
        }
        let listed = HubCacheScanner.scan(cache: cache)
        #expect(listed[0].missing == ["transformer"], "\(listed[0])")
    }

    @Test func unknownModelSaysWhereItLooked() {
        do {
            _ = try ModelLocator.resolve("Nobody/Nothing", environment: ["HF_HUB_CACHE": "/tmp/no-cache-here"])
            Issue.record("should fail")
        } catch {
            #expect("\(error)".contains("/tmp/no-cache-here/models--Nobody--Nothing"))
        }
    }
}

@Suite struct PNGWriterTests {
    /// Written, then read back with libpng: same pixels; the parameters chunk is there, as tEXt for
    /// Latin-1 text and iTXt for the rest; a failed write leaves no file.
    @Test func roundTripWithParameters() throws {
        let h = 5, w = 7
        let values = (0..<(3 * h * w)).map { Float($0 % 17) / 16 }
        let path = NSTemporaryDirectory() + "sluice-\(UUID().uuidString).png"
        defer { try? FileManager.default.removeItem(atPath: path) }
        for text in ["a red fox\nSteps: 4, Seed: 7", "一只红色的狐狸 🦊\nSteps: 4"] {
            try PNGWriter.write(Tensor(values, shape: [3, h, w]), to: path, text: [("parameters", text)])
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            #expect(Array(bytes[0..<8]) == [137, 80, 78, 71, 13, 10, 26, 10])
            let type = text.unicodeScalars.allSatisfy { $0.value <= 0xFF } ? "tEXt" : "iTXt"
            let tag = Array(type.utf8) + Array("parameters".utf8) + [0]
            #expect(bytes.indices.contains { i in i + tag.count <= bytes.count && Array(bytes[i..<(i + tag.count)]) == tag })
            // libpng keeps the pointer until the read finishes: both calls inside one pinning.
            var px = [UInt8](repeating: 0, count: h * w * 3)
            let ok = bytes.withUnsafeBytes { buf -> Bool in
                var image = png_image()
                image.version = UInt32(PNG_IMAGE_VERSION)
                guard png_image_begin_read_from_memory(&image, buf.baseAddress, buf.count) != 0,
                      image.width == UInt32(w), image.height == UInt32(h) else { return false }
                image.format = UInt32(PNG_FORMAT_RGB)
                return px.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) } != 0
            }
            #expect(ok)
            for i in 0..<(h * w) { for c in 0..<3 {
                #expect(px[i * 3 + c] == UInt8((values[c * h * w + i] * 255).rounded(.toNearestOrEven)))
            } }
        }
        #expect(throws: SluiceError.self) { try PNGWriter.write(Tensor(values, shape: [3, h, w]), to: "/nonexistent-dir/x.png") }
        #expect(!FileManager.default.fileExists(atPath: "/nonexistent-dir/x.png"))
    }
}

/// A malformed config names the file and the field in words (never a decoder's internal text).
@Suite struct ConfigErrorTests {
    @Test(arguments: [
        (#"{"dim": "big"}"#, "'dim' must be an integer"),
        (#"{"dim": 32, "axes_dims": [8, "4", 4]}"#, "'axes_dims[1]' must be an integer"),
        ("{not json", "not valid JSON"),
    ])
    func malformedConfigsNameTheField(json: String, message: String) throws {
        let path = NSTemporaryDirectory() + "sluice-config-\(UUID().uuidString).json"
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = #expect(throws: SluiceError.self) { _ = try ModelLocator.config(ZImageConfig.self, at: path) }
        let text = error.map { "\($0)" } ?? ""
        #expect(text.hasPrefix(path) && text.contains(message), "\(text)")
        #expect(!text.contains("Swift") && !text.contains("CodingKeys") && !text.contains("DecodingError"), "\(text)")
    }
}
