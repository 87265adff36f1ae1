// Causal scaled-dot-product attention with grouped query heads, per (batch, head) through sgemm; the
// same kernel serves training (pos0 = 0, tk = tq) and KV-cache decoding (queries at positions pos0..).
// Dims: b batch, tq queries, tk keys, nh query heads, nkv key/value heads, hs head size.
// Query head h reads key/value head h / (nh / nkv). Query i sits at position pos0 + i and sees keys 0...pos0+i, or with a
// sliding window w only the last w of them (keys pos0+i−w+1 ... pos0+i), as Gemma's local layers and llama.cpp's SWA do.
import CBLAS
import KDCore

/// Row strides of the attention tensors (rows of a [b·t, heads·hs] projection output, or of a KV cache).
public struct AttentionShape: Sendable {
    public var b: Int, tq: Int, tk: Int, nh: Int, nkv: Int, hs: Int, pos0: Int
    /// Keys each query sees, counting itself; 0 = the whole prefix.
    public var window = 0
    /// Floats between consecutive query rows, key/value rows, output rows.
    public var ldq: Int, ldkv: Int, ldo: Int
    /// Floats between the queries of consecutive batch elements, and between their keys/values.
    public var qBatchStride: Int, kvBatchStride: Int

    public init(b: Int, tq: Int, tk: Int, nh: Int, nkv: Int, hs: Int, pos0: Int = 0, kvBatchStride: Int? = nil) {
        precondition(nh % nkv == 0, "attention: heads \(nh) must be a multiple of kv heads \(nkv)")
        precondition(tk >= pos0 + tq, "attention: \(tk) keys cannot cover queries at \(pos0)..<\(pos0 + tq)")
        self.b = b; self.tq = tq; self.tk = tk; self.nh = nh; self.nkv = nkv; self.hs = hs; self.pos0 = pos0
        ldq = nh * hs; ldkv = nkv * hs; ldo = nh * hs
        qBatchStride = tq * nh * hs
        self.kvBatchStride = kvBatchStride ?? tk * nkv * hs
    }
    var scale: Float { 1 / Float(hs).squareRoot() }
    var group: Int { nh / nkv }
}

/// out = softmax(q·kᵀ/√hs + causal (and window) mask) · v, per head; probs saved for backward (masked entries are 0,
/// which is all the backward needs to know of the mask).
/// - Shapes: out [b, tq, nh, hs] · probs [b, nh, tq, tk] · q [b, tq, nh, hs] · k, v [b, tk, nkv, hs]
public func attentionForward(
    out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>,
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, shape s: AttentionShape
) {
    StepProfile.op(.attention) {
        let tq = s.tq, tk = s.tk
        for bi in 0..<s.b {
            for h in 0..<s.nh {
                let kvh = h / s.group
                let qh = q + bi * s.qBatchStride + h * s.hs
                let kh = k + bi * s.kvBatchStride + kvh * s.hs, vh = v + bi * s.kvBatchStride + kvh * s.hs
                let p = probs + (bi * s.nh + h) * tq * tk
                let oh = out + bi * s.qBatchStride + h * s.hs
                cblas_sgemm(
                    CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tq), Int32(tk), Int32(s.hs),
                    s.scale, qh, Int32(s.ldq), kh, Int32(s.ldkv), 0, p, Int32(tk))
                Parallel.forRanges(tq, minPerThread: 32) { lo, hi in
                    for i in lo..<hi {
                        let row = p + i * tk, valid = s.pos0 + i + 1, first = s.window > 0 ? max(0, valid - s.window) : 0
                        let seen = row + first, count = valid - first
                        let sum = expShiftSum(seen, seen, count, shift: rowMax(seen, count))
                        scaleRow(seen, count, 1 / sum)
                        if first > 0 { row.update(repeating: 0, count: first) }
                        if valid < tk { (row + valid).update(repeating: 0, count: tk - valid) }
                    }
                }
                cblas_sgemm(
                    CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(tq), Int32(s.hs), Int32(tk),
                    1, p, Int32(tk), vh, Int32(s.ldkv), 0, oh, Int32(s.ldo))
            }
        }
    }
}

/// Backward of ``attentionForward``. Accumulates into dq, dk, dv; `scratch` holds one [tq, tk] block.
/// - Shapes: dq [b, tq, nh, hs] · dk, dv [b, tk, nkv, hs] · dout [b, tq, nh, hs] · probs [b, nh, tq, tk]
public func attentionBackward(
    dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
    scratch: UnsafeMutablePointer<Float>,
    dout: UnsafePointer<Float>, probs: UnsafePointer<Float>,
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, shape s: AttentionShape
) {
    StepProfile.op(.attention) {
        let tq = s.tq, tk = s.tk
        for bi in 0..<s.b {
            for h in 0..<s.nh {
                let kvh = h / s.group
                let qOff = bi * s.qBatchStride + h * s.hs, kvOff = bi * s.kvBatchStride + kvh * s.hs
                let p = probs + (bi * s.nh + h) * tq * tk, dp = scratch
                let doh = dout + qOff
                // dP = dO · Vᵀ ; dV += Pᵀ · dO
                cblas_sgemm(
                    CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tq), Int32(tk), Int32(s.hs),
                    1, doh, Int32(s.ldo), v + kvOff, Int32(s.ldkv), 0, dp, Int32(tk))
                cblas_sgemm(
                    CblasRowMajor, CblasTrans, CblasNoTrans, Int32(tk), Int32(s.hs), Int32(tq),
                    1, p, Int32(tk), doh, Int32(s.ldo), 1, dv + kvOff, Int32(s.ldkv))
                // softmax backward: dS = P ⊙ (dP − Σ_j dP_j P_j); masked entries have P = 0.
                Parallel.forRanges(tq, minPerThread: 32) { lo, hi in
                    for i in lo..<hi {
                        let pr = p + i * tk, dr = dp + i * tk, valid = s.pos0 + i + 1
                        let d = dot(dr, pr, valid)
                        for j in 0..<valid { dr[j] = pr[j] * (dr[j] - d) }
                        if valid < tk { (dr + valid).update(repeating: 0, count: tk - valid) }
                    }
                }
                // S = scale · Q·Kᵀ: dQ += scale · dS · K ; dK += scale · dSᵀ · Q
                cblas_sgemm(
                    CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(tq), Int32(s.hs), Int32(tk),
                    s.scale, dp, Int32(tk), k + kvOff, Int32(s.ldkv), 1, dq + qOff, Int32(s.ldq))
                cblas_sgemm(
                    CblasRowMajor, CblasTrans, CblasNoTrans, Int32(tk), Int32(s.hs), Int32(tq),
                    s.scale, dp, Int32(tk), q + qOff, Int32(s.ldq), 1, dk + kvOff, Int32(s.ldkv))
            }
        }
    }
}
