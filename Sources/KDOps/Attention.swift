// Causal scaled-dot-product attention with grouped query heads; the same kernel serves training (pos0 = 0, tk = tq)
// and KV-cache decoding (queries at positions pos0..). (Batch, head) pairs split over the threads, each on one thread
// in blocks of 64 queries that multiply only the keys they can see (about 5/8 of the square at t = 256): in f32
// through one-thread OpenBLAS sgemm calls (a head's products are too small to split well), in bf16 through the bf16
// kernel.
// Dims: b batch, tq queries, tk keys, nh query heads, nkv key/value heads, hs head size.
// Query head h reads key/value head h / (nh / nkv). Query i sits at position pos0 + i and sees keys 0...pos0+i, or with a
// sliding window w only the last w of them (keys pos0+i−w+1 ... pos0+i), as Gemma's local layers and llama.cpp's SWA do.
import CKDKernels
import Glibc
import KDCore
import Synchronization

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
/// which is all the backward needs to know of the mask) — unless `keepProbs` is false (no backward will read them:
/// a teacher's or an inference forward), when each block's stay in a small per-thread buffer instead.
/// - Shapes: out [b, tq, nh, hs] · probs [b, nh, tq, tk] · q [b, tq, nh, hs] · k, v [b, tk, nkv, hs]
public func attentionForward(
    out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>,
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, shape s: AttentionShape, keepProbs: Bool = true
) {
    StepProfile.op(.attention) {
        if let kernel = BF16.kernel {
            if kernel != .rounded && s.window == 0 && s.hs <= 256 && !attentionTilesOff {
                return attentionForwardTiled(kernel, out: out, probs: keepProbs ? probs : nil, q: q, k: k, v: v, shape: s)
            }
            return attentionForwardBlocked(kernel, out: out, probs: keepProbs ? probs : nil, q: q, k: k, v: v, shape: s)
        }
        attentionForwardBlocked(nil, out: out, probs: keepProbs ? probs : nil, q: q, k: k, v: v, shape: s)
    }
}

/// A row of tk scores in, probabilities out: softmax over row[first ..< valid], exactly 0 elsewhere.
@inline(__always)
func softmaxRow(_ row: UnsafeMutablePointer<Float>, valid: Int, first: Int, tk: Int) {
    let seen = row + first, count = valid - first
    let sum = expShiftSum(seen, seen, count, shift: rowMax(seen, count))
    scaleRow(seen, count, 1 / sum)
    if first > 0 { row.update(repeating: 0, count: first) }
    if valid < tk { (row + valid).update(repeating: 0, count: tk - valid) }
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
        if let kernel = BF16.kernel {
            return attentionBackwardBlocked(kernel, dq: dq, dk: dk, dv: dv, scratch: scratch, dout: dout, probs: probs, q: q, k: k, v: v, shape: s)
        }
        attentionBackwardBlocked(nil, dq: dq, dk: dk, dv: dv, scratch: scratch, dout: dout, probs: probs, q: q, k: k, v: v, shape: s)
    }
}

// MARK: - (batch, head) pairs over the threads, causal query blocks

/// One head's product on the calling thread: the bf16 kernel, or OpenBLAS sgemm (nil; on OpenBLAS's one thread).
@inline(__always)
func headGEMM(
    _ kernel: BF16Kernel?, transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    if let kernel {
        return bf16GEMM(kernel, threads: 1, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                        a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }
    sgemm(threads: 1, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
}

/// Queries per block.
let attentionQueryBlock = 64

/// The query blocks of one head: rows i0 ..< i0 + rows see keys keys.lowerBound ..< keys.upperBound at most (the
/// causal end of the block's last row, from the window's start for its first row).
func queryBlocks(_ s: AttentionShape) -> [(i0: Int, rows: Int, keys: Range<Int>)] {
    stride(from: 0, to: s.tq, by: attentionQueryBlock).map { i0 in
        let rows = min(attentionQueryBlock, s.tq - i0), end = min(s.tk, s.pos0 + i0 + rows)
        let start = s.window > 0 ? max(0, s.pos0 + i0 + 1 - s.window) : 0
        return (i0, rows, start..<end)
    }
}

/// ``attentionForward`` in blocks of queries: f32 (`kernel` nil), or bf16 — the same numbers up to bf16 rounding of QKᵀ's
/// and PV's operands. With `probs` nil (nothing will read them) a block's probabilities stay in the thread's [64, tk]
/// buffer instead of going out to the [b, heads, tq, tk] tensor; the same bits either way.
func attentionForwardBlocked(
    _ kernel: BF16Kernel?, out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>?,
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, shape s: AttentionShape
) {
    let tq = s.tq, tk = s.tk, blocks = queryBlocks(s), threads = min(Parallel.threads, s.b * s.nh)
    /// Tasks lo ..< hi, a block's probability rows in `buffer` when `probs` is nil.
    func heads(_ lo: Int, _ hi: Int, buffer: UnsafeMutablePointer<Float>?) {
        for task in lo..<hi {
            let bi = task / s.nh, h = task % s.nh, kvh = h / s.group
            let qh = q + bi * s.qBatchStride + h * s.hs
            let kh = k + bi * s.kvBatchStride + kvh * s.hs, vh = v + bi * s.kvBatchStride + kvh * s.hs
            let oh = out + bi * s.qBatchStride + h * s.hs
            for (i0, rows, keys) in blocks {
                let p = probs.map { $0 + (task * tq + i0) * tk } ?? buffer!, pb = p + keys.lowerBound
                headGEMM(kernel, transA: false, transB: true, m: rows, n: keys.count, k: s.hs, alpha: s.scale,
                         a: qh + i0 * s.ldq, lda: s.ldq, b: kh + keys.lowerBound * s.ldkv, ldb: s.ldkv, beta: 0, c: pb, ldc: tk)
                for r in 0..<rows {
                    let valid = s.pos0 + i0 + r + 1
                    softmaxRow(p + r * tk, valid: valid, first: s.window > 0 ? max(0, valid - s.window) : 0, tk: tk)
                }
                headGEMM(kernel, transA: false, transB: false, m: rows, n: s.hs, k: keys.count, alpha: 1,
                         a: pb, lda: tk, b: vh + keys.lowerBound * s.ldkv, ldb: s.ldkv, beta: 0, c: oh + i0 * s.ldo, ldc: s.ldo)
            }
        }
    }
    guard probs == nil else {
        return Parallel.forIndexedRanges(s.b * s.nh, over: threads) { _, lo, hi in heads(lo, hi, buffer: nil) }
    }
    let perThread = attentionQueryBlock * tk
    attentionScratch.withLock { slab in
        if slab.count < threads * perThread { slab = Slab(count: threads * perThread) }
        let base = slab.base
        Parallel.forIndexedRanges(s.b * s.nh, over: threads) { index, lo, hi in heads(lo, hi, buffer: base + index * perThread) }
    }
}

/// `DISTILL_ATTENTION=blocked` keeps the bf16 forward on ``attentionForwardBlocked`` (to measure the difference in one
/// binary); the results are the same bit for bit.
let attentionTilesOff = getenv("DISTILL_ATTENTION").map { String(cString: $0) == "blocked" } ?? false

/// ``attentionForwardBlocked`` without a window, the same numbers bit for bit: each thread packs a key/value head's keys
/// and values once for the query heads of its group (not once per 64-query block), and multiplies 8-query panels by
/// only the 32-key tiles they see (`kd_attention_scores` / `kd_attention_pv`). With `probs` nil (nothing will read
/// them), a block's probabilities stay in the thread's [64, tk] buffer instead of going out to memory.
func attentionForwardTiled(
    _ kernel: BF16Kernel, out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>?,
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, shape s: AttentionShape
) {
    let tq = s.tq, tk = s.tk, hs = s.hs, block = attentionQueryBlock
    let kCount = kd_bf16_packed_count(Int32(tk), Int32(hs)), vCount = kd_bf16_packed_count(Int32(hs), Int32(tk))
    let packedFloats = (kCount + vCount + 1) / 2, perThread = packedFloats + (probs == nil ? block * tk : 0)
    let threads = min(Parallel.threads, s.b * s.nh)
    let entries = BF16.entries(kernel), scores = entries.scores, pv = entries.pv
    attentionScratch.withLock { slab in
        if slab.count < threads * perThread { slab = Slab(count: threads * perThread) }
        let base = slab.base
        Parallel.forIndexedRanges(s.b * s.nh, over: threads) { index, lo, hi in
            let mine = base + index * perThread
            let kp = UnsafeMutableRawPointer(mine).assumingMemoryBound(to: UInt16.self), vp = kp + kCount
            let buffer = mine + packedFloats
            var packed = -1
            for task in lo..<hi {
                let bi = task / s.nh, h = task % s.nh, kvh = h / s.group, kvOff = bi * s.kvBatchStride + kvh * hs
                if bi * s.nkv + kvh != packed {
                    kd_bf16_pack_b(Int32(tk), 0, Int32(tk), Int32(hs), k + kvOff, s.ldkv, 1, kp)
                    kd_bf16_pack_b(Int32(hs), 0, Int32(hs), Int32(tk), v + kvOff, 1, s.ldkv, vp)
                    packed = bi * s.nkv + kvh
                }
                let qh = q + bi * s.qBatchStride + h * hs, oh = out + bi * s.qBatchStride + h * hs
                for i0 in stride(from: 0, to: tq, by: block) {
                    let rows = min(block, tq - i0), pos = s.pos0 + i0
                    let sb = probs.map { $0 + (task * tq + i0) * tk } ?? buffer
                    scores(Int32(rows), Int32(hs), Int32(tk), Int32(pos), s.scale, qh + i0 * s.ldq, s.ldq, kp, sb, tk)
                    for r in 0..<rows { softmaxRow(sb + r * tk, valid: pos + r + 1, first: 0, tk: tk) }
                    pv(Int32(rows), Int32(hs), Int32(tk), Int32(pos), sb, tk, vp, oh + i0 * s.ldo, s.ldo)
                }
            }
        }
    }
}

/// The packed keys and values (and probability rows) of ``attentionForwardTiled``'s threads, kept between calls.
private let attentionScratch = Mutex(Slab(count: 0))

/// ``attentionBackward`` in blocks of queries, f32 (`kernel` nil) or bf16. Each task owns one (batch, key/value head)
/// — the query heads of its group add into the same dK and dV rows — and a [64, tk] slice of `scratch` ([tq, tk];
/// fewer threads when tq is too short for one slice each).
func attentionBackwardBlocked(
    _ kernel: BF16Kernel?, dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
    scratch: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, probs: UnsafePointer<Float>,
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, shape s: AttentionShape
) {
    let tq = s.tq, tk = s.tk, blocks = queryBlocks(s), slice = min(attentionQueryBlock, tq)
    let threads = max(1, min(Parallel.threads, tq / slice))
    Parallel.forIndexedRanges(s.b * s.nkv, over: threads) { index, lo, hi in
        let dp = scratch + index * slice * tk
        for task in lo..<hi {
            let bi = task / s.nkv, kvh = task % s.nkv, kvOff = bi * s.kvBatchStride + kvh * s.hs
            for h in (kvh * s.group)..<((kvh + 1) * s.group) {
                let qOff = bi * s.qBatchStride + h * s.hs, p = probs + (bi * s.nh + h) * tq * tk
                for (i0, rows, keys) in blocks {
                    let k0 = keys.lowerBound, nk = keys.count, pb = p + i0 * tk + k0, doh = dout + qOff + i0 * s.ldo
                    // dP = dO · Vᵀ ; dV += Pᵀ · dO
                    headGEMM(kernel, transA: false, transB: true, m: rows, n: nk, k: s.hs, alpha: 1,
                             a: doh, lda: s.ldo, b: v + kvOff + k0 * s.ldkv, ldb: s.ldkv, beta: 0, c: dp, ldc: nk)
                    headGEMM(kernel, transA: true, transB: false, m: nk, n: s.hs, k: rows, alpha: 1,
                             a: pb, lda: tk, b: doh, ldb: s.ldo, beta: 1, c: dv + kvOff + k0 * s.ldkv, ldc: s.ldkv)
                    // dS = P ⊙ (dP − Σ_j dP_j P_j); P is 0 where masked, so dS is too
                    for r in 0..<rows {
                        let pr = pb + r * tk, dr = dp + r * nk
                        let d = dot(dr, pr, nk)
                        for j in 0..<nk { dr[j] = pr[j] * (dr[j] - d) }
                    }
                    // dQ += scale · dS · K ; dK += scale · dSᵀ · Q
                    headGEMM(kernel, transA: false, transB: false, m: rows, n: s.hs, k: nk, alpha: s.scale,
                             a: dp, lda: nk, b: k + kvOff + k0 * s.ldkv, ldb: s.ldkv, beta: 1, c: dq + qOff + i0 * s.ldq, ldc: s.ldq)
                    headGEMM(kernel, transA: true, transB: false, m: nk, n: s.hs, k: rows, alpha: s.scale,
                             a: dp, lda: nk, b: q + qOff + i0 * s.ldq, ldb: s.ldq, beta: 1, c: dk + kvOff + k0 * s.ldkv, ldc: s.ldkv)
                }
            }
        }
    }
}
