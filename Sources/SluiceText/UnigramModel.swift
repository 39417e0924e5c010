import SluiceCore

/// SentencePiece's unigram model as the tokenizers library runs it (models/unigram/model.rs,
/// `encode_optimized`): the best-scoring segmentation of a pre-tokenized piece, found left to right over
/// its UTF-8 bytes. A character no piece starts with becomes the unknown id, scored `min score − 10`
/// (tokenizers' and sentencepiece's kUnkPenalty), and runs of them fuse into one unknown token.
struct UnigramModel: Sendable {
    let pieces: [String]
    let scores: [Double]
    let unknownID: Int
    let pieceIDs: [String: Int]
    private let unknownScore: Double
    /// A byte trie of the pieces: (node << 8 | byte) → child node; `terminal[node]` is the id ending there.
    private let edges: [Int: Int32]
    private let terminal: [Int32]

    init(pieces: [(String, Double)], unknownID: Int, source: String) throws(SluiceError) {
        guard !pieces.isEmpty else { throw .invalidArgument(name: source, reason: "has no pieces") }
        guard unknownID >= 0 && unknownID < pieces.count else {
            throw .invalidArgument(name: source, reason: "unknown id \(unknownID) is not one of its \(pieces.count) pieces")
        }
        self.pieces = pieces.map(\.0)
        scores = pieces.map(\.1)
        self.unknownID = unknownID
        var ids: [String: Int] = [:]
        var edges: [Int: Int32] = [:]
        var terminal: [Int32] = [-1]
        var minScore = Double.infinity
        for (id, (piece, score)) in pieces.enumerated() {
            guard score.isFinite else { throw .invalidArgument(name: "\(source): piece \(id)", reason: "score is not finite") }
            minScore = min(minScore, score)
            // A repeated piece (never in a real model) answers to its last id, as in tokenizers' map.
            ids[piece] = id
            var node = 0
            for b in piece.utf8 {
                let key = node << 8 | Int(b)
                if let next = edges[key] { node = Int(next) } else {
                    edges[key] = Int32(terminal.count)
                    node = terminal.count
                    terminal.append(-1)
                }
            }
            if node != 0 { terminal[node] = Int32(id) }
        }
        pieceIDs = ids
        self.edges = edges
        self.terminal = terminal
        unknownScore = minScore - 10
    }

    var count: Int { pieces.count }

    /// The ids of one pre-tokenized piece.
    func encode(_ text: String) -> [Int] {
        let b = Array(text.utf8)
        guard !b.isEmpty else { return [] }
        // best[i]: the best path over b[..<i] — its score, where its last token starts, that token's id.
        var score = [Double](repeating: 0, count: b.count + 1)
        var start = [Int](repeating: -1, count: b.count + 1)
        var tokenID = [Int](repeating: -1, count: b.count + 1)
        var i = 0
        while i < b.count {
            let charLength = Self.utf8Length(b, i)
            let here = score[i]
            var coversChar = false
            var node = 0, j = i
            while j < b.count, let next = edges[node << 8 | Int(b[j])] {
                node = Int(next)
                j += 1
                let id = Int(terminal[node])
                guard id >= 0 else { continue }
                // Strictly better only: on a tie the earlier start (then the shorter piece) stays.
                let candidate = here + scores[id]
                if start[j] < 0 || candidate > score[j] { (score[j], start[j], tokenID[j]) = (candidate, i, id) }
                if j - i == charLength { coversChar = true }
            }
            if !coversChar {
                let j = i + charLength
                let candidate = here + unknownScore
                if start[j] < 0 || candidate > score[j] { (score[j], start[j], tokenID[j]) = (candidate, i, unknownID) }
            }
            i += charLength
        }
        var ids: [Int] = []
        var end = b.count
        var lastWasUnknown = false
        while end > 0 {
            let id = tokenID[end]
            if !(id == unknownID && lastWasUnknown) { ids.append(id) }
            lastWasUnknown = id == unknownID
            end = start[end]
        }
        return ids.reversed()
    }

    /// The byte length of the UTF-8 sequence starting at `i` (1 for a stray continuation byte).
    private static func utf8Length(_ b: [UInt8], _ i: Int) -> Int {
        let lead = b[i]
        let n = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
        return min(n, b.count - i)
    }
}
