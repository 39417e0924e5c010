import Foundation
import SluiceCore

/// Byte-level BPE (GPT-2 style, as Qwen uses it) on raw bytes: a piece's UTF-8 bytes start as one
/// symbol each, and the adjacent pair with the lowest merge rank is merged until none can be.
/// Loaded from a Hugging Face `tokenizer.json` (vocab + merges, written in GPT-2's byte→char alphabet)
/// or from a tiktoken rank file (a pair's rank is the rank of the merged bytes).
public struct ByteLevelBPE: Sendable {
    /// Token bytes → id.
    let vocab: [[UInt8]: Int]
    /// id → token bytes.
    let tokens: [Int: [UInt8]]
    /// (left bytes ++ 0xFF-free separator ++ right bytes) → rank; see `pairKey`.
    let mergeRanks: [PairKey: Int]

    struct PairKey: Hashable, Sendable { let left: [UInt8]; let right: [UInt8] }

    public var size: Int { tokens.count }

    init(vocab: [[UInt8]: Int], mergeRanks: [PairKey: Int]) {
        self.vocab = vocab
        self.mergeRanks = mergeRanks
        var t: [Int: [UInt8]] = [:]
        for (k, v) in vocab { t[v] = k }
        tokens = t
    }

    /// GPT-2's reversible map from bytes to printable characters (tokenizer.json writes tokens in it).
    public static let byteToChar: [Character] = {
        var bs = Array(33...126) + Array(161...172) + Array(174...255)
        var cs = bs
        var n = 0
        for b in 0..<256 where !bs.contains(b) {
            bs.append(b)
            cs.append(256 + n)
            n += 1
        }
        var table = [Character](repeating: " ", count: 256)
        for (b, c) in zip(bs, cs) { table[b] = Character(Unicode.Scalar(UInt32(c))!) }
        return table
    }()

    static let charToByte: [Character: UInt8] = {
        var m: [Character: UInt8] = [:]
        for (b, c) in byteToChar.enumerated() { m[c] = UInt8(b) }
        return m
    }()

    static func bytes(ofEncoded s: String) -> [UInt8]? {
        var out: [UInt8] = []
        for ch in s {
            guard let b = charToByte[ch] else { return nil }
            out.append(b)
        }
        return out
    }

    /// From tokenizer.json's `model` object: `vocab` {token: id} and `merges` ["a b"] or [["a", "b"]].
    static func fromHuggingFace(model: [String: Any], file: String) throws(SluiceError) -> ByteLevelBPE {
        guard let v = model["vocab"] as? [String: Any], let merges = model["merges"] as? [Any] else {
            throw .invalidArgument(name: "\(file): model", reason: "a BPE model needs 'vocab' and 'merges'")
        }
        var vocab: [[UInt8]: Int] = [:]
        for (token, id) in v {
            guard let bytes = bytes(ofEncoded: token), let id = (id as? NSNumber)?.intValue else {
                throw .invalidArgument(name: "\(file): vocab", reason: "token '\(token)' is not byte-level")
            }
            vocab[bytes] = id
        }
        var ranks: [PairKey: Int] = [:]
        for (rank, m) in merges.enumerated() {
            let parts: [String]
            if let s = m as? String { parts = s.split(separator: " ", omittingEmptySubsequences: false).map(String.init) }
            else if let a = m as? [String] { parts = a }
            else { throw .invalidArgument(name: "\(file): merges[\(rank)]", reason: "is neither \"a b\" nor [a, b]") }
            guard parts.count == 2, let l = bytes(ofEncoded: parts[0]), let r = bytes(ofEncoded: parts[1]) else {
                throw .invalidArgument(name: "\(file): merges[\(rank)]", reason: "'\(m)' is not a pair of byte-level tokens")
            }
            if ranks[PairKey(left: l, right: r)] == nil { ranks[PairKey(left: l, right: r)] = rank }
        }
        return ByteLevelBPE(vocab: vocab, mergeRanks: ranks)
    }

    /// From a tiktoken rank file ("base64 rank" per line). Merge ranks follow the merged token's rank,
    /// which is how tiktoken applies them.
    public static func fromTiktoken(path: String) throws(SluiceError) -> ByteLevelBPE {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw .io(path: path, reason: "cannot read (\(String(cString: strerror(errno))))")
        }
        var vocab: [[UInt8]: Int] = [:]
        for (n, line) in text.split(separator: "\n").enumerated() {
            let f = line.split(separator: " ")
            guard f.count == 2, let data = Data(base64Encoded: String(f[0])), let rank = Int(f[1]) else {
                throw .invalidArgument(name: "\(path): line \(n + 1)", reason: "expected 'base64 rank'")
            }
            vocab[[UInt8](data)] = rank
        }
        // Every token of two or more bytes came from merging two tokens; its rank orders that merge.
        var ranks: [PairKey: Int] = [:]
        for (bytes, rank) in vocab where bytes.count > 1 {
            for cut in 1..<bytes.count {
                let l = Array(bytes[..<cut]), r = Array(bytes[cut...])
                if vocab[l] != nil && vocab[r] != nil {
                    let key = PairKey(left: l, right: r)
                    if ranks[key] == nil || ranks[key]! > rank { ranks[key] = rank }
                }
            }
        }
        return ByteLevelBPE(vocab: vocab, mergeRanks: ranks)
    }

    /// Ids of one pre-tokenized piece.
    public func encode(piece: [UInt8]) throws(SluiceError) -> [Int] {
        if let id = vocab[piece] { return [id] }
        var symbols = piece.map { [$0] }
        while symbols.count > 1 {
            var best = Int.max, at = -1
            for i in 0..<(symbols.count - 1) {
                if let r = mergeRanks[PairKey(left: symbols[i], right: symbols[i + 1])], r < best { best = r; at = i }
            }
            if at < 0 { break }
            symbols[at] += symbols[at + 1]
            symbols.remove(at: at + 1)
        }
        var ids: [Int] = []
        for s in symbols {
            guard let id = vocab[s] else {
                throw .invalidArgument(name: "tokenizer", reason: "byte sequence \(s) has no token (the vocabulary is not byte-complete)")
            }
            ids.append(id)
        }
        return ids
    }

    public func bytes(of id: Int) -> [UInt8]? { tokens[id] }
}
