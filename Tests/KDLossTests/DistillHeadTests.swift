// The fused, chunked LM head with cross-entropy + divergence: per-row values equal the unfused pieces, and the
// gradients with respect to the student's hidden states and head match finite differences.
import KDCore
import KDLoss
import KDOps
import KDTestSupport
import Testing

@Test(arguments: [Divergence.forwardKL, .reverseKL, .skewReverseKL(lambda: 0.1), .jsd(beta: 0.5)])
func distillHeadGradientMatchesFiniteDifferences(d: Divergence) {
    let n = 5, c = 6, ct = 4, v = 23
    let x = randomArray(n * c, seed: 51), w = randomArray(v * c, seed: 52, scale: 0.7)
    let th = randomArray(n * ct, seed: 53), tw = randomArray(v * ct, seed: 54, scale: 0.7)
    let targets: [Int32] = [3, -1, 22, 0, 7]
    let scratch = LMHeadScratch(rows: 2, v: v)
    let T: Float = 1.5
    func total(_ x: [Float], _ w: [Float], grad: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>)? = nil) -> (Double, [Float], [Float]) {
        var ce = [Float](repeating: 0, count: n), kd = ce
        return w.withUnsafeBufferPointer { wp in tw.withUnsafeBufferPointer { twp in th.withUnsafeBufferPointer { thp in
            let target = DistillTarget(teacherHead: DenseWeight(twp.baseAddress!, oc: v, c: ct), teacherHidden: thp.baseAddress!,
                                       divergence: d, temperature: T, kdRatio: 0.7, t2Scale: true)
            ce.withUnsafeMutableBufferPointer { cp in kd.withUnsafeMutableBufferPointer { kp in
                lmHeadDistill(ce: cp.baseAddress!, kd: kp.baseAddress!, dinp: grad?.0, dweight: grad?.1, inp: x,
                              head: DenseWeight(wp.baseAddress!, oc: v, c: c), targets: targets, n: n, lossScale: 1, target: target, scratch: scratch)
            } }
            let l = (0..<n).reduce(0.0) { $0 + 0.3 * Double(ce[$1]) + 0.7 * Double(T * T) * Double(kd[$1]) }
            return (l, ce, kd)
        } } }
    }
    var dx = [Float](repeating: 0, count: n * c), dw = [Float](repeating: 0, count: v * c)
    let (_, ce, kd) = dx.withUnsafeMutableBufferPointer { a in dw.withUnsafeMutableBufferPointer { b in total(x, w, grad: (a.baseAddress!, b.baseAddress!)) } }
    #expect(ce[1] == 0 && kd[1] == 0)
    #expect(kd.enumerated().allSatisfy { $0.offset == 1 || $0.element > 0 })
    #expect(maxRelError(dx, numericalGradient(x) { total($0, w).0 }) < 3e-3, "\(d) dinp")
    #expect(maxRelError(dw, numericalGradient(w) { total(x, $0).0 }) < 3e-3, "\(d) dweight")
}

/// Per-row cross-entropy weights (the policy-gradient coefficients of rollouts, negative ones included) replace
/// 1 − r row by row; the gradient still matches finite differences.
@Test func perRowCrossEntropyWeightsMatchFiniteDifferences() {
    let n = 4, c = 5, ct = 3, v = 17
    let x = randomArray(n * c, seed: 55), w = randomArray(v * c, seed: 56, scale: 0.7)
    let th = randomArray(n * ct, seed: 57), tw = randomArray(v * ct, seed: 58, scale: 0.7)
    let targets: [Int32] = [3, 9, -1, 0], rowW: [Float] = [0.8, -1.3, 5, 0]
    let scratch = LMHeadScratch(rows: 3, v: v)
    func total(_ x: [Float], grad: UnsafeMutablePointer<Float>? = nil) -> Double {
        var ce = [Float](repeating: 0, count: n), kd = ce
        return w.withUnsafeBufferPointer { wp in tw.withUnsafeBufferPointer { twp in th.withUnsafeBufferPointer { thp in rowW.withUnsafeBufferPointer { rw in
            var target = DistillTarget(teacherHead: DenseWeight(twp.baseAddress!, oc: v, c: ct), teacherHidden: thp.baseAddress!,
                                       divergence: .reverseKL, temperature: 1, kdRatio: 1, t2Scale: false)
            target.ceWeights = rw.baseAddress!
            var dw = [Float](repeating: 0, count: v * c)
            ce.withUnsafeMutableBufferPointer { cp in kd.withUnsafeMutableBufferPointer { kp in dw.withUnsafeMutableBufferPointer { dwp in
                lmHeadDistill(ce: cp.baseAddress!, kd: kp.baseAddress!, dinp: grad, dweight: grad == nil ? nil : dwp.baseAddress!, inp: x,
                              head: DenseWeight(wp.baseAddress!, oc: v, c: c), targets: targets, n: n, lossScale: 1, target: target, scratch: scratch)
            } } }
            return (0..<n).reduce(0.0) { $0 + Double(rowW[$1]) * Double(ce[$1]) + Double(kd[$1]) }
        } } } }
    }
    var dx = [Float](repeating: 0, count: n * c)
    _ = dx.withUnsafeMutableBufferPointer { total(x, grad: $0.baseAddress!) }
    #expect(maxRelError(dx, numericalGradient(x) { total($0) }) < 3e-3)
}
