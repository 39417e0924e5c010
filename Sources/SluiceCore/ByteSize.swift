import Foundation

/// Parses sizes as users write them: 8G, 12GB, 512M, 1.5GiB, or bytes. K/M/G/T are powers of 1024.
public func parseByteSize(_ text: String) -> Int? {
    let t = text.trimmingCharacters(in: .whitespaces).uppercased()
    let units: [(String, Double)] = [("TIB", 0x1p40), ("GIB", 0x1p30), ("MIB", 0x1p20), ("KIB", 0x1p10),
                                     ("TB", 0x1p40), ("GB", 0x1p30), ("MB", 0x1p20), ("KB", 0x1p10),
                                     ("T", 0x1p40), ("G", 0x1p30), ("M", 0x1p20), ("K", 0x1p10), ("B", 1)]
    for (suffix, scale) in units where t.hasSuffix(suffix) {
        guard let v = Double(t.dropLast(suffix.count)), v >= 0, v * scale < 0x1p62 else { return nil }
        return Int(v * scale)
    }
    guard let v = Int(t), v >= 0 else { return nil }
    return v
}

/// Bytes for a person: GiB from one GiB up, else MiB with one decimal.
public func formatBytes(_ b: Int) -> String {
    let g = Double(b) / Double(1 << 30)
    if g >= 1 { return String(format: "%.2f GiB", g) }
    return String(format: "%.1f MiB", Double(b) / Double(1 << 20))
}

extension Int {
    /// The smallest multiple of `granule` (≥ 1) that is at least this: what an allocation of this
    /// many bytes takes on a device that allocates in granules.
    public func roundedUp(toMultipleOf granule: Int) -> Int {
        let g = Swift.max(granule, 1)
        return (self + g - 1) / g * g
    }
}
