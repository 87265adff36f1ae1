// SwiGLU gate of the Llama MLP (Shazeer 2020): out = silu(gate) · up, silu(g) = g · σ(g).
// Dims: n rows, f hidden (ffn) channels.
import Foundation
import KDCore

/// out = silu(gate) ⊙ up.
/// - Shapes: out, gate, up [n, f]
public func swiGLUForward(
    out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, n: Int, f: Int
) {
    Parallel.forRanges(n, minPerThread: 16) { lo, hi in
        for i in (lo * f)..<(hi * f) {
            let g = gate[i]
            out[i] = g / (1 + Foundation.exp(-g)) * up[i]
        }
    }
}

/// Backward of ``swiGLUForward``. Accumulates: dgate += dout·up·σ(g)(1 + g(1 − σ(g))), dup += dout·silu(g).
/// - Shapes: dgate, dup, dout, gate, up [n, f]
public func swiGLUBackward(
    dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>,
    dout: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, n: Int, f: Int
) {
    Parallel.forRanges(n, minPerThread: 16) { lo, hi in
        for i in (lo * f)..<(hi * f) {
            let g = gate[i], sg = 1 / (1 + Foundation.exp(-g))
            dgate[i] += dout[i] * up[i] * sg * (1 + g * (1 - sg))
            dup[i] += dout[i] * g * sg
        }
    }
}
