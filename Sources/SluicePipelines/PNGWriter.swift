import CPNG
import Foundation
import SluiceCore

/// Writes 8-bit RGB PNGs through libpng's simplified API (errors come back as values, never a longjmp),
/// with the generation parameters in a `parameters` text chunk as AUTOMATIC1111 writes them (tEXt when
/// the text is Latin-1, iTXt/UTF-8 otherwise). The file appears atomically: temp file, then rename.
public enum PNGWriter {
    /// image: [3, H, W] f32 in [0, 1] (values outside are clamped), rounded as diffusers' numpy_to_pil does.
    public static func rgb8(_ image: Tensor) throws(SluiceError) -> (pixels: [UInt8], width: Int, height: Int) {
        guard image.shape.rank == 3, image.shape[0] == 3 else {
            throw .shapeMismatch(operation: "PNG", expected: "[3, H, W]", found: "\(image.shape)")
        }
        let h = image.shape[1], w = image.shape[2]
        let v = try image.toFloats()
        var px = [UInt8](repeating: 0, count: h * w * 3)
        for c in 0..<3 { for i in 0..<(h * w) {
            let x = min(max(v[c * h * w + i], 0), 1) * 255
            px[i * 3 + c] = UInt8((x).rounded(.toNearestOrEven))
        } }
        return (px, w, h)
    }

    public static func encode(pixels: [UInt8], width: Int, height: Int, text: [(String, String)] = []) throws(SluiceError) -> [UInt8] {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        image.width = UInt32(width)
        image.height = UInt32(height)
        image.format = UInt32(PNG_FORMAT_RGB)
        var size: png_alloc_size_t = 0
        let ok1 = pixels.withUnsafeBytes { png_image_write_to_memory(&image, nil, &size, 0, $0.baseAddress, 0, nil) }
        guard ok1 != 0, size > 0 else { throw .io(path: "PNG", reason: "libpng: \(message(&image))") }
        var out = [UInt8](repeating: 0, count: Int(size))
        let ok2 = out.withUnsafeMutableBytes { o in
            pixels.withUnsafeBytes { png_image_write_to_memory(&image, o.baseAddress, &size, 0, $0.baseAddress, 0, nil) }
        }
        guard ok2 != 0 else { throw .io(path: "PNG", reason: "libpng: \(message(&image))") }
        out.removeLast(out.count - Int(size))
        // Text chunks go right after IHDR (8-byte signature + 25-byte IHDR chunk).
        var chunks: [UInt8] = []
        for (key, value) in text { chunks += textChunk(key: key, value: value) }
        out.insert(contentsOf: chunks, at: 33)
        return out
    }

    static func message(_ image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    static func textChunk(key: String, value: String) -> [UInt8] {
        let latin1 = value.unicodeScalars.allSatisfy { $0.value <= 0xFF }
        var data = Array(key.utf8) + [0]
        let type: [UInt8]
        if latin1 {
            type = Array("tEXt".utf8)
            data += value.unicodeScalars.map { UInt8($0.value) }
        } else {
            type = Array("iTXt".utf8)
            data += [0, 0, 0, 0] + Array(value.utf8)  // uncompressed, no language, no translated keyword
        }
        var chunk = withUnsafeBytes(of: UInt32(data.count).bigEndian, Array.init) + type + data
        chunk += withUnsafeBytes(of: crc32(type + data).bigEndian, Array.init)
        return chunk
    }

    static let crcTable: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    /// Encodes and writes `path` atomically: a half-written PNG never appears under that name.
    public static func write(_ image: Tensor, to path: String, text: [(String, String)] = []) throws(SluiceError) {
        let (px, w, h) = try rgb8(image)
        let bytes = try encode(pixels: px, width: w, height: h, text: text)
        let url = URL(fileURLWithPath: path)
        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
        do { try Data(bytes).write(to: tmp) } catch {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: tmp)
            throw .io(path: path, reason: "cannot write in \(url.deletingLastPathComponent().path) (\(reason))")
        }
        // rename(2) replaces the target atomically.
        guard rename(tmp.path, path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: tmp)
            throw .io(path: path, reason: "cannot write: \(reason)")
        }
    }
}

/// Sluice's version, as PNGs and the servers' APIs report it.
public enum SluiceVersion { public static let string = "0.2.0" }

/// The `parameters` text AUTOMATIC1111 writes into its PNGs; `sluice generate` and `sluice serve`
/// write the same, so other tools read the settings back.
public enum PNGParameters {
    public static func text(_ r: GenerationRequest, model: String, sampler: (name: String, schedule: String)) -> String {
        var s = r.prompt
        if (r.guidance > 0 || r.trueCFGScale > 1) && !r.negativePrompt.isEmpty { s += "\nNegative prompt: \(r.negativePrompt)" }
        s += "\nSteps: \(r.steps), Sampler: \(sampler.name), Schedule type: \(sampler.schedule), CFG scale: \(r.guidance), "
        // Forge's names for FLUX's settings.
        if r.trueCFGScale != 1 { s += "True CFG scale: \(r.trueCFGScale), " }
        if let n = r.maxSequenceLength { s += "Max sequence length: \(n), " }
        if r.initImage != nil { s += "Denoising strength: \(r.strength), " }
        s += "Seed: \(r.seed), Size: \(r.width)x\(r.height), Model: \(model), Version: Sluice \(SluiceVersion.string)"
        return s
    }
}
