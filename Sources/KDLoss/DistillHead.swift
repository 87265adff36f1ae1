// The LM head fused with cross-entropy and a distillation divergence, row-chunked like lmHeadCrossEntropy: for each
// chunk, the student's and the teacher's logits are projected, the teacher's turned into log-probabilities at
// temperature T, and loss = (1 − r)·CE + r·s·D(p, q) (s = T² when asked) reduced and differentiated in place.
// Dims: n rows, c student channels, ct teacher channels, v vocabulary (shared).
import KDCore
import KDOps

/// A teacher's output for a micro-batch as top-k rows: per token k ids and log-probabilities (at the distillation
/// temperature) and the log tail mass. - Shapes: ids, logProbs [n, k] · logTail [n]
public struct TopKRows {
    public let k: Int
    public let ids: UnsafePointer<Int32>, logProbs: UnsafePointer<Float>, logTail: UnsafePointer<Float>
    public init(k: Int, ids: UnsafePointer<Int32>, logProbs: UnsafePointer<Float>, logTail: UnsafePointer<Float>) {
        self.k = k; self.ids = ids; self.logProbs = logProbs; self.logTail = logTail
    }
}

/// Owned storage for n top-k rows, laid out as the wire format: ids [n, k] · logProbs [n, k] · logTail [n].
public final class TopKBuffer {
    public let n: Int, k: Int
    public let raw: UnsafeMutableRawPointer
    public init(n: Int, k: Int) {
        self.n = n
        self.k = k
        raw = .allocate(byteCount: max(1, n * TopK.bytesPerToken(k: k)), alignment: 64)
    }
    deinit { raw.deallocate() }
    public var byteCount: Int { n * TopK.bytesPerToken(k: k) }
    public var ids: UnsafeMutablePointer<Int32> { raw.assumingMemoryBound(to: Int32.self) }
    public var logProbs: UnsafeMutablePointer<Float> { (raw + n * k * 4).assumingMemoryBound(to: Float.self) }
    public var logTail: UnsafeMutablePointer<Float> { (raw + n * k * 8).assumingMemoryBound(to: Float.self) }
    public var rows: TopKRows { TopKRows(k: k, ids: ids, logProbs: logProbs, logTail: logTail) }

    var scratch: LMHeadScratch?

    /// Fills the rows from a teacher's head and final hidden states (the logits chunk buffer is kept between calls).
    public func fill(head: any LinearWeight, hidden: UnsafePointer<Float>, temperature: Float, chunk: Int) {
        fill(ensemble: TeacherEnsemble(members: [TeacherSource(head: head, hidden: hidden)]), temperature: temperature, chunk: chunk)
    }

    /// Fills the rows from the combined distribution of one or several teachers: its top k, or (`sampled`) k tokens
    /// drawn from it (``SampledSignal``) with the uniforms of row r keyed by `sampled.key(r)`.
    public func fill(ensemble: TeacherEnsemble, temperature: Float, chunk: Int, sampled: (seed: UInt64, key: (Int) -> UInt64)? = nil) {
        if scratch?.v != ensemble.vocabSize || scratch?.rows != min(chunk, n) { scratch = LMHeadScratch(rows: min(chunk, n), v: ensemble.vocabSize) }
        teacherTopK(ensemble: ensemble, n: n, temperature: temperature, k: k, ids: ids, logProbs: logProbs, logTail: logTail, scratch: scratch!,
                    sampled: sampled)
    }
}

/// Top-k rows of a teacher's LM head applied to its final hidden states, row-chunked.
/// - Shapes: hidden [n, c] · ids, logProbs [n, k] · logTail [n]
public func teacherTopK(head: any LinearWeight, hidden: UnsafePointer<Float>, n: Int, temperature: Float, k: Int,
                        ids: UnsafeMutablePointer<Int32>, logProbs: UnsafeMutablePointer<Float>, logTail: UnsafeMutablePointer<Float>,
                        scratch: LMHeadScratch) {
    teacherTopK(ensemble: TeacherEnsemble(members: [TeacherSource(head: head, hidden: hidden)]), n: n, temperature: temperature, k: k,
                ids: ids, logProbs: logProbs, logTail: logTail, scratch: scratch)
}

/// Top-k rows of the combined distribution of one or several teachers, row-chunked; or, with `sampled`, rows of k
/// tokens drawn from it (``SampledSignal``; the uniforms of row r keyed by `sampled.key(r)`).
/// - Shapes: ids, logProbs [n, k] · logTail [n]
public func teacherTopK(ensemble: TeacherEnsemble, n: Int, temperature: Float, k: Int,
                        ids: UnsafeMutablePointer<Int32>, logProbs: UnsafeMutablePointer<Float>, logTail: UnsafeMutablePointer<Float>,
                        scratch: LMHeadScratch, sampled: (seed: UInt64, key: (Int) -> UInt64)? = nil) {
    let v = ensemble.vocabSize, threads = max(1, Parallel.threads)
    let work = scratch.spare(0, count: threads * v), uniforms = UnsafeMutablePointer<Double>.allocate(capacity: threads * k)
    defer { uniforms.deallocate() }
    let single = ensemble.members.count == 1
    let buffer = single ? scratch.logits.base : scratch.spare(1, count: ensemble.bufferCount(rows: scratch.rows))
    var r0 = 0
    while r0 < n {
        let m = min(scratch.rows, n - r0)
        ensemble.projectChunk(r0: r0, m: m, buffer: buffer)
        Parallel.forRanges(threads) { tlo, thi in
            for th in tlo..<thi {
                for i in (m * th / threads)..<(m * (th + 1) / threads) {
                    let r = r0 + i
                    let row = ensemble.rowLogProbs(i: i, r: r, m: m, buffer: buffer, temperature: temperature, scratch: work + th * v)
                    if let sampled {
                        let u = uniforms + th * k
                        SampledSignal.uniforms(seed: sampled.seed, key: sampled.key(r), n: k, into: u)
                        SampledSignal.draw(lp: row, v: v, uniforms: u, n: k, ids: ids + r * k, logProbs: logProbs + r * k)
                        logTail[r] = -.infinity
                    } else {
                        logTail[r] = TopK.select(lp: row, v: v, k: k, ids: ids + r * k, logProbs: logProbs + r * k)
                    }
                }
            }
        }
        r0 += m
    }
}

/// What the distillation term needs from the teacher and the objective.
public struct DistillTarget {
    /// The teacher(s): LM heads and final hidden states for the same rows as the student's (unused with `topK`; nil
    /// when the top-k rows come from an offline cache).
    public let teachers: TeacherEnsemble?
    /// When set, the teacher is these top-k rows instead of its full distribution.
    public var topK: TopKRows?
    public let divergence: Divergence
    public let temperature: Float
    /// r in (1 − r)·CE + r·KD.
    public var kdRatio: Float
    /// Multiply the divergence by T² (Hinton et al.) so its gradient scale does not shrink with T.
    public let t2Scale: Bool
    /// Per row, the weight of the cross-entropy term instead of 1 − r (the policy-gradient coefficients of on-policy
    /// rollouts, which may be negative). - Shape: [n]
    public var ceWeights: UnsafePointer<Float>?
    /// Teachers with other vocabularies, aligned to these rows (`distill.cross_tokenizer`), and their loss.
    public var cross: [CrossTeacherRows] = []
    public var crossLoss = CrossTokenizerLoss.gold
    /// Weight of gold's ULD part (`distill.uld_weight`).
    public var uldWeight: Float = 1
    /// Weight of the same-vocabulary part (`teachers` or `topK`) in the divergence term: 1 unless teachers of other
    /// vocabularies share it (then the teachers' normalized weights of that part); 0 when there is none.
    public var sameWeight: Float = 1
    var hasSame: Bool { teachers != nil || topK != nil }

    public init(teachers: TeacherEnsemble?, divergence: Divergence, temperature: Float, kdRatio: Float, t2Scale: Bool) {
        self.teachers = teachers; self.divergence = divergence
        self.temperature = temperature; self.kdRatio = kdRatio; self.t2Scale = t2Scale
    }

    public init(teacherHead: any LinearWeight, teacherHidden: UnsafePointer<Float>, divergence: Divergence,
                temperature: Float, kdRatio: Float, t2Scale: Bool) {
        self.init(teachers: TeacherEnsemble(members: [TeacherSource(head: teacherHead, hidden: teacherHidden)]), divergence: divergence,
                  temperature: temperature, kdRatio: kdRatio, t2Scale: t2Scale)
    }

    var kdWeight: Float { kdRatio * (t2Scale ? temperature * temperature : 1) }
}

/// Per-row cross-entropy and divergence, and the gradient of lossScale · Σ_rows [(1 − r)·CE + r·s·D] accumulated
/// into dinp and dweight (when given). Rows with target < 0 carry no loss. `agree` (when given) receives per row 1 where
/// the student's most likely token is the teacher's, else 0.
/// - Shapes: ce, kd, agree [n] · dinp, inp [n, c] · dweight, weight [v, c] · targets [n]; teacher hidden [n, ct]
public func lmHeadDistill(
    ce: UnsafeMutablePointer<Float>, kd: UnsafeMutablePointer<Float>, agree: UnsafeMutablePointer<Float>? = nil,
    dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>?, inp: UnsafePointer<Float>, head: any LinearWeight,
    targets: UnsafePointer<Int32>, n: Int, lossScale: Float, target t: DistillTarget, scratch: LMHeadScratch
) {
    let c = head.c, v = head.oc
    precondition(t.hasSame || !t.cross.isEmpty, "lmHeadDistill: neither teachers nor top-k rows")
    precondition(t.teachers.map { $0.vocabSize == v } ?? true, "lmHeadDistill: teacher vocabulary ≠ student vocabulary \(v)")
    let teacherLogits = scratch.spare(0, count: t.topK == nil && t.teachers != nil ? t.teachers!.bufferCount(rows: scratch.rows) : 0)
    let crossPer = t.cross.isEmpty ? 0 : v + crossTokenizerScratch(v: v, k: t.cross.map(\.rows.k).max()!)
    let threads = max(1, Parallel.threads), base = 3 * v + 2 * ((t.topK?.k ?? 0) + 1), per = base + crossPer
    let work = scratch.spare(1, count: threads * per)
    let training = dweight != nil
    let heads = HeadMultiplier(head, rows: n, inputGradient: dinp != nil, scratch: scratch)
    var r0 = 0
    while r0 < n {
        let m = min(scratch.rows, n - r0)
        let s = scratch.logits.base, x = inp + r0 * c
        heads.logits(out: s, inp: x, m: m)
        if t.topK == nil, let teachers = t.teachers {
            teachers.projectChunk(r0: r0, m: m, buffer: teacherLogits)
        }
        Parallel.forRanges(threads) { tlo, thi in
            for th in tlo..<thi {
                let g = work + th * per, w = g + v
                for i in (m * th / threads)..<(m * (th + 1) / threads) {
                    let row = s + i * v, target = Int(targets[r0 + i])
                    guard target >= 0 else {
                        ce[r0 + i] = 0
                        kd[r0 + i] = 0
                        agree?[r0 + i] = 0
                        if training { row.update(repeating: 0, count: v) }
                        continue
                    }
                    let studentTop = agree == nil ? 0 : rowArgmax(row, v)
                    let r = r0 + i, sameScale = lossScale * t.kdWeight * t.sameWeight
                    let ceWeight = t.ceWeights.map { $0[r0 + i] } ?? (1 - t.kdRatio)
                    var value = 0.0, teacherTop = -1
                    // at T = 1 with one vocabulary the cross-entropy comes from the divergence's softmax, and the
                    // whole gradient is written over the logits
                    var fusedCE: Float?
                    if let tk = t.topK {
                        teacherTop = Int(tk.ids[r * tk.k + rowArgmax(tk.logProbs + r * tk.k, tk.k)])
                        value = Double(t.sameWeight) * divergenceRowTopK(t.divergence, ids: tk.ids + r * tk.k, logProbs: tk.logProbs + r * tk.k,
                                                                         logTail: tk.logTail[r], k: tk.k, studentLogits: row, v: v,
                                                                         temperature: t.temperature, grad: training ? g : nil,
                                                                         scale: sameScale, scratch: w)
                    } else if let teachers = t.teachers {
                        let trow = teachers.rowLogProbs(i: i, r: r, m: m, buffer: teacherLogits, temperature: t.temperature, scratch: w)
                        teacherTop = rowArgmax(trow, v)
                        if t.temperature == 1 && t.cross.isEmpty {
                            let both = divergenceAndCrossEntropyRow(t.divergence, teacherLogProbs: trow, studentLogits: row, v: v, target: target,
                                                                    grad: training ? row : nil, scale: sameScale,
                                                                    ceScale: lossScale * ceWeight, scratch: w)
                            value = Double(t.sameWeight) * both.value
                            fusedCE = both.ce
                        } else {
                            value = Double(t.sameWeight) * divergenceRow(t.divergence, teacherLogProbs: trow, studentLogits: row, v: v,
                                                                         temperature: t.temperature, grad: training ? g : nil,
                                                                         scale: sameScale, scratch: w)
                        }
                    } else if training {
                        g.update(repeating: 0, count: v)
                    }
                    // teachers of other vocabularies add their weighted terms (gradient through a second row buffer)
                    for (ci, c) in t.cross.enumerated() {
                        let rows = c.rows, ids = rows.ids + r * rows.k, g2 = work + th * per + base
                        guard ids[0] >= 0 else { continue }
                        if !t.hasSame && ci == 0 { teacherTop = Int(c.teacherToStudent[Int(ids[rowArgmax(rows.logProbs + r * rows.k, rows.k)])]) }
                        value += Double(c.weight) * crossTokenizerRow(t.crossLoss, t.divergence, ids: ids, logProbs: rows.logProbs + r * rows.k,
                                                                      logTail: rows.logTail[r], k: rows.k, map: c.teacherToStudent,
                                                                      studentLogits: row, v: v, temperature: t.temperature,
                                                                      grad: training ? g2 : nil, scale: lossScale * t.kdWeight * c.weight,
                                                                      uldWeight: t.uldWeight, scratch: g2 + v)
                        if training { for j in 0..<v { g[j] += g2[j] } }
                    }
                    if let agree { agree[r] = teacherTop == studentTop ? 1 : 0 }
                    kd[r] = Float(value)
                    if let fusedCE {
                        ce[r0 + i] = fusedCE
                    } else {
                        ce[r0 + i] = crossEntropyRow(row, target: target, v: v, gradScale: training ? lossScale * ceWeight : nil)
                        if training { for j in 0..<v { row[j] += g[j] } }
                    }
                }
            }
        }
        if let dweight { heads.backward(dinp: dinp.map { $0 + r0 * c }, dweight: dweight, dout: s, inp: x, m: m) }
        r0 += m
    }
}

