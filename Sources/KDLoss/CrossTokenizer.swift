// Divergences between a teacher and a student with different vocabularies, at one aligned position. The teacher's
// distribution arrives as top-k rows of its own vocabulary (ids, log-probabilities at T, log tail mass); q =
// softmax(s / T) is the student's over its vocabulary of v tokens.
//   uld  (Boizard et al. 2024, Universal Logit Distillation): the Wasserstein-1 distance between the two distributions
//        sorted in decreasing order, Σ_r |p_(r) − q_(r)|. With k listed teacher tokens it is taken over the k largest
//        of each side plus one bucket for the rest of each: Σ_{r<k} |p_(r) − q_(r)| + |P_rest − Q_rest| (the full
//        definition when k covers both vocabularies).
//   gold (the hybrid of TRL's GOLD trainer): the listed teacher tokens that have a student twin (same bytes, the
//        vocabulary map) are exact buckets, everything else is one bucket on each side, and the configured
//        divergence D is taken over those buckets; plus uld between the remaining parts: the unmapped listed teacher
//        tokens (and the teacher's tail) against the student's tokens outside the mapped buckets, weighted by
//        `uldWeight` (TRL weighs its two parts too; 0 keeps the exact buckets alone).
// Dims: v student vocabulary, k teacher top-k, u listed teacher tokens in a uld term.
import Foundation
import KDConfig
import KDCore
import KDOps

/// `distill.cross_tokenizer`'s losses.
public enum CrossTokenizerLoss: String, Sendable {
    case uld, gold

    /// The loss `distill.cross_tokenizer` names (nil for `off`): the one place the config word becomes the loss.
    public init?(_ setting: CrossTokenizer) {
        switch setting {
        case .off: return nil
        case .uld: self = .uld
        case .gold: self = .gold
        }
    }
}

/// One cross-tokenizer teacher's target for a micro-batch: its top-k rows in its own vocabulary at the student's rows
/// (a row whose first id is negative has no aligned teacher position and carries no divergence) and its vocabulary
/// map. - Shapes: rows [n, k] · teacherToStudent [teacher vocabulary]
public struct CrossTeacherRows {
    public let rows: TopKRows
    public let teacherToStudent: UnsafePointer<Int32>
    /// Its weight in the divergence term (the teachers' weights normalized over all teachers).
    public let weight: Float
    public init(rows: TopKRows, teacherToStudent: UnsafePointer<Int32>, weight: Float) {
        self.rows = rows; self.teacherToStudent = teacherToStudent; self.weight = weight
    }
}

/// Floats `crossTokenizerRow` needs in `scratch`.
public func crossTokenizerScratch(v: Int, k: Int) -> Int { 5 * v + 7 * (k + 1) }

/// The cross-tokenizer divergence of one aligned row; with `grad`, writes scale · ∂/∂s there (overwriting).
/// `d` is the divergence over gold's buckets, `uldWeight` the weight of its ULD part. Returns 0 (and a zero gradient) for an unaligned row (ids[0] < 0).
/// - Shapes: ids, logProbs [k] · map [teacher vocabulary] · s, grad [v] · scratch [crossTokenizerScratch(v, k)]
public func crossTokenizerRow(
    _ loss: CrossTokenizerLoss, _ d: Divergence, ids: UnsafePointer<Int32>, logProbs: UnsafePointer<Float>, logTail: Float, k: Int,
    map: UnsafePointer<Int32>, studentLogits s: UnsafePointer<Float>, v: Int, temperature T: Float,
    grad: UnsafeMutablePointer<Float>?, scale: Float, uldWeight: Float = 1, scratch: UnsafeMutablePointer<Float>
) -> Double {
    grad?.update(repeating: 0, count: v)
    guard ids[0] >= 0 else { return 0 }
    // q [v] · lq [v] · excluded [v] · divergenceRowTopK's [2v + 2(k+1)] · teacher probs, mapped ids, mapped log-probs,
    // uld's heap [5(k+1)]
    let q = scratch, lq = scratch + v, excluded = scratch + 2 * v, part = scratch + 3 * v
    let small = scratch + 5 * v + 2 * (k + 1)
    lq.update(from: s, count: v)
    logSoftmaxInPlace(lq, v, temperature: T, scratch: q)
    expRow(q, lq, v)
    let tp = small                                      // [k] teacher probabilities of the uld part, sorted
    switch loss {
    case .uld:
        for i in 0..<k { tp[i] = expf(logProbs[i]) }
        return uldRow(teacherProbs: tp, u: k, teacherRest: Double(logTail > -.infinity ? expf(logTail) : 0), q: q, v: v,
                      excluded: nil, excludedCount: 0, temperature: T, grad: grad, scale: scale, work: small + (k + 1))
    case .gold:
        // the mapped buckets in student ids, the teacher's unmapped listed probabilities for the uld part
        let mids = UnsafeMutableRawPointer(small + (k + 1)).assumingMemoryBound(to: Int32.self), mlp = small + 2 * (k + 1)
        var m = 0, u = 0, rest = logTail > -.infinity ? Double(expf(logTail)) : 0
        for i in 0..<k {
            let id = ids[i], st = id >= 0 ? map[Int(id)] : -1
            if st >= 0 && Int(st) < v {
                mids[m] = st; mlp[m] = logProbs[i]; m += 1
            } else {
                tp[u] = expf(logProbs[i]); u += 1; rest += Double(tp[u - 1])
            }
        }
        var value = 0.0
        if m > 0 {
            // the unmapped bucket: unmapped listed tokens and the tail, summed directly
            let unmapped = rest > 1e-30 ? Float(log(rest)) : -Float.infinity
            value += divergenceRowTopK(d, ids: mids, logProbs: mlp, logTail: unmapped, k: m, studentLogits: s, v: v, temperature: T,
                                       grad: grad, scale: scale, scratch: part)
        }
        guard uldWeight > 0 else { return value }
        excluded.update(repeating: 0, count: v)
        for i in 0..<m { excluded[Int(mids[i])] = 1 }
        let tailOnly = logTail > -.infinity ? Double(expf(logTail)) : 0
        value += Double(uldWeight) * uldRow(teacherProbs: tp, u: u, teacherRest: tailOnly, q: q, v: v, excluded: excluded, excludedCount: m,
                                            temperature: T, grad: grad, scale: scale * uldWeight, work: small + 3 * (k + 1))
        return value
    }
}

/// Σ_{r<u} |p_(r) − q_(r)| + |P_rest − Q_rest| between the teacher's u listed probabilities (`teacherProbs`, any order;
/// sorted here in place) with the rest of its mass, and the u largest student probabilities among the tokens not
/// `excluded` with the rest of theirs; with `grad`, adds scale · ∂/∂s (s the student's logits, q = softmax(s / T)).
/// `work` holds 2·(u + 1) Floats. - Shapes: teacherProbs [u] · q, excluded (1 = excluded), grad [v]
func uldRow(teacherProbs tp: UnsafeMutablePointer<Float>, u: Int, teacherRest: Double, q: UnsafePointer<Float>, v: Int,
            excluded: UnsafePointer<Float>?, excludedCount: Int, temperature T: Float, grad: UnsafeMutablePointer<Float>?, scale: Float,
            work: UnsafeMutablePointer<Float>) -> Double {
    var sorted = UnsafeMutableBufferPointer(start: tp, count: u)
    sorted.sort(by: >)
    // the student's u largest (ties to the smaller id), largest first; and the total of its included tokens
    let hv = work, hid = UnsafeMutableRawPointer(work + (u + 1)).assumingMemoryBound(to: Int32.self)
    let n = min(u, v - excludedCount)
    var total = 0.0
    _ = TopK.largest(n, of: v, values: hv, ids: hid) { j in
        guard excluded?[j] ?? 0 == 0 else { return nil }
        total += Double(q[j])
        return q[j]
    }
    var value = 0.0, selected = 0.0
    for r in 0..<n {
        value += abs(Double(tp[r]) - Double(hv[r]))
        selected += Double(hv[r])
    }
    // listed teacher tokens beyond the student's count face zeros
    var teacherRest = teacherRest
    for r in n..<u { teacherRest += Double(tp[r]) }
    let studentRest = max(0, total - selected)
    value += abs(teacherRest - studentRest)
    guard let g = grad else { return value }
    // ∂W/∂q_j: the sign of its rank's difference, the rest's sign for the other included tokens, 0 for excluded ones
    let restSign: Float = studentRest > teacherRest ? 1 : (studentRest < teacherRest ? -1 : 0)
    var sqa = 0.0
    // first pass: the rest's sign on every included token (selected ones are corrected below)
    for j in 0..<v where excluded?[j] ?? 0 == 0 { sqa += Double(q[j]) * Double(restSign) }
    for r in 0..<n {
        let sign: Float = hv[r] > tp[r] ? 1 : (hv[r] < tp[r] ? -1 : 0)
        sqa += Double(hv[r]) * Double(sign - restSign)
    }
    let c = Float(sqa), f = scale / T
    for j in 0..<v { g[j] += f * q[j] * ((excluded?[j] ?? 0 == 0 ? restSign : 0) - c) }
    for r in 0..<n {
        let j = Int(hid[r]), sign: Float = hv[r] > tp[r] ? 1 : (hv[r] < tp[r] ? -1 : 0)
        g[j] += f * q[j] * (sign - restSign)
    }
    return value
}
