/// Checkpoint keys read as module paths.
public enum ModulePath {
    /// N when `key` is "`stack`.N.…" — a tensor of block N of a numbered stack ("layers.3.mlp.fc1.weight"
    /// in "layers" is 3); nil otherwise.
    public static func blockIndex(_ key: String, in stack: String) -> Int? {
        guard key.hasPrefix(stack + ".") else { return nil }
        let rest = key.dropFirst(stack.count + 1)
        guard let dot = rest.firstIndex(of: "."), let i = Int(rest[..<dot]) else { return nil }
        return i
    }
}
