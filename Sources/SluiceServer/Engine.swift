import Foundation
import SluiceCore
import SluiceMemory
import SluicePipelines

/// What a job reports while it runs.
public struct JobEvent: Codable, Sendable {
    public var job: String
    public var state: JobState
    public var phase: String?
    public var step: Int = 0
    public var steps: Int = 0
    /// Image i of the job's count (1-based).
    public var image: Int = 0
    public var images: Int = 0
    public var secondsPerStep: Double?
    public var etaSeconds: Double?
    /// Low-resolution preview PNG, base64 (latents through `LatentPreview`).
    public var preview: String?
    /// From a worker through the queue: it stored this step's preview in the database (notifications
    /// stay small); the front server reads it and sends `preview` on. Never sent to clients.
    public var previewStored: Bool?
    public var memory: MemorySample?
    /// Gallery ids of the finished images.
    public var results: [String] = []
    public var error: String?
    public var position: Int?
}

public enum JobState: String, Codable, Sendable {
    case queued, running, done, failed, cancelled
    /// Done, failed or cancelled: nothing more happens to the job.
    public var isFinal: Bool { self != .queued && self != .running }
}

/// Memory now: this process's resident set, and the (simulated) device's use when there is a budget.
public struct MemorySample: Codable, Sendable {
    public var time: Double
    public var hostBytes: Int
    public var deviceBytes: Int?
    public var devicePeakBytes: Int?

    public static func now(device: (used: Int, peak: Int)? = nil) -> MemorySample {
        MemorySample(time: Date().timeIntervalSince1970, hostBytes: HostMemory.residentBytes(),
                     deviceBytes: device?.used, devicePeakBytes: device?.peak)
    }
}

/// The loaded model and how it runs: one generation at a time, on a thread of its own (generation
/// is CPU-bound and synchronous; the server's event loops stay free).
public final class Engine: @unchecked Sendable {
    public let pipeline: any TextToImagePipeline
    public let memory: MemoryOptions
    public let modelName: String
    public private(set) var preview: LatentPreview?
    public private(set) var lastReport: RunReport?
    /// A live preview every this many steps, and at the last (0: none; see `ServeOptions.previewEvery`).
    public var previewEvery = 1
    private let lock = NSLock()

    public init(pipeline: any TextToImagePipeline, memory: MemoryOptions, modelName: String) {
        self.pipeline = pipeline
        self.memory = memory
        self.modelName = modelName
    }

    /// One small generation before the server says it is ready: pages the weights in, checks the
    /// whole path, and fits the preview map.
    public func warmUp() throws -> Double {
        let t0 = Date()
        let side = max(pipeline.defaults.sizeMultiple * 4, 64)
        let r = pipeline.request(prompt: "warm-up", seed: 0, steps: 2, width: side, height: side)
        let result = try pipeline.generate(r, memory: memory)
        // The warm-up's report is what start-up logs the plan from.
        lastReport = result.report
        preview = try? LatentPreview.fit(latents: result.latents, image: result.image)
        return Date().timeIntervalSince(t0)
    }

    /// Generates `params.count` images one after another (seed, seed+1, …), reporting progress.
    public func run(_ params: JobParameters, job: String, report: @escaping (JobEvent) -> Void, isCancelled: @escaping () -> Bool) throws -> [(png: [UInt8], seconds: Double, seed: UInt64)] {
        lock.lock()
        defer { lock.unlock() }
        var out: [(png: [UInt8], seconds: Double, seed: UInt64)] = []
        for i in 0..<params.count {
            var r = params.request
            r.seed = params.seed &+ UInt64(i)
            let t0 = Date()
            var lastLatents: Tensor?
            var event = JobEvent(job: job, state: .running, images: params.count)
            event.image = i + 1
            let result = try pipeline.generate(r, memory: memory, progress: { p in
                event.phase = p.phase.rawValue
                event.step = p.phase == .denoise ? p.step : (p.phase == .decode ? r.steps : 0)
                event.steps = r.steps
                event.preview = nil  // a preview belongs to the step it was made at
                if p.phase == .denoise, p.step > 0 {
                    event.secondsPerStep = p.elapsed / Double(p.step)
                    event.etaSeconds = event.secondsPerStep! * Double(p.total - p.step)
                    let due = self.previewEvery > 0 && (p.step % self.previewEvery == 0 || p.step == p.total)
                    if due, let preview = self.preview, let l = lastLatents, let png = try? preview.png(l) {
                        event.preview = Data(png).base64EncodedString()
                    }
                }
                event.memory = .now(device: p.deviceBytes.map { ($0, p.devicePeakBytes ?? $0) })
                report(event)
            }, afterStep: { _, latents in lastLatents = latents }, isCancelled: isCancelled)
            lastReport = result.report
            let text = PNGParameters.text(r, model: modelName, sampler: pipeline.sampler(for: r))
            let (px, w, h) = try PNGWriter.rgb8(result.image)
            out.append((try PNGWriter.encode(pixels: px, width: w, height: h, text: [("parameters", text)]), Date().timeIntervalSince(t0), r.seed))
        }
        return out
    }
}
