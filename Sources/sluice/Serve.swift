import ArgumentParser
import Foundation
import SluiceBackends
import SluiceCore
import SluiceMemory
import SluicePipelines
import SluiceQueue
import SluiceServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a model over HTTP: web UI, job queue with live progress, gallery, OpenAI and AUTOMATIC1111 APIs.")

    @Option(name: [.customShort("m"), .long], help: "A diffusers folder, or a repo id in the Hugging Face cache.") var model: String
    @Option(help: "Address to bind (loopback by default; anything else needs --api-key or --insecure).") var host = "127.0.0.1"
    @Option(parsing: .unconditional, help: "Port (1…65535).") var port = 7860
    @Option(help: "Compute device: cpu, vulkan or vulkan:N (as `sluice generate --device`).") var device = "cpu"
    @Option(help: "A single .safetensors file replacing the model's transformer (as `sluice generate --transformer`).") var transformer: String?
    @Option(help: "A single-file SD1.5/SDXL checkpoint's configs and tokenizers: a diffusers folder or a repo id in the Hugging Face cache (default: the base model's repository, e.g. stabilityai/stable-diffusion-xl-base-1.0, when cached).") var config: String?
    @Option(help: "What linear layers compute in: f32 or bf16 (as `sluice generate --compute`).") var compute: DType = .f32
    @OptionGroup var memory: MemoryFlags
    @Option(parsing: .unconditional, help: "Most jobs waiting or running; more are refused with 429.") var queueSize = 16
    @Option(help: "Gallery folder (default: $XDG_DATA_HOME/sluice/gallery or ~/.local/share/sluice/gallery).") var gallery: String?
    @Option(help: "Require this key on every API call (a bearer token, or the web UI's login). Visible to other users in `ps`: prefer $SLUICE_API_KEY or --api-key-file.") var apiKey: String?
    @Option(help: "Read the API key from this file (its first line).") var apiKeyFile: String?
    @Flag(help: "Allow a non-loopback bind without an API key.") var insecure = false
    @Option(parsing: .unconditional, help: "Largest request body accepted, in bytes.") var maxBody = 1 << 20
    @Option(parsing: .unconditional, help: "Largest body of a request that may carry an init image (img2img, /api/jobs; models with image to image), in bytes.") var maxImageBody = 32 << 20
    @Option(parsing: .unconditional, help: "Seconds a request body may take to arrive.") var bodyTimeout = 10.0
    @Option(help: "A browser origin allowed to call the API cross-site (e.g. https://app.example); repeat for more. None by default.") var corsOrigin: [String] = []
    @Option(help: "A host name, beyond loopback's and the bound address, that requests may name (e.g. a local alias); repeat for more.") var allowedHost: [String] = []
    @Option(parsing: .unconditional, help: "Most images the gallery keeps; the oldest are removed first.") var galleryMaxImages = 5000
    @Option(help: "Most bytes the gallery keeps (e.g. 5G); the oldest images are removed first.") var galleryMaxBytes: ByteSize?
    @Option(parsing: .unconditional, help: "Most jobs one client (remote address) may have waiting or running; more get 429.") var maxJobsPerClient = 4
    @Option(parsing: .unconditional, help: "A live preview every N denoising steps (0: none). On a GPU each preview waits for the step and reads the latents back.") var previewEvery = 1
    @Option(help: "Put jobs in this PostgreSQL queue for `sluice worker`s instead of running them here: postgres://user[:password]@host[:port]/database. --queue-size is then the most jobs waiting for this model.") var queue: String?
    @Option(help: "With --queue: the model name workers take these jobs under (default: --model as given; a worker's --route must match).") var route: String?

    func run() async throws {
        let memory = try self.memory.options(device: device)
        guard (1...1024).contains(queueSize) else { throw CommandError(message: "--queue-size must be 1…1024") }
        guard (1...1024).contains(maxJobsPerClient) else { throw CommandError(message: "--max-jobs-per-client must be 1…1024") }
        guard galleryMaxImages >= 1 else { throw CommandError(message: "--gallery-max-images must be at least 1") }
        guard bodyTimeout > 0 && bodyTimeout <= 600 else { throw CommandError(message: "--body-timeout must be in (0, 600] seconds") }
        guard (0...1000).contains(previewEvery) else { throw CommandError(message: "--preview-every must be 0…1000 (0: no previews)") }
        var o = ServeOptions()
        o.host = host
        o.port = port
        o.queueSize = queueSize
        o.maxJobsPerClient = maxJobsPerClient
        o.apiKey = try resolveAPIKey()
        o.insecure = insecure
        o.maxBodyBytes = maxBody
        o.maxImageBodyBytes = maxImageBody
        o.bodyTimeoutSeconds = bodyTimeout
        o.corsOrigins = corsOrigin
        o.allowedHosts = allowedHost
        o.galleryMaxImages = galleryMaxImages
        o.galleryMaxBytes = galleryMaxBytes?.bytes ?? o.galleryMaxBytes
        o.device = device
        o.transformer = transformer
        o.config = config
        o.compute = compute
        o.previewEvery = previewEvery
        o.queueURL = queue
        o.route = route
        if route != nil && queue == nil { throw CommandError(message: "--route applies only with --queue") }
        do { try SluiceServerMain.checkSafety(o) } catch { throw CommandError(message: "\(error)") }
        if apiKey != nil { stderrLine("note: --api-key is visible to other users of this machine (ps); $SLUICE_API_KEY or --api-key-file are not") }
        try await withFlagsAsync {
            do {
                try await SluiceServerMain.run(model: model, options: o, memory: memory, galleryDirectory: gallery ?? Gallery.defaultDirectory())
            } catch let e as QueueError { throw CommandError(message: "\(e)") }
        }
    }

    /// --api-key, else --api-key-file's first line, else $SLUICE_API_KEY; an empty key is refused.
    func resolveAPIKey() throws -> String? {
        var key = apiKey
        if key == nil, let path = apiKeyFile {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw CommandError(message: "--api-key-file \(path): cannot be read")
            }
            key = text.split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        }
        if key == nil, let env = ProcessInfo.processInfo.environment["SLUICE_API_KEY"] { key = env }
        if let key, key.trimmingCharacters(in: .whitespaces).isEmpty { throw CommandError(message: "the API key is empty") }
        return key
    }
}
