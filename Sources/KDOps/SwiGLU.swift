// SwiGLU gate of the Llama MLP (Shazeer 2020): out = silu(gate) · up, silu(g) = g · σ(g).
// Dims: n rows, f hidden (ffn) channels.
import CKDKernels
import Foundation
import KDCore

/// σ(g) on 16 lanes with ``simdExp`` (each element the same whichever lane or thread computes it).
@inline(__always) func sigmoid16(_ g: V16) -> V16 { 1 / (1 + simdExp(-g)) }

/// Runs `body(i, lanes)` over elements lo ..< hi sixteen at a time (the tail as single lanes of a V16).
@inline(__always) func lanes16(_ lo: Int, _ hi: Int, _ body: (Int, Int) -> Void) {
    var i = lo
    while i + 16 <= hi { body(i, 16); i += 16 }
    while i < hi { body(i, 1); i += 1 }
}

/// out = silu(gate) ⊙ up.
/// - Shapes: out, gate, up [n, f]
public func swiGLUForward(
    out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, n: Int, f: Int
) {
    Parallel.forRanges(n, minPerThread: 16) { lo, hi in
        var start = lo * f
        if RowKernels.avx512 {  // the same lanes on AVX-512 (CKDKernels/rows.c)
            let count = (hi - lo) * f & ~15
            kd_swiglu_forward_avx512(out + start, gate + start, up + start, count)
            start += count
        }
        lanes16(start, hi * f) { i, w in
            if w == 16 {
                let g = loadV16(gate + i)
                storeV16(g * sigmoid16(g) * loadV16(up + i), out + i)
            } else {
                let g = gate[i]
                out[i] = g * sigmoid16(V16(repeating: g))[0] * up[i]
            }
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
        var start = lo * f
        if RowKernels.avx512 {
            let count = (hi - lo) * f & ~15
            kd_swiglu_backward_avx512(dgate + start, dup + start, dout + start, gate + start, up + start, count)
            start += count
        }
        lanes16(start, hi * f) { i, w in
            if w == 16 {
                let g = loadV16(gate + i), sg = sigmoid16(g), d = loadV16(dout + i)
                storeV16(loadV16(dgate + i) + d * loadV16(up + i) * sg * (1 + g * (1 - sg)), dgate + i)
                storeV16(loadV16(dup + i) + d * g * sg, dup + i)
            } else {
                let g = gate[i], sg = sigmoid16(V16(repeating: g))[0]
                dgate[i] += dout[i] * up[i] * sg * (1 + g * (1 - sg))
                dup[i] += dout[i] * g * sg
            }
        }
    }
}

// GeGLU (Gemma): out = gelu(gate) · up with the tanh approximation
// gelu(g) = ½ g (1 + tanh(√(2/π) (g + 0.044715 g³))), as Gemma's `gelu_pytorch_tanh` and llama.cpp compute it.
@inline(__always) func geluTanh(_ g: Float) -> (value: Float, slope: Float) {
    let k: Float = 0.7978845608028654, a: Float = 0.044715
    let u = k * (g + a * g * g * g), th = Foundation.tanh(u)
    let value = 0.5 * g * (1 + th)
    let slope = 0.5 * (1 + th) + 0.5 * g * (1 - th * th) * k * (1 + 3 * a * g * g)
    return (value, slope)
}

/// out = gelu_tanh(gate) ⊙ up.
/// - Shapes: out, gate, up [n, f]
public func geGLUForward(
    out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, n: Int, f: Int
) {
    Parallel.forRanges(n, minPerThread: 16) { lo, hi in
        for i in (lo * f)..<(hi * f) { out[i] = geluTanh(gate[i]).value * up[i] }
    }
}

/// Backward of ``geGLUForward``. Accumulates: dgate += dout·up·gelu′(g), dup += dout·gelu(g).
/// - Shapes: dgate, dup, dout, gate, up [n, f]
public func geGLUBackward(
    dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>,
    dout: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, n: Int, f: Int
) {
    Parallel.forRanges(n, minPerThread: 16) { lo, hi in
        for i in (lo * f)..<(hi * f) {
            let (v, s) = geluTanh(gate[i])
            dgate[i] += dout[i] * up[i] * s
            dup[i] += dout[i] * v
        }
    }
}
