import CKernels

/// A strided view of host memory with a shape and an element type. Views (reshape, permute, slice)
/// share storage; `contiguous()` and `converted(to:)` copy. Memory-mapped tensors read nothing
/// until used.
public struct Tensor: @unchecked Sendable {
    public let storage: HostStorage
    public let dtype: DType
    public let shape: Shape
    /// Strides in elements, one per dimension.
    public let strides: [Int]
    /// Offset of element [0, 0, …] from the storage base, in elements.
    public let offset: Int

    public init(storage: HostStorage, dtype: DType, shape: Shape, strides: [Int]? = nil, offset: Int = 0) {
        self.storage = storage
        self.dtype = dtype
        self.shape = shape
        self.strides = strides ?? shape.contiguousStrides
        self.offset = offset
    }

    /// A zero-filled contiguous tensor.
    public init(zeros shape: Shape, dtype: DType = .f32, counter: AllocationCounter? = nil) {
        self.init(storage: HostStorage(byteCount: shape.count * dtype.byteSize, counter: counter), dtype: dtype, shape: shape)
    }

    /// A contiguous tensor whose contents the caller will overwrite entirely (not zeroed).
    public init(uninitialized shape: Shape, dtype: DType = .f32, counter: AllocationCounter? = nil) {
        self.init(storage: HostStorage(byteCount: shape.count * dtype.byteSize, zeroed: false, counter: counter), dtype: dtype, shape: shape)
    }

    /// An f32 tensor holding `values` (row-major).
    public init(_ values: [Float], shape: Shape) {
        precondition(values.count == shape.count, "\(values.count) values for shape \(shape)")
        self.init(zeros: shape, dtype: .f32)
        values.withUnsafeBytes { storage.baseAddress.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    /// A tensor of `dtype` holding the raw bytes given.
    public init(bytes: [UInt8], dtype: DType, shape: Shape) {
        precondition(bytes.count == shape.count * dtype.byteSize, "\(bytes.count) bytes for \(dtype) \(shape)")
        self.init(zeros: shape, dtype: dtype)
        bytes.withUnsafeBytes { storage.baseAddress.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    public var count: Int { shape.count }
    public var byteCount: Int { count * dtype.byteSize }

    public var isContiguous: Bool { strides == shape.contiguousStrides }

    /// Address of element [0, 0, …].
    /// The first element's host address, for host code to read or write: a device holding newer bytes
    /// (a GPU activation) brings them over first.
    public var rawPointer: UnsafeMutableRawPointer {
        storage.prepareHostAccess()
        return storage.baseAddress + offset * dtype.byteSize
    }

    /// The first element's host address without bringing anything over: for finding where a tensor
    /// lives (a device binding), never for reading it.
    public var address: UnsafeMutableRawPointer { storage.baseAddress + offset * dtype.byteSize }

    /// The elements as f32 (for f32 tensors, the storage itself). Requires a contiguous f32 tensor.
    public var f32: UnsafeMutablePointer<Float> {
        precondition(dtype == .f32 && isContiguous, "f32 pointer of a \(dtype) non-contiguous tensor")
        return rawPointer.assumingMemoryBound(to: Float.self)
    }

    // MARK: Views

    public func reshaped(_ newShape: Shape) throws(SluiceError) -> Tensor {
        guard newShape.checkedCount == count else {
            throw .shapeMismatch(operation: "reshape", expected: "\(count) elements", found: "\(newShape)")
        }
        let base = isContiguous ? self : contiguous()
        return Tensor(storage: base.storage, dtype: dtype, shape: newShape, offset: base.offset)
    }

    public func permuted(_ order: [Int]) throws(SluiceError) -> Tensor {
        guard order.sorted() == Array(0..<shape.rank) else {
            throw .invalidArgument(name: "permute order", reason: "\(order) is not a permutation of 0..<\(shape.rank)")
        }
        return Tensor(storage: storage, dtype: dtype, shape: Shape(order.map { shape.dims[$0] }),
                      strides: order.map { strides[$0] }, offset: offset)
    }

    /// Elements `range` along dimension `dim` (a view).
    public func sliced(dim: Int, _ range: Range<Int>) throws(SluiceError) -> Tensor {
        guard dim >= 0 && dim < shape.rank else {
            throw .invalidArgument(name: "slice dim", reason: "\(dim) out of range for rank \(shape.rank)")
        }
        guard range.lowerBound >= 0 && range.upperBound <= shape.dims[dim] else {
            throw .invalidArgument(name: "slice range", reason: "\(range) out of 0..<\(shape.dims[dim]) on dim \(dim)")
        }
        var dims = shape.dims
        dims[dim] = range.count
        return Tensor(storage: storage, dtype: dtype, shape: Shape(dims), strides: strides,
                      offset: offset + range.lowerBound * strides[dim])
    }

    /// A contiguous copy (or self when already contiguous).
    public func contiguous(counter: AllocationCounter? = nil) -> Tensor {
        if isContiguous { return self }
        let out = Tensor(zeros: shape, dtype: dtype, counter: counter)
        let es = dtype.byteSize
        let rank = shape.rank
        var index = [Int](repeating: 0, count: rank)
        storage.prepareHostAccess()
        let src = storage.baseAddress
        let dst = out.storage.baseAddress
        // Copy the innermost dimension as a run when its stride is 1.
        let inner = rank > 0 ? shape.dims[rank - 1] : 1
        let innerStride = rank > 0 ? strides[rank - 1] : 1
        let outer = inner == 0 ? 0 : count / inner
        var d = 0
        for _ in 0..<outer {
            var s = offset
            for i in 0..<max(rank - 1, 0) { s += index[i] * strides[i] }
            if innerStride == 1 {
                (dst + d * es).copyMemory(from: src + s * es, byteCount: inner * es)
            } else {
                for j in 0..<inner { (dst + (d + j) * es).copyMemory(from: src + (s + j * innerStride) * es, byteCount: es) }
            }
            d += inner
            var i = rank - 2
            while i >= 0 {
                index[i] += 1
                if index[i] < shape.dims[i] { break }
                index[i] = 0
                i -= 1
            }
        }
        return out
    }

    // MARK: Conversion

    /// A contiguous copy in `target` (float types only): exact widening, round-to-nearest-even narrowing.
    public func converted(to target: DType) throws(SluiceError) -> Tensor {
        guard let from = dtype.kernelCode else { throw .unsupportedDType(operation: "convert", dtype: dtype.rawValue) }
        guard let to = target.kernelCode else { throw .unsupportedDType(operation: "convert", dtype: target.rawValue) }
        let src = contiguous()
        if target == dtype { return src === self ? ownedCopy() : src }
        let out = Tensor(zeros: shape, dtype: target)
        if target == .f32 {
            sk_widen(bestISA, from, src.rawPointer, out.f32, Int64(count))
        } else {
            let wide = dtype == .f32 ? src : try src.converted(to: .f32)
            sk_narrow(to, wide.f32, out.rawPointer, Int64(count))
        }
        return out
    }

    /// All elements as f32, row-major.
    public func toFloats() throws(SluiceError) -> [Float] {
        let t = dtype == .f32 ? contiguous() : try converted(to: .f32)
        return Array(UnsafeBufferPointer(start: t.f32, count: count))
    }

    /// A contiguous copy in freshly allocated host memory (never a view of a mapping), which the
    /// caller may write; counted in `counter` if given.
    public func ownedCopy(counter: AllocationCounter? = nil) -> Tensor {
        let src = contiguous()
        let out = Tensor(uninitialized: shape, dtype: dtype, counter: counter)
        out.storage.baseAddress.copyMemory(from: src.rawPointer, byteCount: byteCount)
        return out
    }
}

extension Tensor {
    fileprivate static func === (a: Tensor, b: Tensor) -> Bool { a.storage === b.storage && a.offset == b.offset }
}

/// The widest kernel path this CPU runs (used by core conversions; backends choose their own).
let bestISA: Int32 = {
    let f = sk_cpu_features()
    if f & (1 << UInt32(SK_ISA_AVX512)) != 0 { return Int32(SK_ISA_AVX512) }
    if f & (1 << UInt32(SK_ISA_AVX2)) != 0 { return Int32(SK_ISA_AVX2) }
    return Int32(SK_ISA_SCALAR)
}()
