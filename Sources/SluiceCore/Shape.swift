/// A tensor's dimensions, outermost first. Element counts are checked for overflow: shapes come
/// from files, and a hostile file must not wrap a product into a small number.
public struct Shape: Hashable, Sendable, CustomStringConvertible, ExpressibleByArrayLiteral {
    public var dims: [Int]

    public init(_ dims: [Int]) { self.dims = dims }
    public init(arrayLiteral elements: Int...) { self.dims = elements }

    public var rank: Int { dims.count }
    public subscript(_ i: Int) -> Int { dims[i < 0 ? dims.count + i : i] }

    /// Number of elements, or nil if a dimension is negative or the product overflows `Int`.
    public var checkedCount: Int? {
        var n = 1
        for d in dims {
            guard d >= 0 else { return nil }
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            n = p
        }
        return n
    }

    /// Number of elements. Shapes built by Sluice are valid; ones read from files are checked
    /// with `checkedCount` before they become a `Shape` of a `Tensor`.
    public var count: Int { checkedCount! }

    /// Row-major (C-contiguous) strides, in elements.
    public var contiguousStrides: [Int] {
        var strides = [Int](repeating: 1, count: dims.count)
        var s = 1
        for i in stride(from: dims.count - 1, through: 0, by: -1) {
            strides[i] = s
            s *= dims[i]
        }
        return strides
    }

    public var description: String { "[" + dims.map(String.init).joined(separator: ", ") + "]" }
}
