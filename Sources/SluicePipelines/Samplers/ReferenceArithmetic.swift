import Foundation

/// The numpy routines diffusers builds its schedules with, rounding as numpy rounds (float64), so a
/// timestep or sigma lands on the same value — a timestep that moves by one changes the image.
enum NumPy {
    /// `np.linspace(start, stop, n)`: i·step + start in f64, the last exactly `stop`.
    static func linspace(_ start: Double, _ stop: Double, _ n: Int) -> [Double] {
        guard n > 1 else { return n == 1 ? [start] : [] }
        let step = (stop - start) / Double(n - 1)
        return (0..<n).map { i in i == n - 1 ? stop : Double(i) * step + start }
    }

    /// `np.arange(start, stop, step)` over floats: ⌈(stop − start)/step⌉ values, start + i·δ where δ is
    /// (start + step) − start as numpy's fill computes it (not `step` itself).
    static func arange(_ start: Double, _ stop: Double, _ step: Double) -> [Double] {
        let count = Int(((stop - start) / step).rounded(.up))
        guard count > 0 else { return [] }
        let delta = (start + step) - start
        return (0..<count).map { i in i == 0 ? start : (i == 1 ? start + step : start + Double(i) * delta) }
    }

    /// `np.round` / `ndarray.round()`: halves go to the even neighbour.
    static func round(_ x: Double) -> Double { x.rounded(.toNearestOrEven) }

    /// `np.interp(x, arange(len(fp)), fp)`: numpy's formula, slope·(x − xⱼ) + fⱼ, with fⱼ itself at
    /// the points and the ends held.
    static func interpAtIndices(_ x: Double, _ fp: [Float]) -> Double {
        let last = fp.count - 1
        if x <= 0 { return Double(fp[0]) }
        if x >= Double(last) { return Double(fp[last]) }
        let j = Int(x.rounded(.down))
        if Double(j) == x { return Double(fp[j]) }
        let slope = Double(fp[j + 1]) - Double(fp[j])  // over xⱼ₊₁ − xⱼ = 1
        return slope * (x - Double(j)) + Double(fp[j])
    }
}

/// torch's CPU arithmetic where diffusers builds a schedule with it.
enum Torch {
    /// `torch.linspace(start, end, n, dtype=torch.float32)`: the first half counts up from `start`, the
    /// second down from `end`; torch's x86 builds contract each into one fused multiply-add.
    static func linspaceF32(_ start: Double, _ end: Double, _ n: Int) -> [Float] {
        let s = Float(start), e = Float(end)
        guard n > 1 else { return n == 1 ? [s] : [] }
        let step = (e - s) / Float(n - 1)
        let half = n / 2
        return (0..<n).map { i in
            i < half ? s.addingProduct(step, Float(i)) : e.addingProduct(-step, Float(n - i - 1))
        }
    }

    /// `torch.cumprod` of an f32 vector: torch's CPU kernel accumulates in double, storing each product
    /// rounded to f32.
    static func cumprodF32(_ x: [Float]) -> [Float] {
        var acc = 1.0
        return x.map { v in acc *= Double(v); return Float(acc) }
    }
}
