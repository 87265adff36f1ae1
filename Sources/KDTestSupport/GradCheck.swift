// Finite-difference checking for forward/backward pairs (llm.c style: loss L = Σ out·dout, accumulated in Double).
import KDCore

/// Deterministic test tensors from the counter-based RNG.
public func randomArray(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    let rng = CounterRNG(seed: seed, purpose: .test)
    return (0..<count).map { rng.normal(UInt64($0)) * scale }
}

/// L = Σ out_i · dout_i in Double.
public func fakeLoss(_ out: [Float], _ dout: [Float]) -> Double {
    precondition(out.count == dout.count, "fakeLoss: \(out.count) outputs vs \(dout.count) weights")
    var s: Double = 0
    for i in 0..<out.count { s += Double(out[i]) * Double(dout[i]) }
    return s
}

/// Central differences (L(x + eps·e_i) − L(x − eps·e_i)) / 2eps for every coordinate of `x`.
/// `loss` must be a pure function of its argument.
public func numericalGradient(_ x: [Float], eps: Float = 1e-2, loss: ([Float]) -> Double) -> [Float] {
    var g = [Float](repeating: 0, count: x.count)
    var xp = x
    for i in 0..<x.count {
        let orig = xp[i]
        xp[i] = orig + eps
        let lp = loss(xp)
        xp[i] = orig - eps
        let lm = loss(xp)
        xp[i] = orig
        // the step actually taken in Float, not the nominal eps
        let h = Double(orig + eps) - Double(orig - eps)
        g[i] = Float((lp - lm) / h)
    }
    return g
}

/// max_i |a_i − b_i| / max(max_j |b_j|, 1e-6): the worst error relative to the gradient's own scale.
/// Per-element relative error blows up on near-zero entries whose absolute error is pure rounding noise;
/// scaling by the largest entry keeps the test sensitive to real mistakes (wrong sign, missing term).
public func maxRelError(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "maxRelError: \(a.count) vs \(b.count) elements")
    var scale: Float = 1e-6, worst: Float = 0
    for x in b { scale = max(scale, abs(x)) }
    for i in 0..<a.count { worst = max(worst, abs(a[i] - b[i])) }
    return worst / scale
}
