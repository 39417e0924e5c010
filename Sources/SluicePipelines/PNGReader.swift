import CPNG
import Foundation
import SluiceCore

/// Reads an image file for image-to-image through libpng's simplified API: any PNG (grey, palette,
/// 16-bit, with alpha) comes out as 8-bit RGB — alpha composited on black, as PIL's convert("RGB")
/// drops it — and errors name the file, never a longjmp or a crash on a truncated or hostile file.
public enum PNGReader {
    /// The largest image accepted (pixels): a 16k × 16k init image is far past any model's side.
    public static let maxPixels = 16384 * 16384

    public static func read(path: String) throws(SluiceError) -> (pixels: [UInt8], width: Int, height: Int) {
        guard let data = FileManager.default.contents(atPath: path) else { throw .io(path: path, reason: "cannot read the file") }
        return try decode(Array(data), name: path)
    }

    public static func decode(_ bytes: [UInt8], name: String) throws(SluiceError) -> (pixels: [UInt8], width: Int, height: Int) {
        guard bytes.count >= 8, bytes.prefix(8).elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else {
            throw .io(path: name, reason: "not a PNG file (only PNG init images are read)")
        }
        // libpng reads from this buffer until png_image_finish_read: it must outlive both calls.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 16)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: bytes)
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        let begun = png_image_begin_read_from_memory(&image, buffer.baseAddress, buffer.count)
        guard begun != 0 else { throw .io(path: name, reason: "libpng: \(PNGWriter.message(&image))") }
        defer { png_image_free(&image) }
        let w = Int(image.width), h = Int(image.height)
        guard w > 0, h > 0, w * h <= maxPixels else {
            throw .io(path: name, reason: "\(w)×\(h) pixels is outside 1…\(maxPixels)")
        }
        image.format = UInt32(PNG_FORMAT_RGB)
        var out = [UInt8](repeating: 0, count: w * h * 3)
        var black = png_color(red: 0, green: 0, blue: 0)
        let ok = out.withUnsafeMutableBytes { png_image_finish_read(&image, &black, $0.baseAddress, 0, nil) }
        guard ok != 0 else { throw .io(path: name, reason: "libpng: \(PNGWriter.message(&image))") }
        return (out, w, h)
    }

    /// [1, 3, H, W] in [−1, 1] (diffusers' VaeImageProcessor: x / 255 · 2 − 1).
    public static func tensor(pixels: [UInt8], width: Int, height: Int) -> Tensor {
        var v = [Float](repeating: 0, count: 3 * width * height)
        for i in 0..<(width * height) { for c in 0..<3 { v[c * width * height + i] = Float(pixels[i * 3 + c]) / 255 * 2 - 1 } }
        return Tensor(v, shape: [1, 3, height, width])
    }
}
