// The dense divergence row runs its exponentials sixteen lanes at a time; this checks it against the same definition
// evaluated one element at a time (Divergence.element, the scalar fastExp and fastLog), bit for bit (forward and
// reverse KL, the skew KLs and JSD sum their values in f32 lanes: within 1e-6 of Σ|terms|, and the gradients that read
// such a sum within 1e-6), on a row longer than the 1,024-element flush whose length is
// not a multiple of 16 (the tail path) and with a teacher that puts almost no mass on some tokens.
import CKDKernels
import Foundation
@testable import KDLoss
import KDOps
import Testing

/// D and scale/T · ∂D/∂s one element at a time, from the per-element definition and the softmax chain.
func elementwiseRow(_ d: Divergence, lp: [Float], s: [Float], T: Float, scale: Float) -> (value: Double, grad: [Float]) {
    let v = s.count
    var lq = s, sc = [Float](repeating: 0, count: v)
    lq.withUnsafeMutableBufferPointer { l in sc.withUnsafeMutableBufferPointer { logSoftmaxInPlace(l.baseAddress!, v, temperature: T, scratch: $0.baseAddress!) } }
    let q = lq.map(fastExp), p = lp.map(fastExp), kind = d.normalized, k = scale / T
    var value = 0.0, a = [Float](repeating: 0, count: v)
    for j in 0..<v {
        let e = kind.element(p: p[j], q: q[j], lp: lp[j], lq: lq[j])
        value += e.value
        a[j] = e.a
    }
    var g = [Float](repeating: 0, count: v)
    switch kind {
    case .forwardKL: for j in 0..<v { g[j] = k * (q[j] - p[j]) }
    case .reverseKL: for j in 0..<v { g[j] = k * q[j] * (lq[j] - lp[j] - Float(value)) }
    case .mixedKL(let al):
        var rkl = 0.0
        for j in 0..<v { rkl += Divergence.reverseKL.element(p: 0, q: q[j], lp: lp[j], lq: lq[j]).value }
        for j in 0..<v { g[j] = k * (al * (q[j] - p[j]) + (1 - al) * q[j] * (lq[j] - lp[j] - Float(rkl))) }
    default:
        var sqa = 0.0
        for j in 0..<v { sqa += Double(q[j]) * Double(a[j]) }
        for j in 0..<v { g[j] = k * q[j] * (a[j] - Float(sqa)) }
    }
    return (value, g)
}

/// Σ |term| of D's per-element definition (the scale of its summation error).
func elementwiseMagnitude(_ d: Divergence, lp: [Float], s: [Float], T: Float) -> Double {
    var lq = s, sc = [Float](repeating: 0, count: s.count)
    lq.withUnsafeMutableBufferPointer { l in sc.withUnsafeMutableBufferPointer { logSoftmaxInPlace(l.baseAddress!, s.count, temperature: T, scratch: $0.baseAddress!) } }
    return (0..<s.count).reduce(0.0) { $0 + abs(d.normalized.element(p: fastExp(lp[$1]), q: fastExp(lq[$1]), lp: lp[$1], lq: lq[$1]).value) }
}

@Test(arguments: [Divergence.forwardKL, .reverseKL, .mixedKL(alpha: 0.3), .skewForwardKL(lambda: 0.1), .skewReverseKL(lambda: 0.1),
                  .jsd(beta: 0.5), .tvd])
func theVectorRowIsTheElementwiseDefinitionBitForBit(d: Divergence) {
    let v = 16 * 70 + 7, T: Float = 1.5, scale: Float = 0.37
    let s = (0..<v).map { Float(sin(Double($0) * 1.3)) * 4 }
    var teacher = (0..<v).map { Float(cos(Double($0) * 0.7)) * 5 }
    for j in stride(from: 3, to: v, by: 11) { teacher[j] = -90 }   // tokens the teacher all but never emits
    let lp = logProbs(teacher, T)
    var grad = [Float](repeating: 0, count: v), scratch = [Float](repeating: 0, count: 2 * v)
    let got = lp.withUnsafeBufferPointer { l in s.withUnsafeBufferPointer { sp in grad.withUnsafeMutableBufferPointer { g in
        scratch.withUnsafeMutableBufferPointer {
            divergenceRow(d, teacherLogProbs: l.baseAddress!, studentLogits: sp.baseAddress!, v: v, temperature: T, grad: g.baseAddress!,
                          scale: scale, scratch: $0.baseAddress!)
        } } } }
    let want = elementwiseRow(d, lp: lp, s: s, T: T, scale: scale)
    switch d {
    case .forwardKL, .reverseKL, .skewForwardKL, .skewReverseKL, .jsd:
        // their terms are summed in f32 lanes (each term within an f32 rounding, the sums within v·u of Σ|terms|)
        let magnitude = elementwiseMagnitude(d, lp: lp, s: s, T: T)
        #expect(abs(got - want.value) <= 1e-6 * magnitude, "\(d): value \(got) vs \(want.value) (Σ|terms| \(magnitude))")
        if case .forwardKL = d { #expect(grad == want.grad, "\(d): gradient differs") }
        else { for j in 0..<v { #expect(abs(grad[j] - want.grad[j]) <= 1e-6 * (abs(want.grad[j]) + scale / T), "\(d) [\(j)]") } }
    default:
        #expect(got == want.value, "\(d): value \(got) vs \(want.value)")
        #expect(grad == want.grad, "\(d): gradient differs")
    }
    #expect(got.isFinite && grad.allSatisfy(\.isFinite))
}

/// At T = 1 the distillation row takes its cross-entropy from the divergence's softmax: the loss is crossEntropyRow's
/// bit for bit, the divergence value divergenceRow's bit for bit, and the gradient (written over the logits) is
/// divergenceRow's plus crossEntropyRow's within a few f32 roundings of each term (q comes from exp(log q) instead of
/// e^(s − max)/Σ); target at the start, middle and tail.
@Test(arguments: [Divergence.forwardKL, .reverseKL, .mixedKL(alpha: 0.3), .skewReverseKL(lambda: 0.1), .jsd(beta: 0.5), .tvd])
func theCrossEntropyFromTheDivergenceSoftmaxIsTheSeparateRows(d: Divergence) {
    let v = 16 * 5 + 7, scale: Float = 0.37, ceScale: Float = 0.21
    let s = (0..<v).map { Float(sin(Double($0) * 1.3)) * 4 }
    let lp = logProbs((0..<v).map { Float(cos(Double($0) * 0.7)) * 5 }, 1)
    for target in [0, 40, v - 1] {
        var fused = s, scratch = [Float](repeating: 0, count: 2 * v)
        let got = lp.withUnsafeBufferPointer { l in fused.withUnsafeMutableBufferPointer { f in scratch.withUnsafeMutableBufferPointer {
            divergenceAndCrossEntropyRow(d, teacherLogProbs: l.baseAddress!, studentLogits: f.baseAddress!, v: v, target: target,
                                         grad: f.baseAddress!, scale: scale, ceScale: ceScale, scratch: $0.baseAddress!)
        } } }
        var g = [Float](repeating: 0, count: v), ceRow = s
        let value = lp.withUnsafeBufferPointer { l in s.withUnsafeBufferPointer { sp in g.withUnsafeMutableBufferPointer { gp in
            scratch.withUnsafeMutableBufferPointer {
                divergenceRow(d, teacherLogProbs: l.baseAddress!, studentLogits: sp.baseAddress!, v: v, temperature: 1, grad: gp.baseAddress!,
                              scale: scale, scratch: $0.baseAddress!)
            } } } }
        let ce = ceRow.withUnsafeMutableBufferPointer { crossEntropyRow($0.baseAddress!, target: target, v: v, gradScale: ceScale) }
        #expect(got.value == value && got.ce == ce, "\(d) target \(target): (\(got.value), \(got.ce)) vs (\(value), \(ce))")
        for j in 0..<v {
            let want = g[j] + ceRow[j], tol = 4 * Float.ulpOfOne * (abs(g[j]) + abs(ceRow[j]) + ceScale)
            #expect(abs(fused[j] - want) <= tol, "\(d) target \(target) [\(j)]: \(fused[j]) vs \(want)")
        }
    }
}

/// CKDKernels' AVX-512 skew KL / JSD lanes (divergenceRow's loop where the CPU has AVX-512) are ``skewLanes`` bit for
/// bit: every a, and LaneSum's lanes of the terms and of q·a, on ordinary rows, a teacher or student with (almost) no
/// mass on some tokens, and special inputs (−∞ log-probabilities, zero and denormal probabilities, NaN).
@Test(.enabled(if: kd_cpu_has_avx512() == 1, "this CPU has no AVX-512 (the skew lanes run in Swift)"),
      arguments: [Divergence.skewForwardKL(lambda: 0.1), .skewReverseKL(lambda: 0.1), .skewReverseKL(lambda: 0.37), .jsd(beta: 0.5), .jsd(beta: 0.9)])
func avx512SkewLanesAreTheSwiftLanesBitForBit(d: Divergence) {
    let n = 1024
    var lp = (0..<n).map { Float(cos(Double($0) * 0.7)) * 5 - 11 }, lq = (0..<n).map { Float(sin(Double($0) * 1.3)) * 4 - 10 }
    for j in stride(from: 3, to: n, by: 11) { lp[j] = -95 }        // p underflows to 0 (exp's clamp) and below
    for j in stride(from: 5, to: n, by: 13) { lq[j] = -104 }
    let specials: [(Float, Float)] = [(-.infinity, -3), (-3, -.infinity), (-.infinity, -.infinity), (.nan, -2), (-2, .nan), (0, 0), (-87.3, -120)]
    for (i, (a, b)) in specials.enumerated() { lp[i * 17] = a; lq[i * 17] = b }
    let q = lq.map { $0 < -103 ? Float.leastNonzeroMagnitude : fastExp($0) }   // a denormal q where lq is far below
    let (code, l) = d.skewKernel!
    var a = [Float](repeating: 0, count: n), terms = [Float](repeating: 0, count: 16), qa = [Float](repeating: 0, count: 16)
    kd_skew_lanes_avx512(code, l, lp, q, lq, n, &a, &terms, &qa)
    var sum = V16(repeating: 0), qsum = V16(repeating: 0)
    for j in stride(from: 0, to: n, by: 16) {
        let qv = V16(q[j..<(j + 16)]), lanes = skewLanes(d, p: simdExp(V16(lp[j..<(j + 16)])), q: qv, lp: V16(lp[j..<(j + 16)]), lq: V16(lq[j..<(j + 16)]))
        for i in 0..<16 { #expect(a[j + i].bitPattern == lanes.a[i].bitPattern, "\(d) a[\(j + i)]: \(a[j + i]) vs \(lanes.a[i])") }
        sum += lanes.terms.replacing(with: 0, where: lanes.weight .<= 0)
        qsum += (qv * lanes.a).replacing(with: 0, where: qv .<= 0)
    }
    for i in 0..<16 {
        #expect(terms[i].bitPattern == sum[i].bitPattern, "\(d) terms lane \(i): \(terms[i]) vs \(sum[i])")
        #expect(qa[i].bitPattern == qsum[i].bitPattern, "\(d) q·a lane \(i): \(qa[i]) vs \(qsum[i])")
    }
}
