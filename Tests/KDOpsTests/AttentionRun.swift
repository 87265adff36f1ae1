// One attention forward and backward as the attention tests run it.
import KDCore
import KDOps

/// Attention forward then backward through `kernel` (nil = f32) on `threads` threads: [out, probs, dq, dk, dv]. The
/// probabilities start as NaN (an entry never written shows); the gradients accumulate onto `dq0` and `dkv0`.
/// - Shapes: q, dout [b, tq, nh, hs] · k, v [b, tk, nkv, hs]
func attentionRun(_ kernel: BF16Kernel?, threads: Int, shape s: AttentionShape, q: [Float], k: [Float], v: [Float], dout: [Float],
                  dq0: Float = 0, dkv0: Float = 0) -> [[Float]] {
    var out = [Float](repeating: 0, count: q.count), probs = [Float](repeating: .nan, count: s.b * s.nh * s.tq * s.tk)
    var dq = [Float](repeating: dq0, count: q.count), dk = [Float](repeating: dkv0, count: k.count), dv = dk
    var scratch = [Float](repeating: 0, count: s.tq * s.tk)
    let saved = Parallel.threads
    Parallel.threads = threads
    defer { Parallel.threads = saved }
    BF16.$kernel.withValue(kernel) {
        attentionForward(out: &out, probs: &probs, q: q, k: k, v: v, shape: s)
        attentionBackward(dq: &dq, dk: &dk, dv: &dv, scratch: &scratch, dout: dout, probs: probs, q: q, k: k, v: v, shape: s)
    }
    return [out, probs, dq, dk, dv]
}
