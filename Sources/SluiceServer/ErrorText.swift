import SluiceCore

extension Parameter {
    /// The name a server's user knows this parameter by: a field of their request (snake_case, as the
    /// APIs spell them), or the flag `sluice serve` was started with for the server's own settings.
    var serverName: String {
        switch self {
        case .vramLimit, .ramLimit, .profile, .device, .model, .storage, .table, .prefetchDepth:
            return "--" + words.joined(separator: "-")
        default:
            return words.joined(separator: "_")
        }
    }
}

/// An error as a job's failure reason: parameters named as the server's user knows them.
func errorText(_ error: any Error) -> String {
    if case let SluiceError.invalidParameter(p, reason) = error { return "\(p.serverName): \(reason)" }
    return "\(error)"
}
