import Foundation
import SluiceCore
import SluiceTestSupport
import SluiceWeights
import Testing

func tempDir() -> String {
    let dir = NSTemporaryDirectory() + "sluice-test-\(UUID().uuidString)"
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// A safetensors file made of an 8-byte length, the given header text, and `data` bytes.
func rawFile(header: String, data: Int, lengthOverride: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    let n = lengthOverride ?? UInt64(h.count)
    return (0..<8).map { UInt8((n >> (8 * UInt64($0))) & 0xFF) } + h + [UInt8](repeating: 7, count: data)
}

@Suite struct SafetensorsTests {
    @Test func writesAndReadsBackZeroCopy() throws {
        let dir = tempDir()
        let a = Tensor([1, 2, 3, 4, 5, 6], shape: [2, 3])
        let b = try Tensor([0.5, -2, 448, 1e-3], shape: [4]).converted(to: .bf16)
        try SafetensorsWriter.write([("b.weight", b), ("a.weight", a)], metadata: ["format": "pt"], to: dir + "/m.safetensors")
        let f = try SafetensorsFile(path: dir + "/m.safetensors")
        #expect(f.names == ["a.weight", "b.weight"])
        #expect(f.metadata == ["format": "pt"])
        #expect(try f.tensor("a.weight").toFloats() == [1, 2, 3, 4, 5, 6])
        #expect(try f.tensor("b.weight").dtype == .bf16)
        #expect(try f.tensor("b.weight").toFloats() == (try b.toFloats()))
        if case .view = try f.tensor("a.weight").storage.origin {} else { Issue.record("tensor is not a view of the mapping") }
        #expect(throws: SluiceError.missingTensor(key: "c", file: dir + "/m.safetensors")) { try f.tensor("c") }
        // The reference writer's layout: data 8-byte aligned.
        #expect(f.header.dataStart % 8 == 0)
    }

    /// The format lets a header end anywhere, so an F32 tensor may start off a 4-byte boundary: it is
    /// read into aligned memory (the values intact), never through a misaligned pointer.
    @Test func misalignedTensorsAreReadSafely() throws {
        let values: [Float] = [1.5, -2, 3.25, 1e-3, 7]
        var header = #"{"x":{"dtype":"F32","shape":[5],"data_offsets":[1,21]},"y":{"dtype":"BF16","shape":[1],"data_offsets":[21,23]}}"#
        while (8 + header.utf8.count + 1) % 4 == 0 { header += " " }
        var bytes = rawFile(header: header, data: 0)
        #expect((bytes.count + 1) % 4 != 0)  // x's first byte is not 4-byte aligned
        bytes.append(0)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
        bytes += [0x80, 0x3F]  // bf16 1.0, at an odd offset
        let path = tempDir() + "/misaligned.safetensors"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let f = try SafetensorsFile(path: path)
        let x = try f.tensor("x"), y = try f.tensor("y")
        #expect(Int(bitPattern: x.rawPointer) % 4 == 0 && Int(bitPattern: y.rawPointer) % 2 == 0)
        #expect(try x.toFloats() == values)
        #expect(x.f32[2] == 3.25)
        #expect(try y.toFloats() == [1])
    }

    @Test func readsTheReferenceLibrarysFiles() throws {
        // ops.safetensors was written by the Python `safetensors` package.
        let f = try Fixtures.file("ops.safetensors")
        #expect(f.names.count > 50)
        #expect(try f.tensor("matmul.b.bf16").dtype == .bf16)
        #expect(try f.tensor("attn.mask.bool").dtype == .bool)
    }

    @Test func shardedCheckpointWithIndexOpensAsOne() throws {
        let dir = tempDir()
        try SafetensorsWriter.write([("x.0", Tensor([1, 2], shape: [2]))], to: dir + "/model-00001-of-00002.safetensors")
        try SafetensorsWriter.write([("x.1", Tensor([3], shape: [1]))], to: dir + "/model-00002-of-00002.safetensors")
        let index = #"{"metadata": {"total_size": 12}, "weight_map": {"x.0": "model-00001-of-00002.safetensors", "x.1": "model-00002-of-00002.safetensors"}}"#
        try index.write(toFile: dir + "/model.safetensors.index.json", atomically: true, encoding: .utf8)
        let c = try Checkpoint(path: dir)
        #expect(Set(c.names) == ["x.0", "x.1"])
        #expect(try c.tensor("x.1").toFloats() == [3])
        // A missing shard is named.
        try FileManager.default.removeItem(atPath: dir + "/model-00002-of-00002.safetensors")
        #expect(throws: SluiceError.io(path: dir + "/model-00002-of-00002.safetensors", reason: "shard named by \(dir)/model.safetensors.index.json is missing")) {
            try Checkpoint(path: dir)
        }
    }

    /// Each hostile file gives a clear error naming the file, and the tensor where it is one tensor's fault.
    @Test(arguments: [
        ("truncated before the length", Array([UInt8](repeating: 0, count: 5)), "shorter than the 8-byte header length", nil),
        ("header length past the end", rawFile(header: "{}", data: 0, lengthOverride: 1000), "runs past the end of the file", nil),
        ("header length absurd", rawFile(header: "{}", data: 0, lengthOverride: UInt64.max), "exceeds the", nil),
        ("invalid JSON", rawFile(header: #"{"a": {"dtype": "F32",}"#, data: 0), "not valid JSON", nil),
        ("not UTF-8", rawFile(header: "{\"\u{FF}\": 1}", data: 0).enumerated().map { $0.offset == 10 ? 0xFF : $0.element }, "not valid UTF-8", nil),
        ("unknown dtype", rawFile(header: #"{"w": {"dtype": "F12", "shape": [1], "data_offsets": [0, 4]}}"#, data: 4), "unknown dtype 'F12'", "w"),
        ("shape product overflow", rawFile(header: #"{"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}}"#, data: 4), "more elements than fit in 64 bits", "w"),
        ("bytes overflow", rawFile(header: #"{"w": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 4]}}"#, data: 4), "overflows 64 bits", "w"),
        ("integer beyond 64 bits", rawFile(header: #"{"w": {"dtype": "F32", "shape": [99999999999999999999], "data_offsets": [0, 4]}}"#, data: 4), "does not fit in 64 bits", nil),
        ("span mismatch", rawFile(header: #"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}"#, data: 8), "needs 8 bytes, data_offsets span 4", "w"),
        ("offsets outside data", rawFile(header: #"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, data: 4), "past the 4-byte data area", "w"),
        ("overlapping tensors", rawFile(header: #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#, data: 12), "overlap tensor 'a'", "b"),
        ("reversed offsets", rawFile(header: #"{"w": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}}"#, data: 4), "end before they begin", "w"),
        ("negative dimension", rawFile(header: #"{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#, data: 4), "not a non-negative integer", "w"),
        ("fractional dimension", rawFile(header: #"{"w": {"dtype": "F32", "shape": [2, 1.5], "data_offsets": [0, 4]}}"#, data: 4), "shape [2,1.5] has a dimension", "w"),
        ("duplicate name", rawFile(header: #"{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "w": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}"#, data: 2), "appears twice", "w"),
        ("header not an object", rawFile(header: "[1, 2]", data: 0), "not a JSON object", nil),
        ("deep nesting", rawFile(header: String(repeating: "[", count: 100000), data: 0), "nesting deeper than", nil),
    ] as [(String, [UInt8], String, String?)])
    func hostileFilesAreRejectedClearly(name: String, bytes: [UInt8], message: String, tensor: String?) throws {
        let dir = tempDir()
        let path = dir + "/bad.safetensors"
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        let outcome: Result<SafetensorsFile, SluiceError>
        do throws(SluiceError) { outcome = .success(try SafetensorsFile(path: path)) } catch { outcome = .failure(error) }
        switch outcome {
        case .success:
            Issue.record("\(name): accepted")
        case .failure(.invalidCheckpoint(let file, let t, let reason)):
            #expect(file == path, "\(name)")
            #expect(t == tensor, "\(name): tensor \(String(describing: t))")
            #expect(reason.contains(message), "\(name): \(reason)")
            // Words and the file's own text, never a Swift type's name.
            #expect(!reason.contains("JSONValue") && !reason.contains("Sluice") && !reason.contains("Swift."), "\(name): \(reason)")
        case .failure(let other):
            Issue.record("\(name): \(other)")
        }
    }

    @Test func emptyAndMissingFiles() {
        let dir = tempDir()
        _ = FileManager.default.createFile(atPath: dir + "/empty.safetensors", contents: Data())
        #expect(throws: SluiceError.self) { try SafetensorsFile(path: dir + "/empty.safetensors") }
        #expect(throws: SluiceError.self) { try SafetensorsFile(path: dir + "/nope.safetensors") }
        #expect(throws: SluiceError.self) { try SafetensorsFile(path: dir) }
    }
}
