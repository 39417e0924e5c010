import CKernels

/// The element types checkpoints store and Sluice computes in. Storage and compute types are
/// separate decisions: weights may stay bf16/fp8 and be widened to f32 as they are used.
public enum DType: String, CaseIterable, Sendable, Codable {
    case f32, f64, f16, bf16
    /// torch.float8_e4m3fn: 4 exponent bits, 3 mantissa bits, no infinities, NaN = 0x7F/0xFF.
    case f8e4m3fn
    /// torch.float8_e5m2: 5 exponent bits, 2 mantissa bits, IEEE-like with infinities.
    case f8e5m2
    case bool, u8, i8, i16, u16, i32, u32, i64, u64

    public var byteSize: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .f8e4m3fn, .f8e5m2, .bool, .u8, .i8: return 1
        }
    }

    /// Floating-point types the kernels widen to f32 directly (weights may be stored in these).
    public var isFloatStorage: Bool { kernelCode != nil }

    /// The code CKernels uses for this storage type, if it is one the kernels widen from.
    public var kernelCode: Int32? {
        switch self {
        case .f32: return Int32(SK_DT_F32)
        case .f16: return Int32(SK_DT_F16)
        case .bf16: return Int32(SK_DT_BF16)
        case .f8e4m3fn: return Int32(SK_DT_F8E4M3FN)
        case .f8e5m2: return Int32(SK_DT_F8E5M2)
        default: return nil
        }
    }

    /// The name safetensors uses in its header.
    public var safetensorsName: String {
        switch self {
        case .f32: return "F32"
        case .f64: return "F64"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .f8e4m3fn: return "F8_E4M3"
        case .f8e5m2: return "F8_E5M2"
        case .bool: return "BOOL"
        case .u8: return "U8"
        case .i8: return "I8"
        case .i16: return "I16"
        case .u16: return "U16"
        case .i32: return "I32"
        case .u32: return "U32"
        case .i64: return "I64"
        case .u64: return "U64"
        }
    }

    public init?(safetensorsName: String) {
        guard let match = DType.allCases.first(where: { $0.safetensorsName == safetensorsName }) else { return nil }
        self = match
    }

    /// Parses the names users type on the command line (`fp8` means e4m3fn, as in ComfyUI).
    public init?(userName: String) {
        switch userName.lowercased() {
        case "f32", "fp32", "float32": self = .f32
        case "f16", "fp16", "float16", "half": self = .f16
        case "bf16", "bfloat16": self = .bf16
        case "fp8", "f8", "f8e4m3fn", "fp8e4m3fn", "f8_e4m3", "float8_e4m3fn": self = .f8e4m3fn
        case "f8e5m2", "fp8e5m2", "f8_e5m2", "float8_e5m2": self = .f8e5m2
        default: return nil
        }
    }
}

/// Exact scalar conversions (torch 2.13's CPU rules; see Sources/CKernels/convert.c).
public enum Float8E4M3FN {
    public static func decode(_ code: UInt8) -> Float { sk_f8e4m3fn_to_f32(code) }
    public static func encode(_ value: Float) -> UInt8 { sk_f32_to_f8e4m3fn(value) }
}

public enum Float8E5M2 {
    public static func decode(_ code: UInt8) -> Float { sk_f8e5m2_to_f32(code) }
    public static func encode(_ value: Float) -> UInt8 { sk_f32_to_f8e5m2(value) }
}

public enum Half {
    public static func decode(_ code: UInt16) -> Float { sk_f16_to_f32(code) }
    public static func encode(_ value: Float) -> UInt16 { sk_f32_to_f16(value) }
}

public enum BFloat16 {
    public static func decode(_ code: UInt16) -> Float { sk_bf16_to_f32(code) }
    public static func encode(_ value: Float) -> UInt16 { sk_f32_to_bf16(value) }
}
