import SluiceCore
import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// Which instruction-set path the CPU kernels take. Chosen at run time from what the CPU supports;
/// `SLUICE_KERNELS=scalar|avx2|avx512` forces one (refused, with a message, if the CPU lacks it).
public enum KernelPath: String, CaseIterable, Sendable, Comparable {
    case scalar, avx2, avx512

    var isa: Int32 {
        switch self {
        case .scalar: return Int32(SK_ISA_SCALAR)
        case .avx2: return Int32(SK_ISA_AVX2)
        case .avx512: return Int32(SK_ISA_AVX512)
        }
    }

    public static func < (a: KernelPath, b: KernelPath) -> Bool { a.isa < b.isa }

    /// Paths this CPU can run, narrowest first.
    public static var supported: [KernelPath] {
        let f = sk_cpu_features()
        return allCases.filter { f & (1 << UInt32($0.isa)) != 0 }
    }

    /// Whether the CPU has AVX-512 BF16 instructions (reported; the bf16 path widens while packing).
    public static var hasAVX512BF16: Bool { sk_cpu_features() & UInt32(SK_FEATURE_AVX512BF16) != 0 }

    public static var best: KernelPath { supported.last! }

    /// The path to use: `SLUICE_KERNELS` if set and supported, else the best.
    public static func fromEnvironment() throws(SluiceError) -> KernelPath {
        guard let raw = getenv("SLUICE_KERNELS").map({ String(cString: $0) }), !raw.isEmpty else { return best }
        guard let path = KernelPath(rawValue: raw.lowercased()) else {
            throw .invalidArgument(name: "SLUICE_KERNELS", reason: "'\(raw)' is not one of scalar, avx2, avx512")
        }
        guard supported.contains(path) else {
            throw .invalidArgument(name: "SLUICE_KERNELS", reason: "this CPU cannot run the \(raw) path (supported: \(supported.map(\.rawValue).joined(separator: ", ")))")
        }
        return path
    }
}

