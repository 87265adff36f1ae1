// AdamW (Loshchilov & Hutter 2019) over one contiguous range of the parameter slab; port of llm.c adamw kernel.
import Foundation
import KDCore

/// Hyper-parameters of one AdamW update.
public struct AdamWStep: Sendable {
    public var lr: Float, beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    /// 1-based step number t, for the bias corrections 1 − β^t.
    public var t: Int
    public init(lr: Float, beta1: Float, beta2: Float, eps: Float, weightDecay: Float, t: Int) {
        self.lr = lr; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay; self.t = t
    }
}

/// m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; p ← p − lr·(m̂/(√v̂ + eps) + wd·p), with m̂, v̂ bias-corrected.
/// - Shapes: param, grad, m, v [count]
public func adamWUpdate(
    param: UnsafeMutablePointer<Float>, grad: UnsafePointer<Float>,
    m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, count: Int, step s: AdamWStep
) {
    let c1 = 1 / (1 - Foundation.pow(s.beta1, Float(s.t))), c2 = 1 / (1 - Foundation.pow(s.beta2, Float(s.t)))
    Parallel.forRanges(count, minPerThread: 1 << 14) { lo, hi in
        // 16 lanes at a time, then the tail one by one: the same operations in the same order on each element (no
        // fused multiply-adds), so the lanes give the scalar loop's bits
        var i = lo
        while i + 16 <= hi {
            let g = loadV16(grad + i)
            let mi = s.beta1 * loadV16(m + i) + (1 - s.beta1) * g
            let vi = s.beta2 * loadV16(v + i) + (1 - s.beta2) * g * g
            let p = loadV16(param + i)
            let out = p - s.lr * ((mi * c1) / ((vi * c2).squareRoot() + s.eps) + s.weightDecay * p)
            storeV16(mi, m + i)
            storeV16(vi, v + i)
            storeV16(out, param + i)
            i += 16
        }
        while i < hi {
            let g = grad[i]
            let mi = s.beta1 * m[i] + (1 - s.beta1) * g
            let vi = s.beta2 * v[i] + (1 - s.beta2) * g * g
            m[i] = mi
            v[i] = vi
            param[i] -= s.lr * ((mi * c1) / ((vi * c2).squareRoot() + s.eps) + s.weightDecay * param[i])
            i += 1
        }
    }
}

/// √(Σ g²) over `count` Floats: Float lanes over blocks of 4,096, then Double across the blocks in order, so the
/// result does not depend on how many threads summed the blocks.
public func globalNorm(_ grad: UnsafePointer<Float>, count: Int) -> Double {
    let blocks = (count + 4095) / 4096
    var sums = [Double](repeating: 0, count: blocks)
    sums.withUnsafeMutableBufferPointer { out in
        let o = out.baseAddress!
        Parallel.forRanges(blocks, minPerThread: 16) { lo, hi in
            for b in lo..<hi {
                let i = b * 4096
                o[b] = Double(dot(grad + i, grad + i, Swift.min(4096, count - i)))
            }
        }
    }
    var total: Double = 0
    for s in sums { total += s }
    return total.squareRoot()
}

/// Scales the gradient so its global norm is at most `maxNorm`; returns the norm before clipping.
/// A `maxNorm` ≤ 0 disables clipping.
@discardableResult
public func clipGradNorm(_ grad: UnsafeMutablePointer<Float>, count: Int, maxNorm: Float) -> Double {
    let norm = globalNorm(grad, count: count)
    if maxNorm > 0, norm > Double(maxNorm), norm.isFinite {
        scaleRow(grad, count, Float(Double(maxNorm) / (norm + 1e-6)))
    }
    return norm
}
