import ArgumentParser
import Foundation
import SluiceBackends
import SluiceMemory
import SluicePipelines
import SluiceServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a model over HTTP: web UI, job queue with live progress, gallery, OpenAI and AUTOMATIC1111 APIs.")

    @Option(help: "A diffusers folder, or a repo id in the Hugging Face cache.") var model: String
    @Option(help: "Address to bind (loopback by default; anything else needs --api-key or --insecure).") var host = "127.0.0.1"
    @Option(help: "Port.") var port = 7860
    @Option(help: "Compute device: cpu, vulkan or vulkan:N (as `sluice generate --device`).") var device = "cpu"
    @OptionGroup var memory: MemoryFlags
    @Option(help: "Most jobs waiting or running; more are refused with 429.") var queueSize = 16
    @Option(help: "Gallery folder (default: $XDG_DATA_HOME/sluice/gallery or ~/.local/share/sluice/gallery).") var gallery: String?
    @Option(help: "Require this bearer token on every API call.") var apiKey: String?
    @Flag(help: "Allow a non-loopback bind without --api-key.") var insecure = false
    @Option(help: "Largest request body accepted, in bytes.") var maxBody = 1 << 20

    func run() async throws {
        let memory = try self.memory.options()
        guard (1...1024).contains(queueSize) else { throw CommandError(message: "--queue-size must be 1…1024") }
        var o = ServeOptions()
        o.host = host
        o.port = port
        o.queueSize = queueSize
        o.apiKey = apiKey
        o.insecure = insecure
        o.maxBodyBytes = maxBody
        o.device = device
        do { try SluiceServerMain.checkSafety(o) } catch { throw CommandError(message: "\(error)") }
        try await withFlagsAsync {
            try await SluiceServerMain.run(model: model, options: o, memory: memory, galleryDirectory: gallery ?? Gallery.defaultDirectory())
        }
    }
}
