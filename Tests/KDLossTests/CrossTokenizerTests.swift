// The cross-tokenizer losses against a dense reference written here from the definitions (float64, whole sorts, no
// heaps, no shared code): values equal, gradients equal the reference's finite differences, on tiny vocabularies of
// different sizes with a partial map, for listed teacher rows covering the teacher's vocabulary and for top-k rows.
import Foundation
import KDCore
import KDLoss
import KDOps
import KDTestSupport
import Testing

/// Σ_{r<u} |p_(r) − q_(r)| + |P_rest − Q_rest| from whole sorts: the teacher's listed probabilities and rest mass, the
/// student's probabilities outside `excluded`.
func referenceULD(listed: [Double], teacherRest: Double, q: [Double], excluded: Set<Int>) -> Double {
    let tp = listed.sorted(by: >), qs = q.indices.filter { !excluded.contains($0) }.map { q[$0] }.sorted(by: >)
    let n = min(tp.count, qs.count)
    var w = 0.0
    for r in 0..<n { w += abs(tp[r] - qs[r]) }
    let pRest = teacherRest + tp[n...].reduce(0, +), qRest = qs[n...].reduce(0, +)
    return w + abs(pRest - qRest)
}

/// The dense definitions of uld and gold (gold's buckets with forward KL, reverse KL or skew reverse KL).
func referenceCross(_ loss: CrossTokenizerLoss, _ d: Divergence, ids: [Int32], logProbs: [Float], logTail: Float, map: [Int32],
                    logits s: [Double], temperature T: Double) -> Double {
    let m = s.map { $0 / T }.max()!
    let z = s.map { exp($0 / T - m) }.reduce(0, +)
    let q = s.map { exp($0 / T - m) / z }
    let p = logProbs.map { exp(Double($0)) }, tail = exp(Double(logTail))
    switch loss {
    case .uld:
        return referenceULD(listed: p, teacherRest: tail, q: q, excluded: [])
    case .gold:
        var bp: [Double] = [], bq: [Double] = [], mapped = Set<Int>(), unmapped: [Double] = []
        for (i, id) in ids.enumerated() {
            let st = map[Int(id)]
            if st >= 0 { bp.append(p[i]); bq.append(q[Int(st)]); mapped.insert(Int(st)) } else { unmapped.append(p[i]) }
        }
        var value = 0.0
        if !bp.isEmpty {
            bp.append(unmapped.reduce(0, +) + tail)
            bq.append(q.indices.filter { !mapped.contains($0) }.reduce(0.0) { $0 + q[$1] })
            for (pb, qb) in zip(bp, bq) {
                switch d {
                case .forwardKL: if pb > 0 { value += pb * log(pb / qb) }
                case .reverseKL: if qb > 0 { value += qb * log(qb / max(pb, 1e-300)) }
                case .skewReverseKL(let l): let mix = Double(l) * qb + Double(1 - l) * pb; if qb > 0 { value += qb * log(qb / mix) }
                default: fatalError("reference: \(d) not written")
                }
            }
        }
        return value + referenceULD(listed: unmapped, teacherRest: tail, q: q, excluded: mapped)
    }
}

/// Teacher top-k rows (log-probabilities at T, log tail) from logits, through the library's selection.
func teacherRows(_ logits: [Float], k: Int, temperature T: Float) -> (ids: [Int32], logProbs: [Float], logTail: Float) {
    var lp = logits, scratch = [Float](repeating: 0, count: logits.count)
    lp.withUnsafeMutableBufferPointer { l in scratch.withUnsafeMutableBufferPointer { logSoftmaxInPlace(l.baseAddress!, logits.count, temperature: T, scratch: $0.baseAddress!) } }
    var ids = [Int32](repeating: 0, count: k), out = [Float](repeating: 0, count: k)
    let tail = lp.withUnsafeBufferPointer { l in ids.withUnsafeMutableBufferPointer { i in out.withUnsafeMutableBufferPointer {
        TopK.select(lp: l.baseAddress!, v: logits.count, k: k, ids: i.baseAddress!, logProbs: $0.baseAddress!) } } }
    return (ids, out, tail)
}

func fastCross(_ loss: CrossTokenizerLoss, _ d: Divergence, rows: (ids: [Int32], logProbs: [Float], logTail: Float), map: [Int32],
               logits: [Float], temperature T: Float, uldWeight: Float = 1) -> (Double, [Float]) {
    let v = logits.count, k = rows.ids.count
    var grad = [Float](repeating: 0, count: v), scratch = [Float](repeating: 0, count: crossTokenizerScratch(v: v, k: k))
    let value = grad.withUnsafeMutableBufferPointer { g in scratch.withUnsafeMutableBufferPointer { sc in
        crossTokenizerRow(loss, d, ids: rows.ids, logProbs: rows.logProbs, logTail: rows.logTail, k: k, map: map, studentLogits: logits, v: v,
                          temperature: T, grad: g.baseAddress!, scale: 1, uldWeight: uldWeight, scratch: sc.baseAddress!)
    } }
    return (value, grad)
}

@Test(arguments: [(CrossTokenizerLoss.uld, Divergence.forwardKL), (.gold, .forwardKL), (.gold, .reverseKL), (.gold, .skewReverseKL(lambda: 0.1))],
      [11, 5])
func crossTokenizerLossesMatchTheDenseReference(_ lossAndD: (CrossTokenizerLoss, Divergence), k: Int) {
    let (loss, d) = lossAndD
    let vt = 11, vs = 9
    // teacher ids 0..<11; 6 of them have a student twin (an injective partial map), student ids 0..<9
    let map: [Int32] = [3, -1, 0, 7, -1, 1, -1, -1, 8, 5, -1]
    for (seed, T) in [(UInt64(71), Float(1)), (72, 2)] {
        let tl = randomArray(vt, seed: seed, scale: 2.5), sl = randomArray(vs, seed: seed + 10, scale: 2.5)
        let rows = teacherRows(tl, k: k, temperature: T)
        let (value, grad) = fastCross(loss, d, rows: rows, map: map, logits: sl, temperature: T)
        let ref = referenceCross(loss, d, ids: rows.ids, logProbs: rows.logProbs, logTail: rows.logTail, map: map,
                                 logits: sl.map(Double.init), temperature: Double(T))
        #expect(abs(value - ref) <= 1e-5 * max(1, abs(ref)), "\(loss) \(d) k=\(k) T=\(T): \(value) vs \(ref)")
        #expect(value > 0)
        // central differences of the reference, in float64
        let h = 1e-5
        for j in 0..<vs {
            var up = sl.map(Double.init), dn = up
            up[j] += h; dn[j] -= h
            let fd = (referenceCross(loss, d, ids: rows.ids, logProbs: rows.logProbs, logTail: rows.logTail, map: map, logits: up, temperature: Double(T))
                      - referenceCross(loss, d, ids: rows.ids, logProbs: rows.logProbs, logTail: rows.logTail, map: map, logits: dn, temperature: Double(T))) / (2 * h)
            #expect(abs(Double(grad[j]) - fd) <= 2e-4 + 2e-3 * abs(fd), "\(loss) \(d) k=\(k) T=\(T) ∂/∂s[\(j)]: \(grad[j]) vs \(fd)")
        }
    }
}

@Test func uldIsZeroForARelabelingAndTheFullSortedDistanceWhenKCoversBoth() {
    // a teacher whose distribution is the student's with the tokens renamed (and padded with zero-probability ids):
    // the sorted vectors are equal, so uld is 0 while a KL over ids would not be
    let vs = 7
    let sl = randomArray(vs, seed: 81, scale: 2)
    let perm = [4, 0, 6, 2, 1, 5, 3]
    var tl = [Float](repeating: -200, count: 10)
    for (i, p) in perm.enumerated() { tl[p] = sl[i] }
    let rows = teacherRows(tl, k: 10, temperature: 1)
    let (value, _) = fastCross(.uld, .forwardKL, rows: rows, map: [Int32](repeating: -1, count: 10), logits: sl, temperature: 1)
    #expect(abs(value) < 1e-5, "\(value)")
    // k covering the teacher's vocabulary: Σ over every rank of |p_(r) − q_(r)|, the shorter side padded with zeros
    let other = randomArray(10, seed: 82, scale: 2)
    let full = teacherRows(other, k: 10, temperature: 1)
    let (w, _) = fastCross(.uld, .forwardKL, rows: full, map: [Int32](repeating: -1, count: 10), logits: sl, temperature: 1)
    let p = full.logProbs.map { exp(Double($0)) }.sorted(by: >)
    let ex = sl.map { exp(Double($0)) }, z = ex.reduce(0, +)
    let q = ex.map { $0 / z }.sorted(by: >) + [Double](repeating: 0, count: 3)
    let padded = zip(p, q).reduce(0.0) { $0 + abs($1.0 - $1.1) }
    #expect(abs(w - padded) < 1e-5, "\(w) vs \(padded)")
}

@Test func goldWithEveryTokenMappedIsTheTopKDivergence() {
    // identical vocabularies and the identity map: gold's buckets are the top-k buckets and its uld part faces only the
    // tails, so gold = divergenceRowTopK + |tail_p − tail_q| (student mass outside the listed ids)
    let v = 13, k = 6
    let tl = randomArray(v, seed: 91, scale: 2), sl = randomArray(v, seed: 92, scale: 2)
    let rows = teacherRows(tl, k: k, temperature: 1)
    let identity = (0..<v).map(Int32.init)
    let (g, _) = fastCross(.gold, .forwardKL, rows: rows, map: identity, logits: sl, temperature: 1)
    var scratch = [Float](repeating: 0, count: 2 * v + 2 * (k + 1))
    let topk = scratch.withUnsafeMutableBufferPointer {
        divergenceRowTopK(.forwardKL, ids: rows.ids, logProbs: rows.logProbs, logTail: rows.logTail, k: k, studentLogits: sl, v: v,
                          temperature: 1, grad: nil, scale: 1, scratch: $0.baseAddress!)
    }
    let ex = sl.map { exp(Double($0)) }, z = ex.reduce(0, +)
    let qTail = (0..<v).filter { !rows.ids.contains(Int32($0)) }.reduce(0.0) { $0 + ex[$1] / z }
    #expect(abs(g - (topk + abs(exp(Double(rows.logTail)) - qTail))) < 1e-5)
    // an unaligned row (first id −1) carries nothing
    var unaligned = rows
    unaligned.ids[0] = -1
    let (zero, grad) = fastCross(.gold, .forwardKL, rows: unaligned, map: identity, logits: sl, temperature: 1)
    #expect(zero == 0 && grad.allSatisfy { $0 == 0 })
}

/// The fused head with a cross-tokenizer teacher beside a same-vocabulary one: per-row divergences are the weighted
/// sum of the pieces, an unaligned row carries only the same-vocabulary part, and the gradients match finite differences.
@Test func distillHeadWithACrossTokenizerTeacherMatchesFiniteDifferences() {
    let n = 4, c = 5, ct = 3, v = 9, vt = 11, k = 4
    let x = randomArray(n * c, seed: 61), w = randomArray(v * c, seed: 62, scale: 0.7)
    let th = randomArray(n * ct, seed: 63), tw = randomArray(v * ct, seed: 64, scale: 0.7)
    let map: [Int32] = [3, -1, 0, 7, -1, 1, -1, -1, 8, 5, -1]
    var ids = [Int32](), lps = [Float](), tails = [Float]()
    for r in 0..<n {
        let rows = teacherRows(randomArray(vt, seed: 65 + UInt64(r), scale: 2), k: k, temperature: 1)
        ids += r == 2 ? [-1] + rows.ids.dropFirst() : rows.ids
        lps += rows.logProbs
        tails.append(rows.logTail)
    }
    let targets: [Int32] = [3, 8, 1, 0]
    let scratch = LMHeadScratch(rows: 3, v: v)
    func total(_ x: [Float], grad: UnsafeMutablePointer<Float>? = nil) -> (Double, [Float]) {
        var ce = [Float](repeating: 0, count: n), kd = ce
        let l = w.withUnsafeBufferPointer { wp in tw.withUnsafeBufferPointer { twp in th.withUnsafeBufferPointer { thp in
            ids.withUnsafeBufferPointer { ip in lps.withUnsafeBufferPointer { lp in tails.withUnsafeBufferPointer { tp in map.withUnsafeBufferPointer { mp in
                var target = DistillTarget(teacherHead: DenseWeight(twp.baseAddress!, oc: v, c: ct), teacherHidden: thp.baseAddress!,
                                           divergence: .forwardKL, temperature: 1, kdRatio: 0.6, t2Scale: false)
                target.sameWeight = 0.25
                target.crossLoss = .gold
                target.cross = [CrossTeacherRows(rows: TopKRows(k: k, ids: ip.baseAddress!, logProbs: lp.baseAddress!, logTail: tp.baseAddress!),
                                                 teacherToStudent: mp.baseAddress!, weight: 0.75)]
                var dw = [Float](repeating: 0, count: v * c)
                ce.withUnsafeMutableBufferPointer { cp in kd.withUnsafeMutableBufferPointer { kp in dw.withUnsafeMutableBufferPointer { dwp in
                    lmHeadDistill(ce: cp.baseAddress!, kd: kp.baseAddress!, dinp: grad, dweight: grad == nil ? nil : dwp.baseAddress!, inp: x,
                                  head: DenseWeight(wp.baseAddress!, oc: v, c: c), targets: targets, n: n, lossScale: 1, target: target, scratch: scratch)
                } } }
                return (0..<n).reduce(0.0) { $0 + 0.4 * Double(ce[$1]) + 0.6 * Double(kd[$1]) }
            } } } }
        } } }
        return (l, kd)
    }
    var dx = [Float](repeating: 0, count: n * c)
    let (_, kd) = dx.withUnsafeMutableBufferPointer { total(x, grad: $0.baseAddress!) }
    let fd = numericalGradient(x) { total($0).0 }
    #expect(maxRelError(dx, fd) < 3e-3, "\(dx)\n\(fd)")
    // row 2's cross part is unaligned: its divergence is the same-vocabulary part alone, smaller than with both
    #expect(kd.allSatisfy { $0 > 0 })
    #expect(kd[2] < kd.enumerated().filter { $0.offset != 2 }.map(\.element).max()!)
}

@Test func goldsULDPartIsWeightedByUldWeight() {
    // gold = buckets + w·uld: linear in w, value and gradient; w = 0 leaves the exact buckets alone
    let map: [Int32] = [3, -1, 0, 7, -1, 1, -1, -1, 8, 5, -1]
    let rows = teacherRows(randomArray(11, seed: 95, scale: 2.5), k: 6, temperature: 1), sl = randomArray(9, seed: 96, scale: 2.5)
    let (v0, g0) = fastCross(.gold, .reverseKL, rows: rows, map: map, logits: sl, temperature: 1, uldWeight: 0)
    let (v1, g1) = fastCross(.gold, .reverseKL, rows: rows, map: map, logits: sl, temperature: 1, uldWeight: 1)
    let (vw, gw) = fastCross(.gold, .reverseKL, rows: rows, map: map, logits: sl, temperature: 1, uldWeight: 0.3)
    #expect(v1 > v0 && abs(vw - (v0 + 0.3 * (v1 - v0))) < 1e-6)
    #expect(zip(gw, zip(g0, g1)).allSatisfy { abs($0 - ($1.0 + 0.3 * ($1.1 - $1.0))) < 1e-6 })
}
