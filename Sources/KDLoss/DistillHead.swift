// The LM head fused with cross-entropy and a distillation divergence, row-chunked like lmHeadCrossEntropy: for each
// chunk, the student's and the teacher's logits are projected, the teacher's turned into log-probabilities at
// temperature T, and loss = (1 − r)·CE + r·s·D(p, q) (s = T² when asked) reduced and differentiated in place.
// Dims: n rows, c student channels, ct teacher channels, v vocabulary (shared).
import KDCore
import KDOps

/// What the distillation term needs from the teacher and the objective.
public struct DistillTarget {
    /// The teacher's LM head and its final hidden states for the same rows as the student's.
    public let teacherHead: any LinearWeight
    public let teacherHidden: UnsafePointer<Float>
    public let divergence: Divergence
    public let temperature: Float
    /// r in (1 − r)·CE + r·KD.
    public let kdRatio: Float
    /// Multiply the divergence by T² (Hinton et al.) so its gradient scale does not shrink with T.
    public let t2Scale: Bool

    public init(teacherHead: any LinearWeight, teacherHidden: UnsafePointer<Float>, divergence: Divergence,
                temperature: Float, kdRatio: Float, t2Scale: Bool) {
        self.teacherHead = teacherHead; self.teacherHidden = teacherHidden; self.divergence = divergence
        self.temperature = temperature; self.kdRatio = kdRatio; self.t2Scale = t2Scale
    }

    var kdWeight: Float { kdRatio * (t2Scale ? temperature * temperature : 1) }
}

/// Per-row cross-entropy and divergence, and the gradient of lossScale · Σ_rows [(1 − r)·CE + r·s·D] accumulated
/// into dinp and dweight (when given). Rows with target < 0 carry no loss.
/// - Shapes: ce, kd [n] · dinp, inp [n, c] · dweight, weight [v, c] · targets [n]; teacher hidden [n, ct]
public func lmHeadDistill(
    ce: UnsafeMutablePointer<Float>, kd: UnsafeMutablePointer<Float>,
    dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?, inp: UnsafePointer<Float>, head: any LinearWeight,
    targets: UnsafePointer<Int32>, n: Int, lossScale: Float, target t: DistillTarget, scratch: LMHeadScratch
) {
    let c = head.c, v = head.oc, ct = t.teacherHead.c
    precondition(t.teacherHead.oc == v, "lmHeadDistill: teacher vocabulary \(t.teacherHead.oc) ≠ student vocabulary \(v)")
    let teacherLogits = Slab(count: scratch.rows * v)
    let threads = max(1, Parallel.threads)
    let work = Slab(count: threads * 3 * v)
    let training = dweight != nil
    var r0 = 0
    while r0 < n {
        let m = min(scratch.rows, n - r0)
        let s = scratch.logits.base, x = inp + r0 * c
        head.forward(out: s, inp: x, n: m, accumulate: false)
        t.teacherHead.forward(out: teacherLogits.base, inp: t.teacherHidden + r0 * ct, n: m, accumulate: false)
        Parallel.forRanges(threads) { tlo, thi in
            for th in tlo..<thi {
                let w = work.base + th * 3 * v, g = w + 2 * v
                for i in (m * th / threads)..<(m * (th + 1) / threads) {
                    let row = s + i * v, trow = teacherLogits.base + i * v, target = Int(targets[r0 + i])
                    guard target >= 0 else {
                        ce[r0 + i] = 0
                        kd[r0 + i] = 0
                        if training { row.update(repeating: 0, count: v) }
                        continue
                    }
                    logSoftmaxInPlace(trow, v, temperature: t.temperature, scratch: w)
                    kd[r0 + i] = Float(divergenceRow(t.divergence, teacherLogProbs: trow, studentLogits: row, v: v,
                                                     temperature: t.temperature, grad: training ? g : nil,
                                                     scale: lossScale * t.kdWeight, scratch: w))
                    ce[r0 + i] = crossEntropyRow(row, target: target, v: v, gradScale: training ? lossScale * (1 - t.kdRatio) : nil)
                    if training { for j in 0..<v { row[j] += g[j] } }
                }
            }
        }
        if let dweight, let dense = head as? DenseWeight {
            matmulBackward(dinp: dinp.map { $0 + r0 * c }, dweight: dweight, dout: s, inp: x, weight: dense.base, n: m, c: c, oc: v)
        }
        r0 += m
    }
}
