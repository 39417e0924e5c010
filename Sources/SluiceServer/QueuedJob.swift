import Foundation
import SluicePipelines

/// A job as it travels through the PostgreSQL queue (`serve --queue` to `sluice worker`): its parameters
/// and, for image to image, the init image as a PNG (the parameters' own JSON never carries pixels, so
/// the gallery's records stay small).
public struct QueuedJob: Codable, Sendable {
    /// Bumped when the payload changes shape: a worker refuses a payload it does not know.
    public static let version = 1
    public var version: Int
    public var parameters: JobParameters
    public var initImagePNG: Data?

    public static func encode(_ p: JobParameters) throws -> Data {
        var png: Data?
        if let image = p.initImage {
            png = Data(try PNGWriter.encode(pixels: image.pixels, width: image.width, height: image.height))
        }
        return try JSONEncoder().encode(QueuedJob(version: version, parameters: p, initImagePNG: png))
    }

    /// The parameters back, the init image decoded; an unknown version or an unreadable image is an error
    /// that fails the job (it is never retried).
    public static func decode(_ payload: Data) throws -> JobParameters {
        let job = try JSONDecoder().decode(QueuedJob.self, from: payload)
        guard job.version == version else {
            throw RequestError(field: "payload", reason: "version \(job.version); this binary reads version \(version)")
        }
        var p = job.parameters
        if let png = job.initImagePNG {
            let image = try PNGReader.decode([UInt8](png), name: "the job's init image")
            p.initImage = InitImage(pixels: image.pixels, width: image.width, height: image.height)
        }
        return p
    }
}
