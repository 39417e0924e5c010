import Foundation
import SluiceCore

/// Reading the files of a Hugging Face tokenizer folder: errors name the file (and the field) at fault.
enum TokenizerFiles {
    static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    static func bytes(_ path: String) throws(SluiceError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .io(path: path, reason: exists(path) ? "cannot be read" : "missing")
        }
        return [UInt8](data)
    }

    static func text(_ path: String) throws(SluiceError) -> String {
        let b = try bytes(path)
        guard let s = String(bytes: b, encoding: .utf8) else { throw .invalidArgument(name: path, reason: "is not UTF-8 text") }
        return s
    }

    static func jsonObject(_ path: String) throws(SluiceError) -> [String: Any] {
        let data = Data(try bytes(path))
        guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw .invalidArgument(name: path, reason: "is not a JSON object")
        }
        return obj
    }

    /// A JSON number as an Int, when it is a whole number in range.
    static func int(_ value: Any?) -> Int? {
        guard let d = double(value) else { return nil }
        guard d.isFinite, d == d.rounded(), abs(d) < 1e15 else { return nil }
        return Int(d)
    }

    static func double(_ value: Any?) -> Double? {
        (value as? NSNumber)?.doubleValue
    }
}

/// What a folder's tokenizer_config.json and special_tokens_map.json say about special tokens
/// (transformers reads both; the config wins). A token is written either as its text or as an
/// AddedToken object (`{"content": …}`, older saves add `"__type": "AddedToken"`).
struct TokenizerConfig {
    /// bos_token, eos_token, unk_token, pad_token → their text.
    var names: [String: String] = [:]
    /// `extra_ids` (T5's sentinel count), when the config gives it.
    var extraIDs: Int?
    /// `additional_special_tokens`, in order.
    var additional: [String] = []
    /// tokenizer_config.json's `added_tokens_decoder` (id → token and its flags): transformers applies
    /// these over tokenizer.json's own, so a `normalized: true` there makes the token match in the
    /// normalised (for CLIP, lower-cased) text.
    var addedTokens: [AddedToken] = []

    init() {}

    init(directory: String) throws(SluiceError) {
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            let path = directory + "/" + name
            guard TokenizerFiles.exists(path) else { continue }
            let obj = try TokenizerFiles.jsonObject(path)
            for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
                guard let v = obj[key], !(v is NSNull) else { continue }
                guard let s = Self.content(v) else {
                    throw .invalidArgument(name: "\(path): \(key)", reason: "is neither a string nor an object with 'content'")
                }
                names[key] = s
            }
            if let n = TokenizerFiles.int(obj["extra_ids"]) { extraIDs = n }
            if let list = obj["additional_special_tokens"] as? [Any] {
                additional = list.compactMap(Self.content)
            }
            if let decoder = obj["added_tokens_decoder"] as? [String: Any] {
                addedTokens = []
                for (key, value) in decoder.sorted(by: { $0.key < $1.key }) {
                    guard var entry = value as? [String: Any], let id = Int(key) else {
                        throw .invalidArgument(name: "\(path): added_tokens_decoder.\(key)", reason: "is not an id with a token object")
                    }
                    entry["id"] = NSNumber(value: id)
                    addedTokens.append(try AddedToken(json: entry, file: "\(path): added_tokens_decoder", index: id))
                }
            }
        }
    }

    static func content(_ v: Any) -> String? {
        if let s = v as? String { return s }
        if let d = v as? [String: Any], let s = d["content"] as? String { return s }
        return nil
    }

    subscript(key: String) -> String? { names[key] }

    /// `tokens` with the config's added tokens laid over them (same id: the config's flags win), then
    /// each of `specials` that is still missing as a raw-text token (transformers registers every named
    /// special token).
    func merging(_ tokens: [AddedToken], specials: [(String, Int)]) -> [AddedToken] {
        var out = tokens.filter { t in !addedTokens.contains { $0.id == t.id } } + addedTokens
        for (text, id) in specials where !out.contains(where: { $0.content == text }) {
            out.append(AddedToken(content: text, id: id))
        }
        return out
    }
}
