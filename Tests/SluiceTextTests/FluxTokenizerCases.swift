import Foundation
import SluiceTestSupport
import Testing

/// Tests/Fixtures/flux_tokenizer_ids.json (tools/reference/make_flux_tokenizers.py): transformers 5.23's ids
/// for the tiny CLIP and T5 tokenizers under Tests/Fixtures/tokenizers/.
enum FluxTokenizerCases {
    struct Case { let text: String; let ids: [Int]; let maxLength: Int? }

    static var root: [String: Any] {
        let data = try! Data(contentsOf: URL(fileURLWithPath: Fixtures.directory + "/flux_tokenizer_ids.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    static func family(_ name: String) -> [String: Any] { root[name] as! [String: Any] }

    static func folder(_ name: String) -> String { Fixtures.directory + "/" + (family(name)["folder"] as! String) }

    /// `key` is a list of the family: "cases", "padded", …
    /// Every case of `family` (or of its `variant`) encoded by `encode` gives transformers' ids.
    static func expect(_ family: String, variant: String? = nil, sourceLocation: SourceLocation, _ encode: (String) throws -> [Int]) throws {
        let cases = variant.map { Self.cases(family, variant: $0) } ?? Self.cases(family)
        #expect(cases.count >= 30, sourceLocation: sourceLocation)
        for c in cases {
            let got = try encode(c.text)
            #expect(got == c.ids, "\(c.text.debugDescription): got \(got)", sourceLocation: sourceLocation)
        }
    }

    static func cases(_ name: String, _ key: String = "cases") -> [Case] {
        decode(family(name)[key]!)
    }

    /// The main cases as a variant gives them: the fixture lists only the strings whose ids differ.
    static func cases(_ name: String, variant: String) -> [Case] {
        let changed = decode((family(name)["variants"] as! [String: Any])[variant]!)
        return cases(name).map { c in changed.first { $0.text == c.text } ?? c }
    }

    private static func decode(_ list: Any) -> [Case] {
        (list as! [[String: Any]]).map {
            Case(text: $0["text"] as! String, ids: ($0["ids"] as! [NSNumber]).map(\.intValue), maxLength: ($0["max_length"] as? NSNumber)?.intValue)
        }
    }

    /// A fresh folder holding copies of `files` from `source`, removed by `cleanup`.
    static func scratchFolder(copying files: [String], from source: String) throws -> String {
        let fm = FileManager.default
        let dir = NSTemporaryDirectory() + "sluice-tok-\(UUID().uuidString)"
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for f in files { try fm.copyItem(atPath: source + "/" + f, toPath: dir + "/" + f) }
        return dir
    }

    /// `to` replaced by a copy of `from`.
    static func scratchCopy(_ from: String, to: String) throws {
        try? FileManager.default.removeItem(atPath: to)
        try FileManager.default.copyItem(atPath: from, toPath: to)
    }

    static func cleanup(_ dir: String) { try? FileManager.default.removeItem(atPath: dir) }

    static func editJSON(_ path: String, _ edit: (inout [String: Any]) -> Void) throws {
        var obj = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        edit(&obj)
        try JSONSerialization.data(withJSONObject: obj).write(to: URL(fileURLWithPath: path))
    }
}
