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

/// Two teachers' top-k rows merged into their mixture: exact with k = v, and with k < v the merged rows are a
/// distribution (kept mass + tail = 1) whose kept tokens carry the mixture probability the merge assumes.
@Test func mergingTopKRowsOfTwoTeachersGivesTheirMixture() {
    let v = 13, weights: [Float] = [0.3, 0.7]
    let lps = [logProbs(randomArray(v, seed: 91, scale: 2)), logProbs(randomArray(v, seed: 92, scale: 2))]
    for k in [v, 4] {
        let bufs = lps.map { lp -> TopKBuffer in
            let b = TopKBuffer(n: 1, k: k)
            b.logTail[0] = TopK.select(lp: lp, v: v, k: k, ids: b.ids, logProbs: b.logProbs)
            return b
        }
        var ids = [Int32](repeating: 0, count: k), out = [Float](repeating: 0, count: k)
        let tail = TopK.mergeMixture(rows: bufs.map(\.rows), r: 0, weights: weights, v: v, k: k, ids: &ids, logProbs: &out)
        // the reference: each teacher's probability, or its tail spread evenly where it did not list the token
        func assumed(_ i: Int, _ id: Int32) -> Double {
            let listed = (0..<k).contains { bufs[i].ids[$0] == id }
            return listed ? exp(Double(lps[i][Int(id)])) : (k < v ? exp(Double(bufs[i].logTail[0])) / Double(v - k) : 0)
        }
        for j in 0..<k {
            let want = (0..<2).reduce(0.0) { $0 + Double(weights[$1]) * assumed($1, ids[j]) }
            #expect(abs(exp(Double(out[j])) - want) < 1e-6, "k \(k) token \(ids[j])")
            if k == v {
                let exact = (0..<2).reduce(0.0) { $0 + Double(weights[$1]) * exp(Double(lps[$1][Int(ids[j])])) }
                #expect(abs(exp(Double(out[j])) - exact) < 1e-6)
            }
        }
        #expect(zip(out, out.dropFirst()).allSatisfy { $0 >= $1 })
        let total = out.reduce(0.0) { $0 + exp(Double($1)) } + (tail == -.infinity ? 0 : exp(Double(tail)))
        #expect(abs(total - 1) < 1e-5, "k \(k): mass \(total)")
        #expect((k == v) == (tail == -.infinity))
    }
}
