// Cross-entropy fused with a row-chunked LM head (as Liger-Kernel and llm.c's fused classifier do): the
// [n × v] logits are never materialized; each chunk of rows is projected, reduced to a loss and, in training,
// turned into its gradient before the next chunk reuses the buffer.
// Dims: n rows, c channels, v vocabulary, m rows per chunk. A target < 0 marks a row without loss.
import KDCore

/// Loss of one row of logits: log Σ e^logit − logit[target]. With `gradScale`, overwrites the row with
/// gradScale · (softmax − onehot(target)), the gradient of gradScale · loss.
@inline(__always)
public func crossEntropyRow(_ logits: UnsafeMutablePointer<Float>, target: Int, v: Int, gradScale: Float?) -> Float {
    let m = rowMax(logits, v)
    let picked = logits[target]
    if let g = gradScale {
        let s = expShiftSum(logits, logits, v, shift: m)
        scaleRow(logits, v, g / s)
        logits[target] -= g
        return m + logf(s) - picked
    }
    var acc = V16(repeating: 0)
    let sh = V16(repeating: m)
    var i = 0
    while i + 16 <= v {
        acc += simdExp(loadV16(logits + i) - sh)
        i += 16
    }
    var s = acc.sum()
    while i < v {
        s += fastExp(logits[i] - m)
        i += 1
    }
    return m + logf(s) - picked
}

/// Cross-entropy over materialized logits (the reference the fused kernel is tested against).
/// losses[r] = −log softmax(logits[r])[targets[r]], or 0 where targets[r] < 0.
/// - Shapes: losses [n] · logits [n, v] · targets [n]
public func crossEntropyForward(
    losses: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>, n: Int, v: Int
) {
    for r in 0..<n {
        let t = Int(targets[r])
        guard t >= 0 else { losses[r] = 0; continue }
        let x = logits + r * v
        let m = rowMax(x, v)
        var s: Double = 0
        for i in 0..<v { s += Double(fastExp(x[i] - m)) }
        losses[r] = m + Float(log(s)) - x[t]
    }
}

/// Reusable buffer for one chunk of logits.
public final class LMHeadScratch {
    public let rows: Int, v: Int
    public let logits: Slab
    var spares: [Slab] = []
    /// A dense head packed to bf16 for this call's chunks: as B of the logits (W) and of the input gradient (Wᵀ).
    var packs: [PackedBF16?] = [nil, nil]
    public init(rows: Int, v: Int) {
        self.rows = rows
        self.v = v
        logits = Slab(count: rows * v)
    }

    /// Work buffer `i` of at least `count` Floats, kept for the next call: the fused heads reuse their teacher
    /// logits and per-thread rows instead of allocating (and page-faulting) tens of MiB per micro-batch.
    public func spare(_ i: Int, count: Int) -> UnsafeMutablePointer<Float> {
        while spares.count <= i { spares.append(Slab(count: 0)) }
        if spares[i].count < count { spares[i] = Slab(count: count) }
        return spares[i].base
    }
}

/// The chunked LM head's GEMMs: logits = x · Wᵀ, and for a dense head dinp += dlogits · W, dweight += dlogitsᵀ · x.
/// In a bf16 task with more rows than one chunk, a dense head is packed to bf16 once per call (into the scratch's
/// buffers) for the logits and the input gradient, instead of inside each chunk's GEMMs: the same bits.
public struct HeadMultiplier {
    let head: any LinearWeight
    let forwardPack: PackedBF16?, inputGradPack: PackedBF16?

    public init(_ head: any LinearWeight, rows n: Int, inputGradient: Bool, scratch: LMHeadScratch) {
        self.head = head
        guard BF16.panelKernel != nil, n > scratch.rows, let dense = head as? DenseWeight else {
            forwardPack = nil
            inputGradPack = nil
            return
        }
        let v = dense.oc, c = dense.c
        func reuse(_ i: Int, n: Int, k: Int) -> PackedBF16 {
            if let p = scratch.packs[i], p.n == n, p.k == k { return p }
            let p = PackedBF16(n: n, k: k)
            scratch.packs[i] = p
            return p
        }
        (forwardPack, inputGradPack) = StepProfile.op(.gemm) {
            let f = reuse(0, n: v, k: c)
            f.pack(dense.base, rowStride: c, depthStride: 1)
            guard inputGradient else { return (f, nil) }
            let g = reuse(1, n: c, k: v)
            g.pack(dense.base, rowStride: 1, depthStride: c)
            return (f, g)
        }
    }

    /// out = x · Wᵀ. - Shapes: out [m, v] · inp [m, c]
    public func logits(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, m: Int) {
        if let forwardPack {
            forwardPack.multiply(m: m, a: inp, lda: head.c, beta: 0, c: out, ldc: head.oc)
        } else {
            head.forward(out: out, inp: inp, n: m, accumulate: false)
        }
    }

    /// dinp += dout · W (when given), dweight += doutᵀ · inp; nothing for a packed (frozen) head.
    /// - Shapes: dinp, inp [m, c] · dweight [v, c] · dout [m, v]
    public func backward(dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>,
                         inp: UnsafePointer<Float>, m: Int) {
        guard let dense = head as? DenseWeight else { return }
        let c = dense.c, v = dense.oc
        guard let inputGradPack else {
            matmulBackward(dinp: dinp, dweight: dweight, dout: dout, inp: inp, weight: dense.base, n: m, c: c, oc: v)
            return
        }
        if let dinp { inputGradPack.multiply(m: m, a: dout, lda: v, beta: 1, c: dinp, ldc: c) }
        matmulBackward(dinp: nil, dweight: dweight, dout: dout, inp: inp, weight: dense.base, n: m, c: c, oc: v)
    }
}

/// Per-row losses of the LM head + cross-entropy without gradients; the head may be packed.
/// - Shapes: losses [n] · inp [n, c] · head [v, c] · targets [n]
public func lmHeadCrossEntropyForward(
    losses: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, head: any LinearWeight,
    targets: UnsafePointer<Int32>, n: Int, scratch: LMHeadScratch
) {
    lmHeadChunks(losses: losses, dinp: nil, dweight: nil, inp: inp, head: head, targets: targets,
                 n: n, lossScale: 0, scratch: scratch)
}

/// Per-row losses and, for the total `lossScale · Σ losses`, the gradients. Accumulates into dinp and dweight.
/// - Shapes: losses [n] · dinp, inp [n, c] · dweight, weight [v, c] · targets [n]
public func lmHeadCrossEntropyForwardBackward(
    losses: UnsafeMutablePointer<Float>, dinp: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>,
    inp: UnsafePointer<Float>, weight: UnsafePointer<Float>, targets: UnsafePointer<Int32>,
    n: Int, c: Int, v: Int, lossScale: Float, scratch: LMHeadScratch
) {
    lmHeadChunks(losses: losses, dinp: dinp, dweight: dweight, inp: inp, head: DenseWeight(weight, oc: v, c: c),
                 targets: targets, n: n, lossScale: lossScale, scratch: scratch)
}

func lmHeadChunks(
    losses: UnsafeMutablePointer<Float>, dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?,
    inp: UnsafePointer<Float>, head: any LinearWeight, targets: UnsafePointer<Int32>,
    n: Int, lossScale: Float, scratch: LMHeadScratch
) {
    let c = head.c, v = head.oc
    precondition(scratch.v == v, "lmHead: scratch built for vocab \(scratch.v), got \(v)")
    let training = dweight != nil
    let heads = HeadMultiplier(head, rows: n, inputGradient: dinp != nil, scratch: scratch)
    var r0 = 0
    while r0 < n {
        let m = min(scratch.rows, n - r0)
        // Skip chunks with no loss rows entirely (prompt-only chunks cost nothing).
        var any = false
        for r in r0..<(r0 + m) where targets[r] >= 0 { any = true; break }
        if !any {
            for r in r0..<(r0 + m) { losses[r] = 0 }
            r0 += m
            continue
        }
        let logits = scratch.logits.base, x = inp + r0 * c
        heads.logits(out: logits, inp: x, m: m)
        Parallel.forRanges(m, minPerThread: 2) { lo, hi in
            for i in lo..<hi {
                let t = Int(targets[r0 + i]), row = logits + i * v
                if t < 0 {
                    losses[r0 + i] = 0
                    if training { row.update(repeating: 0, count: v) }
                } else {
                    precondition(t < v, "lmHead: target \(t) outside vocabulary of \(v)")
                    losses[r0 + i] = crossEntropyRow(row, target: t, v: v, gradScale: training ? lossScale : nil)
                }
            }
        }
        if let dweight { heads.backward(dinp: dinp.map { $0 + r0 * c }, dweight: dweight, dout: logits, inp: x, m: m) }
        r0 += m
    }
}

#if canImport(Glibc)
import Glibc
#endif
