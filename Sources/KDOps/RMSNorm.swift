// RMSNorm (Zhang & Sennrich 2019) as Llama uses it: y = x / √(mean(x²) + eps) · weight.
// Dims: n rows, c channels.
import KDCore

/// out = inp · rstd · weight with rstd = 1/√(mean(inp²) + eps), saved for backward.
/// - Shapes: out, inp [n, c] · weight [c] · rstd [n]
public func rmsNormForward(
    out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
    inp: UnsafePointer<Float>, weight: UnsafePointer<Float>, n: Int, c: Int, eps: Float
) {
    Parallel.forRanges(n, minPerThread: 16) { lo, hi in
        for r in lo..<hi {
            let x = inp + r * c, y = out + r * c
            var ss: Float = 0
            for i in 0..<c { ss += x[i] * x[i] }
            let s = 1 / (ss / Float(c) + eps).squareRoot()
            for i in 0..<c { y[i] = x[i] * s * weight[i] }
            rstd[r] = s
        }
    }
}

/// Backward of ``rmsNormForward``. Accumulates into `dinp` and `dweight`.
/// `dinp` may alias the residual-stream gradient it adds to; `dout` must not alias `dinp`.
/// - Shapes: dinp, dout, inp [n, c] · dweight, weight [c] · rstd [n]
public func rmsNormBackward(
    dinp: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>,
    dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
    rstd: UnsafePointer<Float>, n: Int, c: Int
) {
    // dinp rows are independent; dweight sums over every row, in row order for each channel whatever the thread count
    // (channels split over threads), so the result does not depend on how many threads ran it
    Parallel.forRanges(n, minPerThread: 16) { lo, hi in
        for r in lo..<hi {
            let x = inp + r * c, dy = dout + r * c, dx = dinp + r * c, s = rstd[r]
            var dot: Float = 0  // Σ_j weight_j · dy_j · x_j
            for i in 0..<c { dot += weight[i] * dy[i] * x[i] }
            let k = s * s * s * dot / Float(c)
            for i in 0..<c { dx[i] += s * weight[i] * dy[i] - k * x[i] }  // y = x·s·w and s depends on every x
        }
    }
    let partial = UnsafeMutablePointer<Float>.allocate(capacity: c)
    partial.initialize(repeating: 0, count: c)
    defer { partial.deallocate() }
    Parallel.forRanges(c, minPerThread: 64) { lo, hi in
        for r in 0..<n {
            let x = inp + r * c, dy = dout + r * c, s = rstd[r]
            for i in lo..<hi { partial[i] += x[i] * s * dy[i] }
        }
        for i in lo..<hi { dweight[i] += partial[i] }
    }
}
