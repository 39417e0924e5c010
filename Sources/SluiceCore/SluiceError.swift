/// Every failure Sluice reports is one of these: a value with enough context for a person to act on.
/// Rendered for people at the edge (CLI, server) through `description`.
public enum SluiceError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A file could not be opened, read or mapped.
    case io(path: String, reason: String)
    /// A checkpoint file is malformed. `tensor` names the tensor when the problem is one tensor's.
    case invalidCheckpoint(file: String, tensor: String?, reason: String)
    /// A tensor the caller asked for is not in the checkpoint.
    case missingTensor(key: String, file: String)
    /// A tensor's shape is not what the caller needs.
    case shapeMismatch(operation: String, expected: String, found: String)
    /// A dtype an operation cannot take.
    case unsupportedDType(operation: String, dtype: String)
    /// A setting out of range or malformed, named as the library names it (the CLI and the server map
    /// it to their flag or field).
    case invalidParameter(Parameter, reason: String)
    /// Anything else out of range or malformed: a file, a field inside one, a tensor; `name` says which.
    case invalidArgument(name: String, reason: String)
    /// An allocation did not fit the device's budget.
    case outOfMemory(device: String, requestedBytes: Int, availableBytes: Int)
    /// The caller asked the work to stop (a cancelled job); `stage` says where it stopped.
    case cancelled(stage: String)

    public var description: String {
        switch self {
        case let .io(path, reason):
            return "\(path): \(reason)"
        case let .invalidCheckpoint(file, tensor, reason):
            if let tensor { return "\(file): tensor '\(tensor)': \(reason)" }
            return "\(file): \(reason)"
        case let .missingTensor(key, file):
            return "\(file): no tensor named '\(key)'"
        case let .shapeMismatch(operation, expected, found):
            return "\(operation): expected shape \(expected), found \(found)"
        case let .unsupportedDType(operation, dtype):
            return "\(operation): dtype \(dtype) is not supported"
        case let .invalidParameter(p, reason):
            return "\(p.rawValue): \(reason)"
        case let .invalidArgument(name, reason):
            return "\(name): \(reason)"
        case let .outOfMemory(device, requested, available):
            return "out of memory on \(device): needed \(requested) bytes, \(available) available"
        case let .cancelled(stage):
            return "cancelled (\(stage))"
        }
    }
}
