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

/// The special tokens a folder names in tokenizer_config.json, then special_tokens_map.json (transformers
/// reads both; the config wins). A token is written either as its text or as an AddedToken object
/// (`{"content": …}`, older saves add `"__type": "AddedToken"`).
struct SpecialTokenNames {
    var values: [String: String] = [:]
    /// `extra_ids` (T5's sentinel count), when the config gives it.
    var extraIDs: Int?
    /// `additional_special_tokens`, in order.
    var additional: [String] = []

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
                values[key] = s
            }
            if let n = TokenizerFiles.int(obj["extra_ids"]) { extraIDs = n }
            if let list = obj["additional_special_tokens"] as? [Any] {
                additional = list.compactMap(Self.content)
            }
        }
    }

    static func content(_ v: Any) -> String? {
        if let s = v as? String { return s }
        if let d = v as? [String: Any], let s = d["content"] as? String { return s }
        return nil
    }

    subscript(key: String) -> String? { values[key] }
}
