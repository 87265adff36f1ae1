// Top-k teachers: selection, the wire size, exactness at k = v, and gradients against finite differences.
import Foundation
import KDLoss
import KDOps
import KDTestSupport
import Testing

func topK(_ lp: [Float], _ k: Int) -> ([Int32], [Float], Float) {
    var ids = [Int32](repeating: 0, count: k), vals = [Float](repeating: 0, count: k)
    let tail = ids.withUnsafeMutableBufferPointer { i in vals.withUnsafeMutableBufferPointer { v in
        TopK.select(lp: lp, v: lp.count, k: k, ids: i.baseAddress!, logProbs: v.baseAddress!)
    } }
    return (ids, vals, tail)
}

func topKValue(_ d: Divergence, _ t: ([Int32], [Float], Float), _ s: [Float], T: Float = 1, grad: inout [Float]?) -> Double {
    var scratch = [Float](repeating: 0, count: 2 * s.count + 2 * (t.0.count + 1))
    return scratch.withUnsafeMutableBufferPointer { sc in
        if grad != nil {
            return grad!.withUnsafeMutableBufferPointer { g in
                divergenceRowTopK(d, ids: t.0, logProbs: t.1, logTail: t.2, k: t.0.count, studentLogits: s, v: s.count, temperature: T,
                                  grad: g.baseAddress!, scale: 1, scratch: sc.baseAddress!)
            }
        }
        return divergenceRowTopK(d, ids: t.0, logProbs: t.1, logTail: t.2, k: t.0.count, studentLogits: s, v: s.count, temperature: T,
                                 grad: nil, scale: 1, scratch: sc.baseAddress!)
    }
}

@Test func selectionKeepsTheLargestInOrderWithTheTailMass() {
    let lp = logProbs(randomArray(50, seed: 61, scale: 3))
    let (ids, vals, tail) = topK(lp, 7)
    let want = lp.indices.sorted { lp[$0] > lp[$1] }.prefix(7).map(Int32.init)
    #expect(ids == want)
    #expect(vals == want.map { lp[Int($0)] })
    let rest = lp.indices.filter { !want.contains(Int32($0)) }.reduce(0.0) { $0 + exp(Double(lp[$1])) }
    #expect(abs(exp(Double(tail)) - rest) < 1e-6)
    #expect(TopK.bytesPerToken(k: 64) == 516)
    #expect(topK(lp, 50).2 == -.infinity)
}

@Test(arguments: allDivergences)
func topKWithTheWholeVocabularyIsTheDenseDivergence(d: Divergence) {
    var none: [Float]? = nil
    let lp = logProbs(randomArray(v, seed: 62, scale: 2)), s = randomArray(v, seed: 63, scale: 2)
    let full = topK(lp, v)
    #expect(abs(topKValue(d, full, s, grad: &none) - value(d, lp, s, grad: &none)) < 1e-5)
    var g1: [Float]? = [Float](repeating: 0, count: v), g2: [Float]? = [Float](repeating: 0, count: v)
    _ = topKValue(d, full, s, grad: &g1)
    _ = value(d, lp, s, grad: &g2)
    #expect(maxRelError(g1!, g2!) < 1e-4, "\(d)")
}

@Test(arguments: allDivergences)
func topKGradientMatchesFiniteDifferences(d: Divergence) {
    let lp = logProbs(randomArray(v, seed: 64, scale: 2)), s = randomArray(v, seed: 65, scale: 2)
    let t = topK(lp, 5)
    var g: [Float]? = [Float](repeating: 0, count: v)
    let val = topKValue(d, t, s, T: 1.5, grad: &g)
    #expect(val > 0)
    var none: [Float]? = nil
    let num = numericalGradient(s, eps: d == .tvd ? 1e-3 : 1e-2) { topKValue(d, t, $0, T: 1.5, grad: &none) }
    #expect(maxRelError(g!, num) < 3e-3, "\(d)")
}
