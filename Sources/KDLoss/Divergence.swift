// Token-level divergences between a teacher distribution p and the student's q = softmax(s / T), with their
// gradients with respect to the raw student logits s. Definitions follow GKD (Agarwal et al. 2024), MiniLLM (Gu et
// al. 2024) and DistiLLM (Ko et al. 2024). The value returned is always the true divergence (entropy terms included).
// Dims: v vocabulary.
import Foundation
import KDConfig
import KDCore
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
            return (p > 0 ? Double(p) * Double(lp - logf(m)) : 0, -(1 - l) * p / m)
        case .skewReverseKL(let l):
            let m = l * q + (1 - l) * p
            guard m > 0 else { return (0, 0) }
            let lm = logf(m)
            return (q > 0 ? Double(q) * Double(lq - lm) : 0, lq + 1 - lm - l * q / m)
        case .jsd(let b):  // 0 < β < 1: ∂D/∂q_j simplifies to (1−β)(log q_j − log m_j)
            let m = b * p + (1 - b) * q
            guard m > 0 else { return (0, 0) }
            let lm = logf(m)
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
    for j in 0..<v { q[j] = fastExp(lq[j]) }
    let kind = d.normalized
    var value = 0.0
    switch kind {
    // for these three the chain q_j (a_j − Σ q a) has closed forms (FKL: q − p) that need no division by q
    case .forwardKL:
        for j in 0..<v { value += kind.element(p: fastExp(lp[j]), q: q[j], lp: lp[j], lq: lq[j]).value }
        if let g = grad {
            for j in 0..<v { g[j] = scale / T * (q[j] - fastExp(lp[j])) }
        }
    case .reverseKL:
        for j in 0..<v { value += kind.element(p: fastExp(lp[j]), q: q[j], lp: lp[j], lq: lq[j]).value }
        if let g = grad {
            let r = Float(value)
            for j in 0..<v { g[j] = scale / T * q[j] * (lq[j] - lp[j] - r) }
        }
    case .mixedKL(let a):
        var rkl = 0.0
        for j in 0..<v {
            value += kind.element(p: fastExp(lp[j]), q: q[j], lp: lp[j], lq: lq[j]).value
            rkl += Divergence.reverseKL.element(p: 0, q: q[j], lp: lp[j], lq: lq[j]).value
        }
        if let g = grad {
            let r = Float(rkl)
            for j in 0..<v { g[j] = scale / T * (a * (q[j] - fastExp(lp[j])) + (1 - a) * q[j] * (lq[j] - lp[j] - r)) }
        }
    case .skewForwardKL, .skewReverseKL, .jsd, .tvd:
        var sqa = 0.0
        for j in 0..<v {
            let e = kind.element(p: fastExp(lp[j]), q: q[j], lp: lp[j], lq: lq[j])
            value += e.value
            grad?[j] = e.a
            sqa += Double(q[j]) * Double(e.a)
        }
        if let g = grad {
            let c = Float(sqa)
            for j in 0..<v { g[j] = scale / T * q[j] * (g[j] - c) }
        }
    }
    return value
}

#if canImport(Glibc)
import Glibc
#endif
