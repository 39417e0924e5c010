import SluiceCore
import SluiceTestSupport
import SluiceWeights
import Testing

/// Conversions are exact: every code and every sweep value must match torch bit for bit
/// (tolerance 0). NaN results must be NaN; torch's own NaN bit patterns are matched too.
@Suite struct DTypeConversionTests {
    let fixture: SafetensorsFile

    init() throws { fixture = try Fixtures.file("dtypes.safetensors") }

    func floats(_ name: String) throws -> [Float] { try fixture.tensor(name).toFloats() }

    func bits<T: FixedWidthInteger>(_ name: String, as: T.Type) throws -> [T] {
        let t = try fixture.tensor(name)
        return Array(UnsafeBufferPointer(start: t.rawPointer.assumingMemoryBound(to: T.self), count: t.count))
    }

    func sameBits(_ a: Float, _ b: Float) -> Bool { a.bitPattern == b.bitPattern || (a.isNaN && b.isNaN) }

    @Test func decodesAllFP8Codes() throws {
        let e4 = try floats("e4m3fn_decode"), e5 = try floats("e5m2_decode")
        for code in 0..<256 {
            #expect(sameBits(Float8E4M3FN.decode(UInt8(code)), e4[code]), "e4m3fn code \(code)")
            #expect(sameBits(Float8E5M2.decode(UInt8(code)), e5[code]), "e5m2 code \(code)")
        }
        #expect(Float8E4M3FN.decode(0x7F).isNaN && Float8E4M3FN.decode(0x7E) == 448)
    }

    @Test func decodesAll16BitCodes() throws {
        let f16 = try floats("f16_decode"), bf16 = try floats("bf16_decode")
        var mismatches = 0
        for code in 0..<65536 {
            if !sameBits(Half.decode(UInt16(code)), f16[code]) { mismatches += 1 }
            if !sameBits(BFloat16.decode(UInt16(code)), bf16[code]) { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }

    @Test func vectorWideningMatchesScalarOnEveryCode() throws {
        // Tensor.converted(to: .f32) takes the widest kernel path; it must agree with the codes.
        let f16Codes = (0..<65536).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        let wide = try Tensor(bytes: f16Codes, dtype: .f16, shape: [65536]).toFloats()
        let ref = try floats("f16_decode")
        #expect(wide.count == 65536 && ref.count == 65536)
        #expect(zip(wide, ref).allSatisfy { sameBits($0, $1) })
        let e4 = try Tensor(bytes: (0..<256).map { UInt8($0) }, dtype: .f8e4m3fn, shape: [256]).toFloats()
        let e4ref = try floats("e4m3fn_decode")
        #expect(e4.count == 256 && e4ref.count == 256)
        #expect(zip(e4, e4ref).allSatisfy { sameBits($0, $1) })
    }

    @Test func encodesTheSweepLikeTorch() throws {
        let sweep = try floats("sweep")
        #expect(sweep.count > 10000)
        let f16 = try bits("sweep_f16", as: UInt16.self), bf16 = try bits("sweep_bf16", as: UInt16.self)
        let e4 = try bits("sweep_e4m3fn", as: UInt8.self), e5 = try bits("sweep_e5m2", as: UInt8.self)
        var bad: [String] = []
        for (i, x) in sweep.enumerated() {
            if Half.encode(x) != f16[i] { bad.append("f16(\(x)) = \(Half.encode(x)) want \(f16[i])") }
            if BFloat16.encode(x) != bf16[i] { bad.append("bf16(\(x)) = \(BFloat16.encode(x)) want \(bf16[i])") }
            if Float8E4M3FN.encode(x) != e4[i] { bad.append("e4m3fn(\(x)) = \(Float8E4M3FN.encode(x)) want \(e4[i])") }
            if Float8E5M2.encode(x) != e5[i] { bad.append("e5m2(\(x)) = \(Float8E5M2.encode(x)) want \(e5[i])") }
        }
        #expect(bad.isEmpty, "\(bad.count) mismatches, first: \(bad.prefix(5))")
    }

    @Test func tensorNarrowingRoundTrips() throws {
        let sweep = try floats("sweep")
        let t = Tensor(sweep, shape: [sweep.count])
        let e4 = try bits("sweep_e4m3fn", as: UInt8.self)
        let narrowed = try t.converted(to: .f8e4m3fn)
        let got = Array(UnsafeBufferPointer(start: narrowed.rawPointer.assumingMemoryBound(to: UInt8.self), count: sweep.count))
        #expect(got == e4)
    }
}

@Suite struct TensorViewTests {
    @Test func permuteSliceReshapeAgreeWithIndexArithmetic() throws {
        let values = (0..<60).map(Float.init)
        let t = Tensor(values, shape: [3, 4, 5])
        let p = try t.permuted([2, 0, 1])  // [5, 3, 4]: p[i, j, k] = t[j, k, i]
        #expect(p.shape == [5, 3, 4])
        let pc = try p.toFloats()
        for i in 0..<5 { for j in 0..<3 { for k in 0..<4 { #expect(pc[(i * 3 + j) * 4 + k] == values[(j * 4 + k) * 5 + i]) } } }
        let s = try t.sliced(dim: 1, 1..<3)  // [3, 2, 5]
        let sc = try s.toFloats()
        for i in 0..<3 { for j in 0..<2 { for k in 0..<5 { #expect(sc[(i * 2 + j) * 5 + k] == values[(i * 4 + j + 1) * 5 + k]) } } }
        let r = try p.reshaped([15, 4])
        #expect(try r.toFloats() == pc)
        #expect(throws: SluiceError.self) { try t.reshaped([7, 9]) }
        #expect(throws: SluiceError.self) { try t.sliced(dim: 0, 2..<5) }
        #expect(throws: SluiceError.self) { try t.permuted([0, 0, 1]) }
    }

    @Test func shapeCountDetectsOverflow() {
        #expect(Shape([1 << 40, 1 << 30]).checkedCount == nil)
        #expect(Shape([3, -1]).checkedCount == nil)
        #expect(Shape([2, 3, 4]).checkedCount == 24)
        #expect(Shape([0, 1 << 62]).checkedCount == 0)
    }
}
