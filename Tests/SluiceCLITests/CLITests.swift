import Foundation
import SluiceTestSupport
import Testing

/// `sluice` as a user runs it: the binary SwiftPM built beside this test bundle, in a subprocess.
/// Each bad invocation must end with exit status 1 and one clear line naming the flag — never a
/// crash, a hang, or a file half written.
@Suite struct CLITests {
    static let model = Fixtures.directory + "/models/z-image-tiny"

    static var binary: String {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("sluice").path
        if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        return URL(fileURLWithPath: Fixtures.directory).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".build/release/sluice").path
    }

    struct Run { let status: Int32; let output: String }

    /// Runs `sluice args…` in `folder` (a fresh temporary one by default), at most `timeout` seconds.
    static func sluice(_ args: [String], in folder: String? = nil, environment: [String: String] = [:], timeout: Double = 120) throws -> Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        let dir = folder ?? NSTemporaryDirectory() + "sluice-cli-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        // Read to the end of the pipe (EOF comes when the process exits or is stopped by the timer):
        // polling `availableData` in a loop condition dropped whatever that read returned, and CI lost a line.
        let stop = DispatchWorkItem { p.terminate() }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: stop)
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        stop.cancel()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }

    func files(_ dir: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() }

    @Test func versionIsPrinted() throws {
        let r = try Self.sluice(["--version"])
        #expect(r.status == 0 && r.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3, "\(r.output)")
    }

    /// A size far beyond the model's: exit 1 with the numbers, no crash (the process used to die in a
    /// precondition), and no file.
    @Test func hugeSizeIsAnErrorWithNumbers() throws {
        let dir = NSTemporaryDirectory() + "sluice-cli-\(UUID().uuidString)"
        let r = try Self.sluice(["generate", "-m", Self.model, "-p", "x", "--width", "100000", "--height", "100000", "-o", "x.png"], in: dir)
        #expect(r.status == 1, "\(r.status): \(r.output)")
        #expect(r.output.contains("--width") && r.output.contains("4096") && r.output.contains("GiB"), "\(r.output)")
        #expect(files(dir).isEmpty)
    }

    /// A bad --out or --report fails before any model is touched: with a model that does not exist, the
    /// error is the output's, so nothing was opened first.
    @Test(arguments: [
        (["--out", "nodir/sub/x.png"], "--out nodir/sub/x.png: the folder"),
        (["--out", "/proc/x.png"], "--out /proc/x.png: cannot write in /proc"),
        (["--out", "ok.png", "--report", "/proc/r.json"], "--report /proc/r.json: cannot write in /proc"),
        (["--out", "x.jpg"], "must end in .png"),
    ])
    func badOutputsFailBeforeLoading(args: [String], message: String) throws {
        let r = try Self.sluice(["generate", "--model", "/no/such/model", "-p", "x"] + args)
        #expect(r.status == 1 && r.output.contains(message) && !r.output.contains("/no/such/model"), "\(r.output)")
    }

    /// No --seed (or -1) draws one, says which, and stores it in the PNG; negative numbers parse as
    /// values, so `--steps -1` is refused for what it is; --cfg-scale is --guidance; --count numbers
    /// the files; without --out the next free sluice-NNNNN.png is written here.
    @Test func seedsCountsAndDefaults() throws {
        let dir = NSTemporaryDirectory() + "sluice-cli-\(UUID().uuidString)"
        let r = try Self.sluice(["generate", "-m", Self.model, "-p", "a red fox", "-s", "-1", "-W", "64", "-H", "64", "--steps", "1",
                                 "--cfg-scale", "1.5", "--count", "2"], in: dir)
        #expect(r.status == 0, "\(r.output)")
        let seeds = r.output.split(separator: "\n").compactMap { $0.hasPrefix("seed ") ? UInt64($0.split(separator: " ")[1]) : nil }
        #expect(seeds.count == 2 && seeds[1] == seeds[0] + 1, "\(r.output)")
        #expect(files(dir) == ["sluice-00001.png", "sluice-00002.png"], "\(files(dir))")
        let png = try Data(contentsOf: URL(fileURLWithPath: dir + "/sluice-00001.png"))
        let text = String(decoding: png, as: UTF8.self)
        #expect(text.contains("Seed: \(seeds.first ?? 0),") && text.contains("CFG scale: 1.5"), "parameters chunk")
        let again = try Self.sluice(["generate", "-m", Self.model, "-p", "x", "-W", "64", "-H", "64", "--steps", "1"], in: dir)
        #expect(again.status == 0 && files(dir).contains("sluice-00003.png"), "\(again.output)")
        let steps = try Self.sluice(["generate", "-m", Self.model, "-p", "x", "--steps", "-1"])
        #expect(steps.status == 1 && steps.output.contains("--steps: -1 must be") && !steps.output.contains("Missing value"), "\(steps.output)")
    }

    /// Stable Diffusion from the command line: a sampler by name, image to image from a PNG the previous run
    /// wrote (its size the default), a single-file checkpoint with its config folder, and refusals naming
    /// the flag.
    @Test func samplersImageToImageAndSingleFiles() throws {
        let sd = Fixtures.directory + "/models/sd15-tiny", dir = NSTemporaryDirectory() + "sluice-cli-\(UUID().uuidString)"
        let a = try Self.sluice(["generate", "-m", sd, "-p", "a red fox", "-W", "48", "-H", "32", "--steps", "3", "--sampler", "DPM++ 2M Karras", "-o", "a.png"], in: dir)
        #expect(a.status == 0, "\(a.output)")
        let textA = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: dir + "/a.png"))) ?? Data(), as: UTF8.self)
        #expect(textA.contains("Sampler: DPM++ 2M Karras, Schedule type: Karras"), "parameters chunk")
        let b = try Self.sluice(["generate", "-m", sd, "-p", "a red fox", "--steps", "5", "--sampler", "euler_a", "--init-image", "a.png",
                                 "--strength", "0.6", "-o", "b.png"], in: dir)
        #expect(b.status == 0, "\(b.output)")
        let textB = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: dir + "/b.png"))) ?? Data(), as: UTF8.self)
        #expect(textB.contains("Denoising strength: 0.6") && textB.contains("Size: 48x32") && textB.contains("Sampler: Euler a"), "parameters chunk")
        let single = try Self.sluice(["generate", "-m", Fixtures.directory + "/sd-single-file/sd15_bf16.safetensors", "--config", sd, "-p", "x",
                                      "-W", "48", "-H", "32", "--steps", "2", "-o", "c.png"], in: dir)
        #expect(single.status == 0 && files(dir).contains("c.png"), "\(single.output)")
        try Data("not a png".utf8).write(to: URL(fileURLWithPath: dir + "/bad.png"))
        let bad = try Self.sluice(["generate", "-m", sd, "-p", "x", "--init-image", "bad.png", "-o", "d.png"], in: dir)
        #expect(bad.status == 1 && bad.output.contains("--init-image") && bad.output.contains("bad.png") && !files(dir).contains("d.png"), "\(bad.output)")
        let sampler = try Self.sluice(["generate", "-m", sd, "-p", "x", "-W", "48", "-H", "32", "--sampler", "LMS", "-o", "e.png"], in: dir)
        #expect(sampler.status == 1 && sampler.output.contains("--sampler") && sampler.output.contains("DPM++ 2M"), "\(sampler.output)")
        let zimage = try Self.sluice(["generate", "-m", Self.model, "-p", "x", "--sampler", "DDIM", "-o", "f.png"], in: dir)
        #expect(zimage.status == 1 && zimage.output.contains("--sampler"), "\(zimage.output)")
    }

    @Test func devicesAndLimits() throws {
        let vulkan = try Self.sluice(["generate", "-m", Self.model, "-p", "x", "--device", "vulkan:9", "-W", "64", "-H", "64", "-o", "x.png"])
        #expect(vulkan.status == 1 && vulkan.output.contains("--device"), "\(vulkan.output)")
        let cpu = try Self.sluice(["generate", "-m", Self.model, "-p", "x", "-W", "64", "-H", "64", "--steps", "1", "-o", "x.png"])
        #expect(cpu.status == 0 && cpu.output.contains("computing on cpu"), "\(cpu.output)")
        let ram = try Self.sluice(["generate", "-m", Self.model, "-p", "x", "--ram-limit", "1G", "-o", "x.png"])
        #expect(ram.status == 1 && ram.output.contains("--ram-limit"), "\(ram.output)")
        for port in ["70000", "0"] {
            let serve = try Self.sluice(["serve", "-m", Self.model, "--port", port])
            #expect(serve.status == 1 && serve.output.contains("--port: \(port) must be 1…65535"), "\(serve.output)")
        }
        let gallery = try Self.sluice(["serve", "-m", Self.model, "--gallery", "/proc/sluice-gallery"])
        #expect(gallery.status == 1 && gallery.output.contains("/proc/sluice-gallery") && !gallery.output.contains("NSCocoa"), "\(gallery.output)")
        let queue = try Self.sluice(["serve", "-m", Self.model, "--queue", "http://db.lan/x"])
        #expect(queue.status == 1 && queue.output.contains("--queue http://db.lan/x: not a postgres://"), "\(queue.output)")
        let route = try Self.sluice(["serve", "-m", Self.model, "--route", "x"])
        #expect(route.status == 1 && route.output.contains("--route applies only with --queue"), "\(route.output)")
        let models = try Self.sluice(["models", "--cache", "/no/such/cache"])
        #expect(models.status == 1 && models.output.contains("no such folder"), "\(models.output)")
    }

    /// `sluice models --dir` lists a folder's single-file checkpoints with the family and components their
    /// headers show (an unreadable file gets its own line), as text and JSON; a missing folder is exit 1.
    @Test func modelsDirListsSingleFiles() throws {
        let dir = NSTemporaryDirectory() + "sluice-cli-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, source) in [("sd15.safetensors", "sd-single-file/sd15_bf16.safetensors"), ("xl.safetensors", "sd-single-file/sdxl_bf16.safetensors"),
                               ("text.safetensors", "sd-single-file/sd15_f16_text_only.safetensors"),
                               ("flux.safetensors", "flux-single-file/bfl_fp8_comfy.safetensors"),
                               ("other.safetensors", "flux-single-file/hostile_unknown.safetensors")] {
            try FileManager.default.copyItem(atPath: Fixtures.directory + "/" + source, toPath: dir + "/" + name)
        }
        try Data("not a safetensors file".utf8).write(to: URL(fileURLWithPath: dir + "/broken.safetensors"))
        try Data().write(to: URL(fileURLWithPath: dir + "/notes.txt"))
        let r = try Self.sluice(["models", "--dir", dir])
        #expect(r.status == 0, "\(r.output)")
        let lines = r.output.split(separator: "\n").map(String.init)
        #expect(lines.count == 6, "\(r.output)")
        #expect(lines.first { $0.hasPrefix("sd15.safetensors ") }?.hasSuffix("sd15: unet, vae, text_encoder") == true, "\(r.output)")
        #expect(lines.first { $0.hasPrefix("xl.safetensors ") }?.hasSuffix("sdxl: unet, vae, text_encoder, text_encoder_2") == true, "\(r.output)")
        #expect(lines.first { $0.hasPrefix("text.safetensors ") }?.hasSuffix("sd15: text_encoder") == true, "\(r.output)")
        #expect(lines.first { $0.hasPrefix("flux.safetensors ") }?.hasSuffix("flux: transformer") == true, "\(r.output)")
        #expect(lines.first { $0.hasPrefix("other.safetensors ") }?.contains("unknown layout: 4 tensors, e.g. 'encoder.layers.0.attention.wk.weight'") == true, "\(r.output)")
        #expect(lines.first { $0.hasPrefix("broken.safetensors ") }?.contains("unreadable: ") == true, "\(r.output)")

        let j = try Self.sluice(["models", "--dir", dir, "--json"])
        #expect(j.status == 0, "\(j.output)")
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(j.output.utf8)) as? [[String: Any]])
        let xl = try #require(entries.first { $0["file"] as? String == "xl.safetensors" })
        #expect(xl["family"] as? String == "sdxl" && xl["supported"] as? Bool == true)
        #expect(xl["components"] as? [String] == ["unet", "vae", "text_encoder", "text_encoder_2"])

        let missing = try Self.sluice(["models", "--dir", dir + "/nope"])
        #expect(missing.status == 1 && missing.output.contains("--dir \(dir)/nope: no such folder"), "\(missing.output)")
    }

    /// Port taken: said in words, not NIO's function names.
    @Test func portInUseIsSaidInWords() throws {
        let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socket) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, len) } }
        _ = listen(socket, 1)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &len) } }
        let port = Int(UInt16(bigEndian: addr.sin_port))
        let r = try Self.sluice(["serve", "-m", Self.model, "--port", "\(port)"], timeout: 60)
        #expect(r.status == 1 && r.output.contains("is in use by another program") && !r.output.contains("errno"), "\(r.output)")
    }

    /// A status line from `GET path` on 127.0.0.1:port (nil when nothing answers).
    static func httpStatus(port: Int, path: String, headers: [String] = []) -> Int? {
        http("GET", port: port, path: path, headers: headers)?.status
    }

    /// One HTTP/1.1 request to 127.0.0.1:port on a connection of its own (closed by the server after the
    /// answer): the status and the body; nil when nothing answers.
    static func http(_ method: String, port: Int, path: String, headers: [String] = [], json: String? = nil) -> (status: Int, body: String)? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard ok == 0 else { return nil }
        var lines = ["\(method) \(path) HTTP/1.1", "Host: 127.0.0.1:\(port)", "Connection: close"] + headers
        if let json { lines += ["Content-Type: application/json", "Content-Length: \(json.utf8.count)"] }
        let request = Array((lines.joined(separator: "\r\n") + "\r\n\r\n" + (json ?? "")).utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard response.count > 12, let status = Int(String(decoding: response[9..<12], as: UTF8.self)) else { return nil }
        let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
        return (status, body)
    }

    /// The API key from $SLUICE_API_KEY or --api-key-file, never needed on the command line: without
    /// it the API answers 401, with it as a bearer token 200.
    @Test(arguments: ["environment", "file"])
    func apiKeyFromTheEnvironmentOrAFile(source: String) throws {
        let dir = NSTemporaryDirectory() + "sluice-cli-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "k3y-from-\(source)\n".write(toFile: dir + "/key", atomically: true, encoding: .utf8)
        let port = 20000 + Int.random(in: 0..<20000)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = ["serve", "-m", Self.model, "--port", "\(port)", "--gallery", dir + "/gallery"] + (source == "file" ? ["--api-key-file", dir + "/key"] : [])
        p.environment = ProcessInfo.processInfo.environment.merging(source == "environment" ? ["SLUICE_API_KEY": "k3y-from-environment"] : [:]) { $1 }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { p.terminate(); p.waitUntilExit() }
        let deadline = Date().addingTimeInterval(60)
        while Self.httpStatus(port: port, path: "/ready") != 200 && Date() < deadline { usleep(100_000) }
        #expect(Self.httpStatus(port: port, path: "/ready") == 200)
        #expect(Self.httpStatus(port: port, path: "/api/status") == 401)
        #expect(Self.httpStatus(port: port, path: "/api/status", headers: ["Authorization: Bearer k3y-from-\(source)"]) == 200)
        #expect(Self.httpStatus(port: port, path: "/api/status?key=k3y-from-\(source)") == 401)
    }
}
