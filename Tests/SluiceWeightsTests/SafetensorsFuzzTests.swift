import Foundation
import SluiceCore
import SluiceTestSupport
import SluiceWeights
import Testing

/// Deterministic mutation fuzzing of the header parser: 100,000 mutated headers and truncations of
/// a valid file. Each must parse or throw a SluiceError — no crash, no hang — and a successful
/// parse must only describe bytes inside the file: every accepted tensor's data is read (widened to
/// f32 where it is a float), and every 50th accepted file is written out and read back through
/// `SafetensorsFile`, the reader models use. Set SLUICE_FUZZ_ITERATIONS to run longer.
@Suite struct SafetensorsFuzzTests {
    static let seedFile: [UInt8] = {
        let tensors: [(String, Tensor)] = [
            ("blocks.0.attn.to_q.weight", Tensor((0..<12).map(Float.init), shape: [3, 4])),
            ("blocks.0.norm.bias", Tensor([1, 2, 3], shape: [3])),
            ("empty", Tensor(zeros: [0, 5])),
            ("scalar", Tensor([42], shape: [])),
        ]
        return try! SafetensorsWriter.encode(tensors, metadata: ["format": "pt", "note": "\u{1F30A} \"q\""])
    }()

    static let tokens: [[UInt8]] = ["{", "}", "[", "]", ",", ":", "\"", "\\", "\\u", "\\ud800", "0", "-", "1e999",
                                    "18446744073709551616", "9223372036854775807", "F32", "BF16", "dtype", "shape",
                                    "data_offsets", "__metadata__", "null", "true", " ", "\u{FF}", "\u{0}"].map { Array($0.utf8) }

    @Test func mutatedHeadersNeverCrash() {
        let iterations = Int(ProcessInfo.processInfo.environment["SLUICE_FUZZ_ITERATIONS"] ?? "") ?? 100_000
        var rng = SplitMix(seed: 0x51CE)
        let seed = Self.seedFile
        let headerLen = Int(seed[0]) | Int(seed[1]) << 8
        var accepted = 0, rejected = 0
        for _ in 0..<iterations {
            var b = seed
            let mutations = 1 + rng.below(4)
            for _ in 0..<mutations {
                if b.count < 9 { break }
                let at = 8 + rng.below(min(headerLen, b.count - 8))
                switch rng.below(7) {
                case 0: b[at] = UInt8(truncatingIfNeeded: rng.next())                      // random byte
                case 1: b[at] ^= UInt8(1 << rng.below(8))                                  // bit flip
                case 2: b.replaceSubrange(at..<min(b.count, at + 1 + rng.below(8)), with: Self.tokens[rng.below(Self.tokens.count)])
                case 3: b.removeSubrange(at..<min(b.count, at + 1 + rng.below(16)))        // delete
                case 4: b = Array(b.prefix(rng.below(b.count + 1)))                        // truncate anywhere
                case 5: for k in 0..<8 where rng.below(3) == 0 { b[k] = UInt8(truncatingIfNeeded: rng.next()) }  // length field
                default: if at < b.count, b[at] >= 0x30, b[at] <= 0x39 { b[at] = UInt8(0x30 + rng.below(10)) }   // digit swap
                }
            }
            let result: Result<SafetensorsHeader, SluiceError> = b.withUnsafeBytes { buf in
                do throws(SluiceError) { return .success(try SafetensorsHeader.parse(buf, fileSize: buf.count, file: "fuzz")) }
                catch { return .failure(error) }
            }
            switch result {
            case .success(let h):
                accepted += 1
                for t in h.tensors {
                    #expect(h.dataStart + t.dataRange.upperBound <= b.count)
                    #expect(t.dataRange.count == t.shape.count * t.dtype.byteSize)
                    let bytes = Array(b[(h.dataStart + t.dataRange.lowerBound)..<(h.dataStart + t.dataRange.upperBound)])
                    let tensor = Tensor(bytes: bytes, dtype: t.dtype, shape: t.shape)
                    if t.dtype.isFloatStorage { #expect((try? tensor.toFloats())?.count == t.shape.count) }
                }
                if accepted % 50 == 1 { readBack(b, expected: h) }
            case .failure(let e):
                rejected += 1
                if case .invalidCheckpoint(let file, _, _) = e { #expect(file == "fuzz") } else { Issue.record("unexpected \(e)") }
            }
        }
        #expect(rejected > iterations / 2)  // the mutations do reach the validator…
        #expect(accepted > iterations / 100)  // …and some leave a valid file, whose data is then read
    }

    /// The file on disk, opened and every tensor read through the mapped reader.
    func readBack(_ bytes: [UInt8], expected h: SafetensorsHeader) {
        let path = NSTemporaryDirectory() + "sluice-fuzz-\(UUID().uuidString).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path) }
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else { Issue.record("cannot write \(path)"); return }
        do {
            let f = try SafetensorsFile(path: path)
            #expect(f.names.count == h.tensors.count)
            for name in f.names {
                let t = try f.tensor(name)
                #expect(t.byteCount == t.shape.count * t.dtype.byteSize)
                if t.dtype.isFloatStorage { #expect(try t.toFloats().count == t.shape.count) }
            }
        } catch {
            Issue.record("an accepted header failed to open or read: \(error)")
        }
    }
}

import Foundation
