import SluiceCore

/// CLIP's BPE: byte-level symbols (GPT-2's byte→character alphabet), the last one of a word carrying
/// the end-of-word suffix `</w>`, merged pairwise by rank (lowest first, leftmost among equals — the
/// tokenizers library's order). Works on ids: a merge maps a pair of ids to its rank and the merged id.
struct CLIPBPE: Sendable {
    static let endOfWord = "</w>"

    struct Pair: Hashable, Sendable { let left: Int32; let right: Int32 }
    struct Merge: Sendable { let rank: Int32; let id: Int32 }

    let vocab: [String: Int]
    let merges: [Pair: Merge]
    /// The id of each byte's character, alone and with `</w>` (nil where the vocabulary lacks it).
    private let byteIDs: [Int?]
    private let finalByteIDs: [Int?]
    /// What a symbol missing from the vocabulary becomes (CLIP's unk is <|endoftext|>).
    let unknownID: Int?

    /// `merges` in rank order, each a pair of tokens of `vocab` written in the byte alphabet. `file`
    /// names the merges' source in errors.
    init(vocab: [String: Int], merges: [(String, String)], unknownID: Int?, file: String) throws(SluiceError) {
        self.vocab = vocab
        var table: [Pair: Merge] = [:]
        table.reserveCapacity(merges.count)
        for (rank, (a, b)) in merges.enumerated() {
            guard let l = vocab[a], let r = vocab[b] else {
                throw .invalidArgument(name: "\(file): merge \(rank + 1)", reason: "'\(a) \(b)' names a token missing from the vocabulary")
            }
            guard let m = vocab[a + b] else {
                throw .invalidArgument(name: "\(file): merge \(rank + 1)", reason: "the merged token '\(a + b)' is missing from the vocabulary")
            }
            let key = Pair(left: Int32(l), right: Int32(r))
            if table[key] == nil { table[key] = Merge(rank: Int32(rank), id: Int32(m)) }
        }
        self.merges = table
        byteIDs = ByteLevelBPE.byteToChar.map { vocab[String($0)] }
        finalByteIDs = ByteLevelBPE.byteToChar.map { vocab[String($0) + Self.endOfWord] }
        self.unknownID = unknownID
    }

    /// The ids of one pre-tokenized word.
    func encode(word: String) throws(SluiceError) -> [Int] {
        let bytes = Array(word.utf8)
        guard !bytes.isEmpty else { return [] }
        var symbols: [Int32] = []
        symbols.reserveCapacity(bytes.count)
        for (k, b) in bytes.enumerated() {
            guard let id = (k == bytes.count - 1 ? finalByteIDs[Int(b)] : byteIDs[Int(b)]) ?? unknownID else {
                throw .invalidArgument(name: "tokenizer vocabulary", reason: "byte \(b) has no token and there is no unknown token")
            }
            symbols.append(Int32(id))
        }
        while symbols.count > 1 {
            var best: Merge?, at = -1
            for k in 0..<(symbols.count - 1) {
                if let m = merges[Pair(left: symbols[k], right: symbols[k + 1])], best == nil || m.rank < best!.rank {
                    best = m
                    at = k
                }
            }
            guard let m = best else { break }
            symbols[at] = m.id
            symbols.remove(at: at + 1)
        }
        return symbols.map(Int.init)
    }
}
