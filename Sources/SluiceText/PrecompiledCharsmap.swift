import SluiceCore

/// SentencePiece's compiled normalisation rules (`normalizer_spec.precompiled_charsmap` of a model;
/// tokenizer.json's `Precompiled` normaliser holds the same bytes in base64): a little-endian u32 byte
/// length, a Darts-clone double-array trie of that many bytes keyed on UTF-8, then the replacement
/// strings, NUL-terminated, that the trie's values point into.
///
/// Applied as the tokenizers library applies it (spm_precompiled + normalizers/precompiled.rs), which
/// is what T5TokenizerFast gives: per grapheme cluster, a cluster under 6 bytes is looked up whole and,
/// if any prefix of it is a key, the whole cluster becomes the *shortest* such key's replacement;
/// otherwise each scalar is looked up alone. (sentencepiece itself takes the longest key at each
/// byte; the two agree on NFKC-style rules except in contrived cases.)
public struct PrecompiledCharsmap: Sendable {
    private let units: [UInt32]
    private let normalized: [UInt8]
    /// Names the charsmap's source in errors.
    let source: String

    public init(bytes: [UInt8], source: String) throws(SluiceError) {
        self.source = source
        guard bytes.count >= 4 else { throw .invalidArgument(name: source, reason: "precompiled charsmap is shorter than its 4-byte header") }
        let trieSize = Int(UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24)
        guard trieSize % 4 == 0, trieSize >= 4, trieSize <= bytes.count - 4 else {
            throw .invalidArgument(name: source, reason: "precompiled charsmap's trie size \(trieSize) does not fit its \(bytes.count) bytes")
        }
        var units = [UInt32](repeating: 0, count: trieSize / 4)
        for k in 0..<units.count {
            let o = 4 + 4 * k
            units[k] = UInt32(bytes[o]) | UInt32(bytes[o + 1]) << 8 | UInt32(bytes[o + 2]) << 16 | UInt32(bytes[o + 3]) << 24
        }
        self.units = units
        normalized = Array(bytes[(4 + trieSize)...])
    }

    // Darts-clone's unit layout.
    private static func offset(_ u: UInt32) -> Int { Int((u >> 10) << ((u & (1 << 9)) >> 6)) }
    private static func label(_ u: UInt32) -> UInt32 { u & ((1 << 31) | 0xFF) }
    private static func hasLeaf(_ u: UInt32) -> Bool { (u >> 8) & 1 == 1 }
    private static func value(_ u: UInt32) -> Int { Int(u & ((1 << 31) - 1)) }

    private func unit(_ pos: Int) throws(SluiceError) -> UInt32 {
        guard pos >= 0 && pos < units.count else {
            throw .invalidArgument(name: source, reason: "precompiled charsmap's trie points outside itself (unit \(pos) of \(units.count))")
        }
        return units[pos]
    }

    /// The replacement for the shortest key that is a prefix of `key`, nil when none is.
    func replacement<C: Collection<UInt8>>(forPrefixOf key: C) throws(SluiceError) -> ArraySlice<UInt8>? {
        var pos = 0
        var u = try unit(0)
        pos ^= Self.offset(u)
        for c in key {
            if c == 0 { break }
            pos ^= Int(c)
            u = try unit(pos)
            if Self.label(u) != UInt32(c) { return nil }
            pos ^= Self.offset(u)
            if Self.hasLeaf(u) {
                let start = Self.value(try unit(pos))
                guard start < normalized.count else {
                    throw .invalidArgument(name: source, reason: "precompiled charsmap's replacement \(start) is past its \(normalized.count) bytes")
                }
                let end = normalized[start...].firstIndex(of: 0) ?? normalized.count
                return normalized[start..<end]
            }
        }
        return nil
    }

    public func normalize(_ text: String) throws(SluiceError) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for cluster in text {
            let bytes = Array(String(cluster).utf8)
            if bytes.count < 6, let r = try replacement(forPrefixOf: bytes) {
                out += r
                continue
            }
            for s in cluster.unicodeScalars {
                let b = Array(String(s).utf8)
                if let r = try replacement(forPrefixOf: b) { out += r } else { out += b }
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
