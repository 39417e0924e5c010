import Foundation
import SluiceCore

/// Finished images on disk: `<id>.png` and `<id>.json` (its parameters and timings) per image, each
/// written to a temp file and renamed into place — the JSON last, so an entry is listed only when both
/// files are whole, and a kill mid-write leaves at most a temp file, removed at the next start.
public final class Gallery: @unchecked Sendable {
    public struct Entry: Codable, Sendable, Equatable {
        public let id: String
        public let created: Double
        public let parameters: JobParameters
        public let seconds: Double
        public let model: String

        public init(id: String, created: Double, parameters: JobParameters, seconds: Double, model: String) {
            self.id = id; self.created = created; self.parameters = parameters; self.seconds = seconds; self.model = model
        }
    }

    public let directory: String
    /// At most this many images and bytes (PNG + JSON) are kept; adding past either evicts the oldest.
    public let maxImages: Int
    public let maxBytes: Int
    private let lock = NSLock()

    public init(directory: String, maxImages: Int = .max, maxBytes: Int = .max) throws(SluiceError) {
        self.directory = directory
        self.maxImages = maxImages
        self.maxBytes = maxBytes
        do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
            throw .io(path: directory, reason: "cannot be created as the gallery folder (\(String(cString: strerror(errno))))")
        }
        guard access(directory, W_OK) == 0 else { throw .io(path: directory, reason: "is not writable: the gallery needs a folder it can write") }
        // Leftovers of a write that was interrupted.
        for f in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where f.hasPrefix(".") && f.hasSuffix(".tmp") {
            try? FileManager.default.removeItem(atPath: directory + "/" + f)
        }
    }

    /// The default: $XDG_DATA_HOME/sluice/gallery, else ~/.local/share/sluice/gallery.
    public static func defaultDirectory() -> String {
        let env = ProcessInfo.processInfo.environment
        let base = env["XDG_DATA_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? FileManager.default.homeDirectoryForCurrentUser.path + "/.local/share"
        return base + "/sluice/gallery"
    }

    static func validID(_ id: String) -> Bool {
        !id.isEmpty && id.count <= 64 && id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
    }

    func write(_ data: Data, to name: String) throws {
        let tmp = directory + "/.\(name).\(UUID().uuidString).tmp"
        try data.write(to: URL(fileURLWithPath: tmp))
        guard rename(tmp, directory + "/" + name) == 0 else {
            try? FileManager.default.removeItem(atPath: tmp)
            throw RequestError(field: "gallery", reason: "cannot write \(name): \(String(cString: strerror(errno)))", status: 500)
        }
    }

    public func add(png: [UInt8], entry: Entry) throws {
        try write(Data(png), to: entry.id + ".png")
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        try write(try e.encode(entry), to: entry.id + ".json")
        evictOldest()
    }

    /// Removes the oldest images until at most `maxImages` and `maxBytes` remain.
    func evictOldest() {
        var entries = list(page: 0, perPage: .max).entries
        func bytes(_ id: String) -> Int {
            [".png", ".json"].reduce(0) { $0 + (((try? FileManager.default.attributesOfItem(atPath: directory + "/" + id + $1))?[.size] as? Int) ?? 0) }
        }
        var total = entries.reduce(0) { $0 + bytes($1.id) }
        while let oldest = entries.last, entries.count > maxImages || total > maxBytes {
            total -= bytes(oldest.id)
            _ = delete(oldest.id)
            entries.removeLast()
        }
    }

    /// Newest first.
    public func list(page: Int, perPage: Int) -> (entries: [Entry], total: Int) {
        lock.lock()
        defer { lock.unlock() }
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var entries: [Entry] = []
        for f in files where f.hasSuffix(".json") && !f.hasPrefix(".") {
            let id = String(f.dropLast(5))
            guard FileManager.default.fileExists(atPath: directory + "/" + id + ".png"),
                  let data = FileManager.default.contents(atPath: directory + "/" + f),
                  let e = try? JSONDecoder().decode(Entry.self, from: data) else { continue }
            entries.append(e)
        }
        entries.sort { ($0.created, $0.id) > ($1.created, $1.id) }
        let start = min(entries.count, max(0, page).multipliedReportingOverflow(by: perPage).partialValue)
        return (Array(entries[start..<(entries.count - start < perPage ? entries.count : start + perPage)]), entries.count)
    }

    public func entry(_ id: String) -> Entry? {
        guard Self.validID(id), let data = FileManager.default.contents(atPath: directory + "/" + id + ".json") else { return nil }
        return try? JSONDecoder().decode(Entry.self, from: data)
    }

    public func png(_ id: String) -> Data? {
        guard Self.validID(id), entry(id) != nil else { return nil }
        return FileManager.default.contents(atPath: directory + "/" + id + ".png")
    }

    /// Removes an image and its parameters; false when there was no such entry.
    public func delete(_ id: String) -> Bool {
        guard Self.validID(id), entry(id) != nil else { return false }
        // The JSON first: from then on the entry is not listed, whatever happens to the PNG.
        try? FileManager.default.removeItem(atPath: directory + "/" + id + ".json")
        try? FileManager.default.removeItem(atPath: directory + "/" + id + ".png")
        return true
    }
}
