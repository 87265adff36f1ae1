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
    // normalize the β endpoints to the exact KLs
    var kind = d
    if case .jsd(let b) = d { if b <= 0 { kind = .forwardKL } else if b >= 1 { kind = .reverseKL } }
    var value = 0.0
    // a_j = ∂D/∂q_j for the mixture-based divergences; the softmax chain then gives ∂D/∂z_j = q_j (a_j − Σ q a)
    switch kind {
    case .forwardKL:
        for j in 0..<v {
            let p = fastExp(lp[j])
            if p > 0 { value += Double(p) * Double(lp[j] - lq[j]) }
        }
        if let g = grad {
            for j in 0..<v { g[j] = scale / T * (q[j] - fastExp(lp[j])) }
        }
    case .reverseKL:
        for j in 0..<v where q[j] > 0 { value += Double(q[j]) * Double(lq[j] - lp[j]) }
        if let g = grad {
            let r = Float(value)
            for j in 0..<v { g[j] = scale / T * q[j] * (lq[j] - lp[j] - r) }
        }
    case .mixedKL(let a):
        var fkl = 0.0, rkl = 0.0
        for j in 0..<v {
            let p = fastExp(lp[j])
            if p > 0 { fkl += Double(p) * Double(lp[j] - lq[j]) }
            if q[j] > 0 { rkl += Double(q[j]) * Double(lq[j] - lp[j]) }
        }
        value = Double(a) * fkl + Double(1 - a) * rkl
        if let g = grad {
            let r = Float(rkl)
            for j in 0..<v { g[j] = scale / T * (a * (q[j] - fastExp(lp[j])) + (1 - a) * q[j] * (lq[j] - lp[j] - r)) }
        }
    case .skewForwardKL(let l), .skewReverseKL(let l), .jsd(let l):
        var sqa = 0.0
        for j in 0..<v {
            let p = fastExp(lp[j])
            let a: Float
            switch kind {
            case .skewForwardKL:
                let m = l * p + (1 - l) * q[j]
                guard m > 0 else { a = 0; break }
                if p > 0 { value += Double(p) * Double(lp[j] - logf(m)) }
                a = -(1 - l) * p / m
            case .skewReverseKL:
                let m = l * q[j] + (1 - l) * p
                guard m > 0 else { a = 0; break }
                let lm = logf(m)
                if q[j] > 0 { value += Double(q[j]) * Double(lq[j] - lm) }
                a = lq[j] + 1 - lm - l * q[j] / m
            default:  // jsd, 0 < β < 1: ∂D/∂q_j simplifies to (1−β)(log q_j − log m_j)
                let m = l * p + (1 - l) * q[j]
                guard m > 0 else { a = 0; break }
                let lm = logf(m)
                if p > 0 { value += Double(l) * Double(p) * Double(lp[j] - lm) }
                if q[j] > 0 { value += Double(1 - l) * Double(q[j]) * Double(lq[j] - lm) }
                a = (1 - l) * (lq[j] - lm)
            }
            if let g = grad { g[j] = a }
            sqa += Double(q[j]) * Double(a)
        }
        if let g = grad {
            let c = Float(sqa)
            for j in 0..<v { g[j] = scale / T * q[j] * (g[j] - c) }
        }
    case .tvd:
        var sqa = 0.0
        for j in 0..<v {
            let diff = q[j] - fastExp(lp[j])
            value += 0.5 * Double(abs(diff))
            let a: Float = diff > 0 ? 0.5 : (diff < 0 ? -0.5 : 0)
            grad?[j] = a
            sqa += Double(q[j]) * Double(a)
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
