import SluiceCore

/// How a tensor a checkpoint presents is made from one it stores: a checkpoint in another project's
/// key layout (FLUX.1 in Black Forest Labs' layout fuses q, k and v into one `qkv`) is read under the
/// names our model code asks for, without rewriting the file. Stable Diffusion's original layout stores the
/// VAE's mid attention as 1×1 convolutions (a reshape) and OpenCLIP's text projection the other way round
/// (a transpose).
public struct TensorRecipe: Sendable, Equatable {
    public enum Form: Sendable, Equatable {
        /// The stored tensor itself.
        case asStored
        /// Rows `range` along dim 0: a view into the stored bytes, no copy (rows of a row-major
        /// tensor are one contiguous span, so the view is contiguous too).
        case rows(Range<Int>)
        /// The two halves along dim 0 in the other order: a copy (made when asked for; meant for small
        /// tensors such as a modulation's (shift, scale) read as (scale, shift)).
        case halvesSwapped
        /// The same elements in the same order under another shape (a 1×1 convolution's [C, C, 1, 1]
        /// weight read as a linear's [C, C]): the stored bytes themselves, no copy.
        case reshaped(Shape)
        /// A matrix [a, b] read as [b, a] (OpenCLIP's `x @ text_projection` read as a Linear's weight): a
        /// copy, made when asked for.
        case transposed
    }

    /// The stored tensor's name in the file.
    public let source: String
    public let form: Form

    public init(source: String, form: Form) {
        self.source = source
        self.form = form
    }

    public static func stored(_ source: String) -> TensorRecipe { TensorRecipe(source: source, form: .asStored) }
    public static func rows(of source: String, _ range: Range<Int>) -> TensorRecipe { TensorRecipe(source: source, form: .rows(range)) }
    public static func halvesSwapped(of source: String) -> TensorRecipe { TensorRecipe(source: source, form: .halvesSwapped) }
    public static func reshaped(_ source: String, to shape: Shape) -> TensorRecipe { TensorRecipe(source: source, form: .reshaped(shape)) }
    public static func transposed(_ source: String) -> TensorRecipe { TensorRecipe(source: source, form: .transposed) }

    /// The presented shape for a stored one, or why this recipe cannot apply to it.
    func presentedShape(from stored: Shape) -> Result<Shape, RecipeMismatch> {
        switch form {
        case .asStored:
            return .success(stored)
        case .rows(let range):
            guard stored.rank >= 1, range.lowerBound >= 0, range.upperBound <= stored.dims[0] else {
                return .failure(RecipeMismatch(reason: "rows \(range) lie outside its shape \(stored)"))
            }
            var dims = stored.dims
            dims[0] = range.count
            return .success(Shape(dims))
        case .halvesSwapped:
            guard stored.rank >= 1, stored.dims[0] % 2 == 0 else {
                return .failure(RecipeMismatch(reason: "shape \(stored) has no two equal halves along dim 0"))
            }
            return .success(stored)
        case .reshaped(let shape):
            guard let n = shape.checkedCount, n == stored.count else {
                return .failure(RecipeMismatch(reason: "shape \(stored) cannot be read as \(shape) (another element count)"))
            }
            return .success(shape)
        case .transposed:
            guard stored.rank == 2 else {
                return .failure(RecipeMismatch(reason: "shape \(stored) is not a matrix to transpose"))
            }
            return .success(Shape([stored.dims[1], stored.dims[0]]))
        }
    }

    /// The presented tensor made from the stored one.
    func apply(to stored: Tensor) throws(SluiceError) -> Tensor {
        switch form {
        case .asStored:
            return stored
        case .rows(let range):
            let rows = try stored.sliced(dim: 0, range)
            // A view spanning only these rows' bytes, so that handing a group's mapped pages back once
            // copied (HostStorage.releaseMappedPages) leaves the other rows alone: a single block's q, k, v
            // and MLP input come from one stored tensor but may sit in different groups.
            guard case .view(let parent) = stored.storage.origin, rows.isContiguous else { return rows }
            let view = HostStorage(viewOf: parent, offset: rows.address - parent.baseAddress, byteCount: rows.byteCount)
            return Tensor(storage: view, dtype: rows.dtype, shape: rows.shape)
        case .halvesSwapped:
            let src = stored.contiguous()
            let out = Tensor(uninitialized: src.shape, dtype: src.dtype)
            let half = src.byteCount / 2
            out.storage.baseAddress.copyMemory(from: src.rawPointer + half, byteCount: half)
            (out.storage.baseAddress + half).copyMemory(from: src.rawPointer, byteCount: half)
            return out
        case .reshaped(let shape):
            // A view of a contiguous stored tensor keeps its storage (the mapping), so nothing is copied.
            return try stored.reshaped(shape)
        case .transposed:
            guard stored.shape.rank == 2 else {
                throw .shapeMismatch(operation: "transposed recipe", expected: "a matrix", found: "\(stored.shape)")
            }
            return try stored.permuted([1, 0]).contiguous()
        }
    }

    /// Bytes of the stored tensor's data range the presented tensor reads.
    func dataRange(in stored: TensorInfo) -> Range<Int> {
        guard case .rows(let range) = form, stored.shape.rank >= 1, stored.shape.dims[0] > 0 else { return stored.dataRange }
        let rowBytes = stored.dataRange.count / stored.shape.dims[0]
        return (stored.dataRange.lowerBound + range.lowerBound * rowBytes)..<(stored.dataRange.lowerBound + range.upperBound * rowBytes)
    }
}

/// Why a recipe does not fit the stored tensor it names (the caller adds which tensors).
struct RecipeMismatch: Error {
    let reason: String
}
