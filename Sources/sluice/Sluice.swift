import ArgumentParser
import Foundation
import SluiceCore
import SluiceMemory
import SluicePipelines

@main
struct Sluice: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "Diffusion image generation for models larger than your device's memory.",
        version: SluiceVersion.string,
        subcommands: [Generate.self, Serve.self, WorkerCommand.self, QueueCommand.self, Models.self, Devices.self, Bench.self, PlanCommand.self, Info.self]
    )
}

/// Parses a dtype as users type it (`fp8`, `bf16`, …); help lists only the types weights are stored in.
extension DType: ExpressibleByArgument {
    public init?(argument: String) { self.init(userName: argument) }
    public static var allValueStrings: [String] { allCases.filter(\.isFloatStorage).map(\.rawValue) }
}

/// `--vram-limit 8G` and friends.
struct ByteSize: ExpressibleByArgument {
    let bytes: Int
    init?(argument: String) {
        guard let b = parseByteSize(argument) else { return nil }
        bytes = b
    }
}

/// An error for a person: printed as "Error: message", without the usage text.
struct CommandError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

extension Parameter {
    /// The flag that sets this parameter on the command line (`vramLimit` → `--vram-limit`).
    var flag: String {
        "--" + words.joined(separator: "-")
    }
}

/// Runs `body`, turning library errors that name a parameter into messages that name its flag.
func withFlags<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let SluiceError.invalidParameter(p, reason) {
        throw CommandError(message: "\(p.flag): \(reason)")
    }
}

func withFlagsAsync<T>(_ body: () async throws -> T) async throws -> T {
    do { return try await body() } catch let SluiceError.invalidParameter(p, reason) {
        throw CommandError(message: "\(p.flag): \(reason)")
    }
}

func stderrLine(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

/// Pretty, key-sorted JSON: the one form plans and reports are printed and written in.
func prettyJSON<T: Encodable>(_ value: T) throws -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys]
    return String(decoding: try e.encode(value), as: UTF8.self)
}
