// The linear bridge over a dropped run (student.bridge: linear) against a reference written independently of it: the
// FFN output comes from a teacher copy with that block's down projection zeroed (not from h·Wᵀ), the streams from whole
// forwards (not handed from stage to stage), and the map from Gauss–Jordan elimination in Double (not Cholesky). The
// merged student must then reproduce A + M·T at the seam.
import KDConfig
import KDCore
import KDData
@testable import KDModel
import KDTestSupport
@testable import KDTrain
import Testing

private func teacherOf(layers: Int, seed: UInt64) -> Transformer {
    var m = tinyModelConfig()
    m.layers = layers
    let model = Transformer(config: m, needsGrad: false)
    model.initialize(seed: seed)
    for e in model.layout.entries where !e.isMatrix {
        for i in 0..<e.count { model.params.base[e.offset + i] = 1 + 0.2 * CounterRNG(seed: seed, purpose: .test).normal(UInt64(e.offset + i)) }
    }
    return model
}

/// The stream after teacher blocks 0...last, from one whole forward. - Shapes: [b·t, dim]
private func stream(_ m: Transformer, _ toks: UnsafePointer<Int32>, b: Int, t: Int, through last: Int) -> [Double] {
    let p = m.forwardStage(0...last, tokens: toks, hidden: nil, b: b, t: t, finalNorm: false)
    return (0..<(b * t * m.config.dim)).map { Double(p[$0]) }
}

/// x solving (G + λI)·X = R by Gauss–Jordan elimination with partial pivoting (c × c, row-major).
private func gaussJordan(_ g: [Double], _ r: [Double], lambda: Double, c: Int) -> [Double] {
    var a = g, x = r
    for i in 0..<c { a[i * c + i] += lambda }
    for col in 0..<c {
        let p = (col..<c).max { abs(a[$0 * c + col]) < abs(a[$1 * c + col]) }!
        for j in 0..<c { a.swapAt(col * c + j, p * c + j); x.swapAt(col * c + j, p * c + j) }
        let d = a[col * c + col]
        for j in 0..<c { a[col * c + j] /= d; x[col * c + j] /= d }
        for i in 0..<c where i != col {
            let f = a[i * c + col]
            if f == 0 { continue }
            for j in 0..<c { a[i * c + j] -= f * a[col * c + j]; x[i * c + j] -= f * x[col * c + j] }
        }
    }
    return x
}

@Test func droppedRunsAreTheGapsWithABlockBefore() {
    #expect(LinearBridge.runs(kept: [0, 1, 4, 5], teacherLayers: 6) == [DroppedRun(before: 1, first: 2, last: 3)])
    #expect(LinearBridge.runs(kept: [2, 3, 5], teacherLayers: 6) == [DroppedRun(before: 3, first: 4, last: 4)])
    #expect(LinearBridge.runs(kept: [0, 2, 5], teacherLayers: 7) == [DroppedRun(before: 0, first: 1, last: 1), DroppedRun(before: 2, first: 3, last: 4),
                                                                     DroppedRun(before: 5, first: 6, last: 6)])
    #expect(LinearBridge.runs(kept: Array(0..<6), teacherLayers: 6).isEmpty)
}

@Test func linearBridgeIsTheLeastSquaresMapMergedIntoTheDownProjection() throws {
    let teacher = teacherOf(layers: 6, seed: 11), kept = [0, 1, 4, 5], before = 1, last = 3
    let b = 2, t = 8, batches = 3, c = teacher.config.dim
    let rng = CounterRNG(seed: 5, purpose: .test)
    let sampler = try WindowSampler(stream: (0..<(batches * b * t + 40)).map { Int32(rng.index(teacher.config.vocabSize, UInt64($0))) }, seqLen: t, seed: 1)
    var shape = teacher.config
    shape.layers = kept.count
    let student = Transformer(config: shape, needsGrad: false)
    try student.copyPruned(from: teacher, layers: kept)
    let toks = UnsafeMutablePointer<Int32>.allocate(capacity: batches * b * t), tg = UnsafeMutablePointer<Int32>.allocate(capacity: batches * b * t)
    defer { toks.deallocate(); tg.deallocate() }
    sampler.fillSequential(inputs: toks, targets: tg, first: 0, count: batches * b)
    let report = try LinearBridge.apply(to: student, from: teacher, kept: kept, runs: LinearBridge.runs(kept: kept, teacherLayers: 6),
                                        tokens: toks, batches: batches, b: b, t: t)

    // the reference: M from a copy whose block-1 down projection is zero, A = the stream after block 1 minus M
    let zeroed = Transformer(config: teacher.config, needsGrad: false)
    zeroed.params.base.update(from: teacher.params.base, count: teacher.layout.count)
    let down = teacher.layout.entries.first { $0.offset == teacher.layout.blocks[before].wdown }!
    zeroed.params.base.advanced(by: down.offset).update(repeating: 0, count: down.count)
    var rowsM: [[Double]] = [], rowsA: [[Double]] = [], rowsB: [[Double]] = []
    for i in 0..<batches {
        let w = toks + i * b * t
        let full = stream(teacher, w, b: b, t: t, through: before), noFFN = stream(zeroed, w, b: b, t: t, through: before)
        let after = stream(teacher, w, b: b, t: t, through: last)
        for r in 0..<(b * t) {
            let s = (r * c)..<((r + 1) * c)
            rowsM.append(zip(full[s], noFFN[s]).map { $0 - $1 }); rowsA.append(Array(noFFN[s])); rowsB.append(Array(after[s]))
        }
    }
    var g = [Double](repeating: 0, count: c * c), rhs = g
    for (m, (a, bb)) in zip(rowsM, zip(rowsA, rowsB)) {
        for i in 0..<c { for j in 0..<c { g[i * c + j] += m[i] * m[j]; rhs[i * c + j] += m[i] * (bb[j] - a[j]) } }
    }
    let lambda = LinearBridge.ridge * (0..<c).reduce(0.0) { $0 + g[$1 * c + $1] } / Double(c)
    let map = gaussJordan(g, rhs, lambda: lambda, c: c)
    func seamError(_ tm: [Double]?) -> Double {
        zip(rowsM, zip(rowsA, rowsB)).reduce(0.0) { acc, row in
            let (m, (a, bb)) = row
            return acc + (0..<c).reduce(0.0) { e, j in
                let mt = tm.map { tm in (0..<c).reduce(0.0) { $0 + m[$1] * tm[$1 * c + j] } } ?? m[j]
                return e + (a[j] + mt - bb[j]) * (a[j] + mt - bb[j])
            }
        } / Double(rowsM.count)
    }

    #expect(report.count == 1 && report[0].rows == batches * b * t)
    let (noBridge, bridged) = (seamError(nil), seamError(map))
    #expect(abs(report[0].before - noBridge) <= 1e-3 * noBridge, "seam error without a bridge \(report[0].before) vs reference \(noBridge)")
    #expect(abs(report[0].after - bridged) <= 1e-3 * noBridge, "seam error with it \(report[0].after) vs reference \(bridged)")
    #expect(bridged < 0.9 * noBridge, "the map should fit the run better than leaving it out: \(bridged) vs \(noBridge)")
    // the merged student's stream after its block 1 is A + M·T, row by row
    var worst = 0.0, scale = 0.0
    for i in 0..<batches {
        let got = stream(student, toks + i * b * t, b: b, t: t, through: 1)
        for r in 0..<(b * t) {
            let row = i * b * t + r
            for j in 0..<c {
                let want = rowsA[row][j] + (0..<c).reduce(0.0) { $0 + rowsM[row][$1] * map[$1 * c + j] }
                worst = max(worst, abs(got[r * c + j] - want)); scale = max(scale, abs(want))
            }
        }
    }
    #expect(worst <= 1e-4 * scale, "student stream at the seam off by \(worst) (scale \(scale))")
    // the blocks after the seam are the teacher's, untouched
    for (sb, tb) in [(2, 4), (3, 5)] {
        let se = student.layout.entries.first { $0.offset == student.layout.blocks[sb].wdown }!
        let te = teacher.layout.entries.first { $0.offset == teacher.layout.blocks[tb].wdown }!
        #expect((0..<se.count).allSatisfy { student.params.base[se.offset + $0] == teacher.params.base[te.offset + $0] })
    }
}
