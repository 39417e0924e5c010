import CKernels
import SluiceCore

extension CPUBackend {
    func unary(_ x: Tensor, _ kernel: @escaping @Sendable (Int32, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int64) -> Void) throws(SluiceError) -> Tensor {
        let X = try f32(x), out = output(x.shape), isa = self.isa, n = x.count
        let block = 1 << 16, blocks = (n + block - 1) / block
        let p = UnsafeSendable((X.f32, out.f32))
        parallel(chunks: blocks) { b, _ in
            let (xp, op) = p.value
            let lo = b * block
            kernel(isa, xp + lo, op + lo, Int64(min(block, n - lo)))
        }
        return out
    }

    public func silu(_ x: Tensor) throws(SluiceError) -> Tensor { try unary(x) { sk_silu($0, $1, $2, $3) } }

    public func gelu(_ x: Tensor, approximateTanh: Bool) throws(SluiceError) -> Tensor {
        approximateTanh ? try unary(x) { sk_gelu_tanh($0, $1, $2, $3) } : try unary(x) { sk_gelu_erf($0, $1, $2, $3) }
    }

    /// numpy broadcasting: shapes are aligned at the right; a dimension of 1 stretches.
    public func binary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) throws(SluiceError) -> Tensor {
        let rank = max(a.shape.rank, b.shape.rank)
        let da = [Int](repeating: 1, count: rank - a.shape.rank) + a.shape.dims
        let db = [Int](repeating: 1, count: rank - b.shape.rank) + b.shape.dims
        var dims = [Int](repeating: 1, count: rank)
        for i in 0..<rank {
            guard da[i] == db[i] || da[i] == 1 || db[i] == 1 else {
                throw .shapeMismatch(operation: "broadcast \(op)", expected: "compatible shapes", found: "\(a.shape) and \(b.shape)")
            }
            dims[i] = da[i] == 1 ? db[i] : da[i]
        }
        let A = try f32(a), B = try f32(b)
        // Strides into each operand with 0 on broadcast dimensions.
        func strides(_ d: [Int]) -> [Int] {
            var s = [Int](repeating: 0, count: rank), acc = 1
            for i in stride(from: rank - 1, through: 0, by: -1) { s[i] = d[i] == 1 ? 0 : acc; acc *= d[i] }
            return s
        }
        let sa = strides(da), sb = strides(db)
        let out = output(Shape(dims))
        let inner = rank > 0 ? dims[rank - 1] : 1
        let outer = inner == 0 ? 0 : out.count / inner
        let code: Int32 = switch op {
        case .add: Int32(SK_BIN_ADD)
        case .sub: Int32(SK_BIN_SUB)
        case .mul: Int32(SK_BIN_MUL)
        case .div: Int32(SK_BIN_DIV)
        }
        let isa = self.isa
        let p = UnsafeSendable((A.f32, B.f32, out.f32))
        let rowsPerChunk = max(1, 65536 / max(inner, 1))
        parallel(chunks: (outer + rowsPerChunk - 1) / rowsPerChunk) { chunk, _ in
            let (ap, bp, op) = p.value
            for row in (chunk * rowsPerChunk)..<min(outer, (chunk + 1) * rowsPerChunk) {
                var rem = row, oa = 0, ob = 0
                for i in stride(from: rank - 2, through: 0, by: -1) {
                    let idx = rem % dims[i]
                    rem /= dims[i]
                    oa += idx * sa[i]
                    ob += idx * sb[i]
                }
                sk_binary(isa, code, ap + oa, Int64(rank > 0 ? sa[rank - 1] : 0), bp + ob, Int64(rank > 0 ? sb[rank - 1] : 0),
                          op + row * inner, Int64(inner))
            }
        }
        return out
    }

    public func concat(_ tensors: [Tensor], dim: Int) throws(SluiceError) -> Tensor {
        guard let first = tensors.first else { throw .invalidArgument(name: "concat", reason: "no tensors given") }
        let rank = first.shape.rank
        let d = dim < 0 ? dim + rank : dim
        guard d >= 0 && d < rank else { throw .invalidArgument(name: "concat dim", reason: "\(dim) out of range for rank \(rank)") }
        for t in tensors {
            guard t.shape.rank == rank, (0..<rank).allSatisfy({ $0 == d || t.shape[$0] == first.shape[$0] }) else {
                throw .shapeMismatch(operation: "concat", expected: "shapes equal except dim \(d)", found: tensors.map { "\($0.shape)" }.joined(separator: ", "))
            }
        }
        var dims = first.shape.dims
        dims[d] = tensors.reduce(0) { $0 + $1.shape[d] }
        let out = output(Shape(dims))
        let outer = first.shape.dims[..<d].reduce(1, *)
        let innerOut = dims[d...].reduce(1, *)
        var column = 0
        for t in tensors {
            let T = try f32(t)
            let run = T.shape.dims[d...].reduce(1, *)
            for o in 0..<outer { (out.f32 + o * innerOut + column).update(from: T.f32 + o * run, count: run) }
            column += run
        }
        return out
    }

    public func rotaryEmbedding(_ x: Tensor, cos: Tensor, sin: Tensor, seqDim: Int, layout: RotaryLayout) throws(SluiceError) -> Tensor {
        let rank = x.shape.rank
        let sd = seqDim < 0 ? seqDim + rank : seqDim
        guard rank >= 2, sd >= 0, sd < rank - 1 else {
            throw .invalidArgument(name: "seqDim", reason: "\(seqDim) must name a dimension before the last of \(x.shape)")
        }
        let L = x.shape[sd], D = x.shape[-1], half = D / 2
        guard D % 2 == 0, cos.count == L * half, sin.count == L * half else {
            throw .shapeMismatch(operation: "rotaryEmbedding", expected: "cos/sin [\(L), \(half)] for x \(x.shape)", found: "cos \(cos.shape), sin \(sin.shape)")
        }
        let X = try f32(x), C = try f32(cos), S = try f32(sin), out = output(x.shape)
        let rows = x.count / D
        let after = x.shape.dims[(sd + 1)..<(rank - 1)].reduce(1, *)
        let p = UnsafeSendable((X.f32, C.f32, S.f32, out.f32))
        let block = max(1, 8192 / max(D, 1))
        parallel(chunks: (rows + block - 1) / block) { chunk, _ in
            let (xp, cp, spt, op) = p.value
            for r in (chunk * block)..<min(rows, (chunk + 1) * block) {
                let l = (r / after) % L
                let xr = xp + r * D, orow = op + r * D, cr = cp + l * half, sr = spt + l * half
                for i in 0..<half {
                    let (i0, i1) = layout == .interleaved ? (2 * i, 2 * i + 1) : (i, i + half)
                    let a = xr[i0], b = xr[i1], c = cr[i], s = sr[i]
                    orow[i0] = a * c - b * s
                    orow[i1] = b * c + a * s
                }
            }
        }
        return out
    }
}
