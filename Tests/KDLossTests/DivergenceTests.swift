// Every divergence: gradient against central finite differences, zero at p = q, non-negative elsewhere, JSD_β
// bounded by the binary entropy of β and exact at its endpoints, skew KL tending to KL as λ → 0.
import Foundation
import KDLoss
import KDOps
import KDTestSupport
import Testing

let v = 19
let allDivergences: [Divergence] = [.forwardKL, .reverseKL, .skewForwardKL(lambda: 0.1), .skewReverseKL(lambda: 0.1),
                                    .skewForwardKL(lambda: 0.5), .jsd(beta: 0.3), .jsd(beta: 0), .jsd(beta: 1), .tvd, .mixedKL(alpha: 0.3)]

func logProbs(_ logits: [Float], _ T: Float = 1) -> [Float] {
    var x = logits, s = [Float](repeating: 0, count: logits.count)
    x.withUnsafeMutableBufferPointer { xp in s.withUnsafeMutableBufferPointer { logSoftmaxInPlace(xp.baseAddress!, logits.count, temperature: T, scratch: $0.baseAddress!) } }
    return x
}

func value(_ d: Divergence, _ lp: [Float], _ s: [Float], T: Float = 1, grad: inout [Float]?) -> Double {
    var scratch = [Float](repeating: 0, count: 2 * s.count)
    return scratch.withUnsafeMutableBufferPointer { sc in
        if grad != nil {
            return grad!.withUnsafeMutableBufferPointer { g in
                divergenceRow(d, teacherLogProbs: lp, studentLogits: s, v: s.count, temperature: T, grad: g.baseAddress!, scale: 1, scratch: sc.baseAddress!)
            }
        }
        return divergenceRow(d, teacherLogProbs: lp, studentLogits: s, v: s.count, temperature: T, grad: nil, scale: 1, scratch: sc.baseAddress!)
    }
}

@Test(arguments: allDivergences, [Float(1), 2])
func gradientMatchesFiniteDifferences(d: Divergence, T: Float) {
    let lp = logProbs(randomArray(v, seed: 41, scale: 2), T)
    let s = randomArray(v, seed: 42, scale: 2)
    var g: [Float]? = [Float](repeating: 0, count: v)
    _ = value(d, lp, s, T: T, grad: &g)
    var none: [Float]? = nil
    let num = numericalGradient(s, eps: d == .tvd ? 1e-3 : 1e-2) { value(d, lp, $0, T: T, grad: &none) }
    #expect(maxRelError(g!, num) < 3e-3, "\(d) T=\(T)")
}

@Test(arguments: allDivergences)
func zeroAtEqualityAndPositiveElsewhere(d: Divergence) {
    var none: [Float]? = nil
    let s = randomArray(v, seed: 43, scale: 2)
    #expect(abs(value(d, logProbs(s), s, grad: &none)) < 1e-6)
    for seed in 0..<5 {
        let lp = logProbs(randomArray(v, seed: 100 + UInt64(seed), scale: 2))
        #expect(value(d, lp, randomArray(v, seed: 200 + UInt64(seed), scale: 2), grad: &none) > 0)
    }
}

@Test func jsdIsBoundedAndExactAtItsEndpoints() {
    var none: [Float]? = nil
    let lp = logProbs(randomArray(v, seed: 44, scale: 6)), s = randomArray(v, seed: 45, scale: 6)
    for beta: Float in [0.05, 0.3, 0.5, 0.9] {
        let h = -Double(beta) * log(Double(beta)) - Double(1 - beta) * log(Double(1 - beta))
        #expect(value(.jsd(beta: beta), lp, s, grad: &none) <= h + 1e-6)
    }
    #expect(value(.jsd(beta: 0), lp, s, grad: &none) == value(.forwardKL, lp, s, grad: &none))
    #expect(value(.jsd(beta: 1), lp, s, grad: &none) == value(.reverseKL, lp, s, grad: &none))
}

@Test func skewKLTendsToKLAsLambdaVanishes() {
    var none: [Float]? = nil
    let lp = logProbs(randomArray(v, seed: 46, scale: 2)), s = randomArray(v, seed: 47, scale: 2)
    let fkl = value(.forwardKL, lp, s, grad: &none), rkl = value(.reverseKL, lp, s, grad: &none)
    #expect(abs(value(.skewForwardKL(lambda: 1e-6), lp, s, grad: &none) - fkl) < 1e-3 * fkl)
    #expect(abs(value(.skewReverseKL(lambda: 1e-6), lp, s, grad: &none) - rkl) < 1e-3 * rkl)
    // and the skew shrinks the divergence
    #expect(value(.skewForwardKL(lambda: 0.5), lp, s, grad: &none) < fkl)
}

@Test func forwardKLMatchesADoublePrecisionReference() {
    var none: [Float]? = nil
    let t = randomArray(v, seed: 48, scale: 3), s = randomArray(v, seed: 49, scale: 3)
    func softmax(_ x: [Float]) -> [Double] { let m = Double(x.max()!); let e = x.map { exp(Double($0) - m) }; let z = e.reduce(0, +); return e.map { $0 / z } }
    let p = softmax(t), q = softmax(s)
    let ref = zip(p, q).reduce(0.0) { $0 + $1.0 * log($1.0 / $1.1) }
    #expect(abs(value(.forwardKL, logProbs(t), s, grad: &none) - ref) < 1e-5)
}

@Test func mixedKLIsItsWeightedParts() {
    let lp = logProbs(randomArray(v, seed: 71, scale: 2)), s = randomArray(v, seed: 72, scale: 2)
    var none: [Float]? = nil
    let f = value(.forwardKL, lp, s, grad: &none), r = value(.reverseKL, lp, s, grad: &none)
    #expect(abs(value(.mixedKL(alpha: 0.3), lp, s, grad: &none) - (0.3 * f + 0.7 * r)) < 1e-6)
    // the ends are the parts themselves, up to the f32-lane sums forward and reverse KL use (mixed sums in Double)
    #expect(abs(value(.mixedKL(alpha: 1), lp, s, grad: &none) - f) < 1e-6 && abs(value(.mixedKL(alpha: 0), lp, s, grad: &none) - r) < 1e-6)
}
