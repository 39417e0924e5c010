import SluiceCore

/// AUTOMATIC1111's long prompts (modules/sd_hijack_clip.py): the emphasised fragments are tokenized one
/// by one and laid into chunks of 75 tokens, each encoded alone as `<|startoftext|>` + 75 + `<|endoftext|>`
/// (padded with the tokenizer's own pad id), and the encoders' outputs of all chunks are concatenated.
/// A chunk that fills up within `commaBacktrack` tokens of a comma breaks after the comma instead (A1111's
/// `comma_padding_backtrack`, 20 by default), and `BREAK` ends a chunk early. A prompt of at most 75
/// tokens without emphasis is exactly diffusers' single padded sequence.
public struct PromptChunk: Equatable, Sendable {
    /// 77 ids.
    public var ids: [Int]
    /// One per id; 1 for the specials and padding.
    public var multipliers: [Float]
}

public enum PromptChunker {
    public static let chunkLength = 75

    public static func chunks(_ prompt: String, tokenizer: CLIPTokenizer, emphasis: Bool = true,
                              commaBacktrack: Int = 20) throws(SluiceError) -> [PromptChunk] {
        let fragments = emphasis ? PromptEmphasis.parse(prompt) : [PromptEmphasis.Fragment(prompt, 1)]
        let comma = tokenizer.commaID
        var chunks: [PromptChunk] = []
        var tokens: [Int] = [], weights: [Double] = []
        var lastComma = -1
        func close() {
            let body = tokens.count
            var ids = [tokenizer.bosID] + tokens + [tokenizer.eosID]
            ids += Array(repeating: tokenizer.padID, count: chunkLength - body)
            let m = [1.0] + weights + Array(repeating: 1.0, count: chunkLength - body + 1)
            chunks.append(PromptChunk(ids: ids, multipliers: m.map { Float($0) }))
            tokens = []; weights = []; lastComma = -1
        }
        for fragment in fragments {
            if fragment.isBreak { close(); continue }
            for token in try tokenizer.contentIDs(fragment.text) {
                if token == comma {
                    lastComma = tokens.count
                } else if commaBacktrack != 0, tokens.count == chunkLength, lastComma != -1, tokens.count - lastComma <= commaBacktrack {
                    // Move what follows the comma into the next chunk.
                    let cut = lastComma + 1
                    let movedTokens = Array(tokens[cut...]), movedWeights = Array(weights[cut...])
                    tokens.removeSubrange(cut...); weights.removeSubrange(cut...)
                    close()
                    tokens = movedTokens; weights = movedWeights
                }
                if tokens.count == chunkLength { close() }
                tokens.append(token)
                weights.append(fragment.weight)
            }
        }
        if !tokens.isEmpty || chunks.isEmpty { close() }
        return chunks
    }

    /// A1111's "Original" emphasis on one chunk's encoder output [77, D]: each token's row scaled by its
    /// multiplier, then the whole rescaled so its mean is the unweighted output's mean. Means in f64
    /// (torch takes them in f32; the difference is far below the encoders' own tolerance).
    public static func emphasize(_ hidden: Tensor, multipliers: [Float]) throws(SluiceError) -> Tensor {
        guard hidden.shape.rank == 2, hidden.shape[0] == multipliers.count else {
            throw .shapeMismatch(operation: "prompt emphasis", expected: "[\(multipliers.count), D]", found: "\(hidden.shape)")
        }
        if multipliers.allSatisfy({ $0 == 1 }) { return hidden }
        let x = try hidden.toFloats(), d = hidden.shape[1]
        let before = x.reduce(0.0) { $0 + Double($1) } / Double(x.count)
        var y = x
        for i in 0..<y.count { y[i] *= multipliers[i / d] }
        let after = y.reduce(0.0) { $0 + Double($1) } / Double(y.count)
        let ratio = Float(before) / Float(after)
        return Tensor(y.map { $0 * ratio }, shape: hidden.shape)
    }
}
