// Token-level divergences between a teacher distribution p and the student's q = softmax(s / T), with their
// gradients with respect to the raw student logits s. Definitions follow GKD (Agarwal et al. 2024), MiniLLM (Gu et
// al. 2024) and DistiLLM (Ko et al. 2024). The value returned is always the true divergence (entropy terms included).
// Dims: v vocabulary.
import Foundation
import KDConfig
import KDCore
import CKDKernels
import KDOps

/// Which divergence D(p, q) to minimize.
public enum Divergence: Equatable, Sendable, CustomStringConvertible {
    /// KL(p‖q): mode-covering (classic KD).
    case forwardKL
    /// KL(q‖p): mode-seeking (MiniLLM).
    case reverseKL
    /// KL(p ‖ λp + (1−λ)q) (DistiLLM skew KL); gradient flows through q inside the mixture.
    case skewForwardKL(lambda: Float)
    /// KL(q ‖ λq + (1−λ)p) (DistiLLM skew reverse KL).
    case skewReverseKL(lambda: Float)
    /// β·KL(p‖m) + (1−β)·KL(q‖m), m = βp + (1−β)q; exactly KL(p‖q) at β = 0 and KL(q‖p) at β = 1 (GKD).
    case jsd(beta: Float)
    /// ½ Σ |p − q|.
    case tvd
    /// α·KL(p‖q) + (1−α)·KL(q‖p): a weighted mix of the two directions.
    case mixedKL(alpha: Float)

    public var description: String {
        switch self {
        case .forwardKL: return "fkl"
        case .reverseKL: return "rkl"
        case .skewForwardKL(let l): return "skew_fkl(λ=\(l))"
        case .skewReverseKL(let l): return "skew_rkl(λ=\(l))"
        case .jsd(let b): return "jsd(β=\(b))"
        case .tvd: return "tvd"
        case .mixedKL(let a): return "fkl_rkl(α=\(a))"
        }
    }
}

extension Divergence {
    /// The same divergence with JSD_β's endpoints as the exact KLs they equal (β = 0: KL(p‖q), β = 1: KL(q‖p)).
    var normalized: Divergence {
        if case .jsd(let b) = self { if b <= 0 { return .forwardKL } else if b >= 1 { return .reverseKL } }
        return self
    }

    /// The definition every path uses (dense rows, the k + 1 buckets of a top-k row): one element's contribution to
    /// D(p, q) and a = ∂D/∂q of it, from p, q and their logs. The softmax chain then gives ∂D/∂z_j = q_j (a_j − Σ q a).
    /// Call on a ``normalized`` divergence.
    @inline(__always)
    func element(p: Float, q: Float, lp: Float, lq: Float) -> (value: Double, a: Float) {
        switch self {
        case .forwardKL:
            return (p > 0 ? Double(p) * Double(lp - lq) : 0, q > 0 ? -p / q : 0)
        case .reverseKL:
            return (q > 0 ? Double(q) * Double(lq - lp) : 0, q > 0 ? lq - lp + 1 : 0)
        case .mixedKL(let al):
            let f = p > 0 ? Double(p) * Double(lp - lq) : 0, r = q > 0 ? Double(q) * Double(lq - lp) : 0
            return (Double(al) * f + Double(1 - al) * r, q > 0 ? al * (-p / q) + (1 - al) * (lq - lp + 1) : 0)
        case .skewForwardKL(let l):
            let m = l * p + (1 - l) * q
            guard m > 0 else { return (0, 0) }
            return (p > 0 ? Double(p) * Double(lp - fastLog(m)) : 0, -(1 - l) * p / m)
        case .skewReverseKL(let l):
            let m = l * q + (1 - l) * p
            guard m > 0 else { return (0, 0) }
            let lm = fastLog(m)
            return (q > 0 ? Double(q) * Double(lq - lm) : 0, lq + 1 - lm - l * q / m)
        case .jsd(let b):  // 0 < β < 1: ∂D/∂q_j simplifies to (1−β)(log q_j − log m_j)
            let m = b * p + (1 - b) * q
            guard m > 0 else { return (0, 0) }
            let lm = fastLog(m)
            return ((p > 0 ? Double(b) * Double(p) * Double(lp - lm) : 0) + (q > 0 ? Double(1 - b) * Double(q) * Double(lq - lm) : 0),
                    (1 - b) * (lq - lm))
        case .tvd:
            let diff = q - p
            return (0.5 * Double(abs(diff)), diff > 0 ? 0.5 : (diff < 0 ? -0.5 : 0))
        }
    }
}

extension DistillConfig {
    /// The divergence `objective` names, with its parameters from this section.
    public var divergence: Divergence {
        switch objective {
        case .fkl: return .forwardKL
        case .rkl: return .reverseKL
        case .skewFKL: return .skewForwardKL(lambda: skewLambda)
        case .skewRKL: return .skewReverseKL(lambda: skewLambda)
        case .jsd: return .jsd(beta: jsdBeta)
        case .tvd: return .tvd
        case .fklRKL: return .mixedKL(alpha: mixAlpha)
        }
    }
}

/// A sum of f32 terms sixteen lanes at a time, flushed to Double every 64 vectors (1,024 terms): forward and reverse
/// KL's row values, within ~1e-7 of Σ|terms| of the elementwise Double sum.
struct LaneSum {
    var lanes = V16(repeating: 0), flushed = 0.0, vectors = 0
    /// Adds the lanes of `terms` whose `weight` is > 0 (a probability: zero-mass terms count 0, as the definition says).
    @inline(__always) mutating func add(_ terms: V16, where weight: V16) {
        lanes += terms.replacing(with: 0, where: weight .<= 0)
        vectors += 1
        if vectors == 64 { flushed += Double(lanes.sum()); lanes = V16(repeating: 0); vectors = 0 }
    }
    /// `vectors` (≤ 64) vectors' lanes summed from zero elsewhere (kd_skew_lanes_avx512), exactly as that many add calls
    /// from a flush: only at the start of a flush period.
    @inline(__always) mutating func addLanes(_ summed: V16, vectors n: Int) {
        precondition(vectors == 0 && n <= 64, "LaneSum.addLanes: in the middle of a flush period")
        if n == 64 { flushed += Double(summed.sum()) } else { lanes = summed; vectors = n }
    }
    var total: Double { flushed + Double(lanes.sum()) }
}

/// In place: x ← x/T − log Σ e^(x/T) (log-softmax at temperature T); returns nothing.
@inline(__always)
public func logSoftmaxInPlace(_ x: UnsafeMutablePointer<Float>, _ v: Int, temperature T: Float, scratch: UnsafeMutablePointer<Float>) {
    if T != 1 { scaleRow(x, v, 1 / T) }
    let m = rowMax(x, v)
    let s = expShiftSum(scratch, x, v, shift: m)
    let lse = m + logf(s)
    for i in 0..<v { x[i] -= lse }
}

/// D(p, q) for one row, p given as log-probabilities `lp`, q = softmax(s / T) from raw student logits `s`.
/// With `grad`, writes scale · ∂D/∂s there (overwriting). `scratch` holds 2·v Floats.
/// - Shapes: lp, s, grad [v] · scratch [2v]
public func divergenceRow(
    _ d: Divergence, teacherLogProbs lp: UnsafePointer<Float>, studentLogits s: UnsafePointer<Float>, v: Int,
    temperature T: Float, grad: UnsafeMutablePointer<Float>?, scale: Float, scratch: UnsafeMutablePointer<Float>
) -> Double {
    let lq = scratch, q = scratch + v
    lq.update(from: s, count: v)
    logSoftmaxInPlace(lq, v, temperature: T, scratch: q)
    // e^x sixteen lanes at a time (simdExp: the lanes are exactly the scalar fastExp). The value is the per-element
    // definition's sum: element by element in Double, except forward and reverse KL, whose terms go through a
    // ``LaneSum`` (the gradient of forward KL does not read the value, reverse KL's reads it as a Float)
    expRow(q, lq, v)
    let kind = d.normalized, k = scale / T
    // With a gradient, p = e^lp is written over it first in one row pass (expRow: on AVX-512 where the CPU has it); every
    // case below reads p at j before it writes the gradient at j. Reverse KL needs no p.
    let pInGrad: UnsafeMutablePointer<Float>? = kind == .reverseKL || (kind.skewKernel != nil && RowKernels.avx512) ? nil : grad
    if let pInGrad { expRow(pInGrad, lp, v) }
    /// p = e^lp for the 16 elements from j (the tail: fewer lanes are read by the callers).
    @inline(__always) func pChunk(_ j: Int) -> V16 {
        if let pInGrad {
            if j + 16 <= v { return loadV16(pInGrad + j) }
            var t = V16(repeating: 0)
            for i in 0..<(v - j) { t[i] = pInGrad[j + i] }
            return t
        }
        if j + 16 <= v { return simdExp(loadV16(lp + j)) }
        var t = V16(repeating: 0)
        for i in 0..<(v - j) { t[i] = fastExp(lp[j + i]) }
        return t
    }
    var value = 0.0
    switch kind {
    // for these three the chain q_j (a_j − Σ q a) has closed forms (FKL: q − p) that need no division by q
    case .forwardKL:
        // Σ p (lp − lq) over p > 0
        var j = 0, sum = LaneSum()
        while j < v {
            let p = pChunk(j), n = min(16, v - j)
            if n == 16 {
                sum.add(p * (loadV16(lp + j) - loadV16(lq + j)), where: p)
            } else {
                for i in 0..<n { value += kind.element(p: p[i], q: q[j + i], lp: lp[j + i], lq: lq[j + i]).value }
            }
            if let g = grad {
                if n == 16 { storeV16(V16(repeating: k) * (loadV16(q + j) - p), g + j) } else { for i in 0..<n { g[j + i] = k * (q[j + i] - p[i]) } }
            }
            j += 16
        }
        value += sum.total
    case .reverseKL:
        // Σ q (lq − lp) over q > 0
        var j = 0, sum = LaneSum()
        while j + 16 <= v {
            let qv = loadV16(q + j)
            sum.add(qv * (loadV16(lq + j) - loadV16(lp + j)), where: qv)
            j += 16
        }
        value = sum.total
        for i in j..<v { value += kind.element(p: 0, q: q[i], lp: lp[i], lq: lq[i]).value }
        if let g = grad {
            let r = Float(value)
            var j = 0
            while j + 16 <= v {
                storeV16(V16(repeating: k) * loadV16(q + j) * (loadV16(lq + j) - loadV16(lp + j) - V16(repeating: r)), g + j)
                j += 16
            }
            for i in j..<v { g[i] = k * q[i] * (lq[i] - lp[i] - r) }
        }
    case .mixedKL(let a):
        var rkl = 0.0, j = 0
        while j < v {
            let p = pChunk(j), n = min(16, v - j)
            for i in 0..<n {
                value += kind.element(p: p[i], q: q[j + i], lp: lp[j + i], lq: lq[j + i]).value
                rkl += Divergence.reverseKL.element(p: 0, q: q[j + i], lp: lp[j + i], lq: lq[j + i]).value
            }
            if let g = grad { for i in 0..<n { g[j + i] = p[i] } }  // p, for the gradient below
            j += 16
        }
        if let g = grad {
            let r = Float(rkl)
            for j in 0..<v { g[j] = k * (a * (q[j] - g[j]) + (1 - a) * q[j] * (lq[j] - lp[j] - r)) }
        }
    case .skewForwardKL, .skewReverseKL, .jsd:
        // the logarithms and divisions sixteen lanes at a time (``skewLanes``: each lane's a is exactly
        // ``Divergence/element``'s), the value and Σ q·a summed in f32 lanes (``LaneSum``) as forward and reverse KL's
        var sum = LaneSum(), qa = LaneSum(), sqa = 0.0, j = 0
        if RowKernels.avx512, let (code, l) = kind.skewKernel {
            // the same lanes on AVX-512 (CKDKernels/rows.c, p = e^lp computed there), LaneSum's 64 vectors per call
            var terms = V16(repeating: 0), qas = V16(repeating: 0)
            while j + 16 <= v {
                let n = min(1024, (v - j) & ~15)
                withUnsafeMutablePointer(to: &terms) { t in withUnsafeMutablePointer(to: &qas) { a in
                    kd_skew_lanes_avx512(code, l, lp + j, q + j, lq + j, n, grad.map { $0 + j },
                                         UnsafeMutableRawPointer(t).assumingMemoryBound(to: Float.self),
                                         UnsafeMutableRawPointer(a).assumingMemoryBound(to: Float.self))
                } }
                sum.addLanes(terms, vectors: n / 16)
                qa.addLanes(qas, vectors: n / 16)
                j += n
            }
        }
        while j + 16 <= v {
            let qv = loadV16(q + j), lanes = skewLanes(kind, p: pChunk(j), q: qv, lp: loadV16(lp + j), lq: loadV16(lq + j))
            if let g = grad { storeV16(lanes.a, g + j) }
            sum.add(lanes.terms, where: lanes.weight)
            qa.add(qv * lanes.a, where: qv)
            j += 16
        }
        while j < v {
            let e = kind.element(p: fastExp(lp[j]), q: q[j], lp: lp[j], lq: lq[j])
            value += e.value
            grad?[j] = e.a
            sqa += Double(q[j]) * Double(e.a)
            j += 1
        }
        value += sum.total
        sqa += qa.total
        if let g = grad {
            let c = Float(sqa)
            for j in 0..<v { g[j] = k * q[j] * (g[j] - c) }
        }
    case .tvd:
        var sqa = 0.0, j = 0
        while j < v {
            let p = pChunk(j), n = min(16, v - j)
            for i in 0..<n {
                let e = kind.element(p: p[i], q: q[j + i], lp: lp[j + i], lq: lq[j + i])
                value += e.value
                grad?[j + i] = e.a
                sqa += Double(q[j + i]) * Double(e.a)
            }
            j += 16
        }
        if let g = grad {
            let c = Float(sqa)
            for j in 0..<v { g[j] = k * q[j] * (g[j] - c) }
        }
    }
    return value
}

extension Divergence {
    /// kd_skew_lanes_avx512's kind code and λ (β) for the skew KLs and JSD; nil for the others.
    var skewKernel: (Int32, Float)? {
        switch self {
        case .skewForwardKL(let l): return (0, l)
        case .skewReverseKL(let l): return (1, l)
        case .jsd(let b): return (2, b)
        default: return nil
        }
    }
}

/// ``Divergence/element(p:q:lp:lq:)`` of skew forward / reverse KL and JSD for sixteen elements: a exactly the
/// element's (the same Float operations in the same order), the terms of the value in Float, and a weight that is > 0
/// where the element's value counts.
@inline(__always)
func skewLanes(_ kind: Divergence, p: V16, q: V16, lp: V16, lq: V16) -> (terms: V16, a: V16, weight: V16) {
    switch kind {
    case .skewForwardKL(let l):
        let m = V16(repeating: l) * p + V16(repeating: 1 - l) * q, off = .!(m .> 0)
        let a = (V16(repeating: -(1 - l)) * p / m).replacing(with: 0, where: off)
        return (p * (lp - simdLog(m)), a, p.replacing(with: 0, where: off))
    case .skewReverseKL(let l):
        let m = V16(repeating: l) * q + V16(repeating: 1 - l) * p, off = .!(m .> 0), lm = simdLog(m)
        let a = (lq + 1 - lm - V16(repeating: l) * q / m).replacing(with: 0, where: off)
        return (q * (lq - lm), a, q.replacing(with: 0, where: off))
    case .jsd(let b):
        let m = V16(repeating: b) * p + V16(repeating: 1 - b) * q, off = .!(m .> 0), lm = simdLog(m)
        let dq = lq - lm
        let tp = (V16(repeating: b) * p * (lp - lm)).replacing(with: 0, where: .!(p .> 0))
        let tq = (V16(repeating: 1 - b) * q * dq).replacing(with: 0, where: .!(q .> 0))
        return (tp + tq, (V16(repeating: 1 - b) * dq).replacing(with: 0, where: off), m.replacing(with: 0, where: off))
    default:
        preconditionFailure("skewLanes: \(kind)")
    }
}

/// ``divergenceRow`` at T = 1 together with the row's cross-entropy, from the one student softmax: returns D(p, q) and
/// −log q[target] (the bits ``crossEntropyRow`` returns: both are lse − s[target] from the same sum). With `grad`, writes
/// scale · ∂D/∂s + ceScale · (q − onehot(target)) there; `grad` may be `s` itself (s is read before grad is written).
/// `scratch` holds 2·v Floats. - Shapes: lp, s, grad [v] · scratch [2v]
public func divergenceAndCrossEntropyRow(
    _ d: Divergence, teacherLogProbs lp: UnsafePointer<Float>, studentLogits s: UnsafePointer<Float>, v: Int, target: Int,
    grad: UnsafeMutablePointer<Float>?, scale: Float, ceScale: Float, scratch: UnsafeMutablePointer<Float>
) -> (value: Double, ce: Float) {
    precondition(target >= 0 && target < v, "divergenceAndCrossEntropyRow: target \(target) outside vocabulary of \(v)")
    let value = divergenceRow(d, teacherLogProbs: lp, studentLogits: s, v: v, temperature: 1, grad: grad, scale: scale, scratch: scratch)
    // divergenceRow leaves log q in scratch[0 ..< v] and q in scratch[v ..< 2v]
    let lq = scratch, q = scratch + v
    if let g = grad {
        let cs = V16(repeating: ceScale)
        var j = 0
        while j + 16 <= v {
            storeV16(loadV16(g + j) + cs * loadV16(q + j), g + j)
            j += 16
        }
        while j < v { g[j] += ceScale * q[j]; j += 1 }
        g[target] -= ceScale
    }
    return (value, -lq[target])
}

#if canImport(Glibc)
import Glibc
#endif
