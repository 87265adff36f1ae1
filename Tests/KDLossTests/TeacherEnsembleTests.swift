// Several teachers as one target: the mixture (in probability space), the weighted mean of logits and per-row routing
// equal a float64 reference computed from each teacher's logits independently; the fused head's KL uses it.
import Foundation
import KDCore
import KDConfig
import KDLoss
import KDOps
import KDTestSupport
import Testing

/// Teacher i's logits for row r in float64, straight from the weights: z = W_i h_i[r].
func referenceLogits(_ w: [Float], _ h: [Float], row r: Int, v: Int, c: Int) -> [Double] {
    (0..<v).map { j in (0..<c).reduce(0.0) { $0 + Double(w[j * c + $1]) * Double(h[r * c + $1]) } }
}

func referenceLogSoftmax(_ z: [Double], T: Double) -> [Double] {
    let x = z.map { $0 / T }, m = x.max()!
    let lse = m + log(x.reduce(0.0) { $0 + exp($1 - m) })
    return x.map { $0 - lse }
}

@Test(arguments: [TeacherCombine.mixture, .logits])
func ensembleRowsMatchFloat64Reference(combine: TeacherCombine) {
    let n = 5, v = 17, cs = [4, 6, 3], weights: [Float] = [0.5, 0.3, 0.7], T: Float = 1.7
    let ws = cs.enumerated().map { randomArray(v * $0.element, seed: 60 + UInt64($0.offset), scale: 0.9) }
    let hs = cs.enumerated().map { randomArray(n * $0.element, seed: 70 + UInt64($0.offset)) }
    let route: [Int32] = [-1, 2, -1, 0, 1]
    let wsum = weights.reduce(0, +)
    let bufs = ws.map { w -> UnsafeMutablePointer<Float> in let p = UnsafeMutablePointer<Float>.allocate(capacity: w.count); p.initialize(from: w, count: w.count); return p }
    let hps = hs.map { h -> UnsafeMutablePointer<Float> in let p = UnsafeMutablePointer<Float>.allocate(capacity: h.count); p.initialize(from: h, count: h.count); return p }
    defer { bufs.forEach { $0.deallocate() }; hps.forEach { $0.deallocate() } }
    route.withUnsafeBufferPointer { rp in
        let members = (0..<3).map { TeacherSource(head: DenseWeight(bufs[$0], oc: v, c: cs[$0]), hidden: hps[$0], weight: weights[$0]) }
        let ens = TeacherEnsemble(members: members, combine: combine, route: rp.baseAddress!)
        var buffer = [Float](repeating: 0, count: ens.bufferCount(rows: n)), scratch = [Float](repeating: 0, count: v)
        buffer.withUnsafeMutableBufferPointer { b in
            ens.projectChunk(r0: 0, m: n, buffer: b.baseAddress!)
            for r in 0..<n {
                let got = ens.rowLogProbs(i: r, r: r, m: n, buffer: b.baseAddress!, temperature: T, scratch: &scratch)
                let z = (0..<3).map { referenceLogits(ws[$0], hs[$0], row: r, v: v, c: cs[$0]) }
                let expected: [Double]
                if route[r] >= 0 {
                    expected = referenceLogSoftmax(z[Int(route[r])], T: Double(T))
                } else if combine == .logits {
                    expected = referenceLogSoftmax((0..<v).map { j in (0..<3).reduce(0.0) { $0 + Double(weights[$1] / wsum) * z[$1][j] } }, T: Double(T))
                } else {
                    let lps = z.map { referenceLogSoftmax($0, T: Double(T)) }
                    expected = (0..<v).map { j in log((0..<3).reduce(0.0) { $0 + Double(weights[$1] / wsum) * exp(lps[$1][j]) }) }
                }
                let err = (0..<v).map { abs(Double(got[$0]) - expected[$0]) }.max()!
                #expect(err < 2e-5, "\(combine) row \(r): max |Δ log p| \(err)")
                let mass = (0..<v).reduce(0.0) { $0 + exp(Double(got[$1])) }
                #expect(abs(mass - 1) < 1e-5)
            }
        }
    }
}

@Test func ensembleOfIdenticalTeachersIsThatTeacher() {
    // the mixture of a teacher with itself is the teacher, whatever the weights
    let n = 3, v = 11, c = 5
    let w = randomArray(v * c, seed: 81), h = randomArray(n * c, seed: 82)
    w.withUnsafeBufferPointer { wp in h.withUnsafeBufferPointer { hp in
        let t = TeacherSource(head: DenseWeight(wp.baseAddress!, oc: v, c: c), hidden: hp.baseAddress!, weight: 0.2)
        let u = TeacherSource(head: t.head, hidden: t.hidden, weight: 0.8)
        let single = TeacherEnsemble(members: [t]), pair = TeacherEnsemble(members: [t, u])
        var a = [Float](repeating: 0, count: single.bufferCount(rows: n)), b = [Float](repeating: 0, count: pair.bufferCount(rows: n))
        var s = [Float](repeating: 0, count: v)
        a.withUnsafeMutableBufferPointer { ap in b.withUnsafeMutableBufferPointer { bp in
            single.projectChunk(r0: 0, m: n, buffer: ap.baseAddress!)
            pair.projectChunk(r0: 0, m: n, buffer: bp.baseAddress!)
            for r in 0..<n {
                let x = single.rowLogProbs(i: r, r: r, m: n, buffer: ap.baseAddress!, temperature: 1, scratch: &s)
                let y = pair.rowLogProbs(i: r, r: r, m: n, buffer: bp.baseAddress!, temperature: 1, scratch: &s)
                #expect((0..<v).allSatisfy { abs(x[$0] - y[$0]) < 1e-6 })
            }
        } }
    } }
}
