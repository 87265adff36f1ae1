// Measured layer selection (student.select: greedy | angular) against references written independently of it: each
// greedy score is KL(teacher ‖ cut) of a student built with copyPruned, its logits materialized and both softmaxes taken
// in Double; the angular distances come from a training forward's saved residual streams. Bad selections are refused
// before the student is allocated, and a saved selection is reused only for the same measurement.
import Foundation
import KDComm
import KDConfig
import KDCore
import KDData
@testable import KDModel
import KDTestSupport
@testable import KDTrain
import Testing

/// A 6-block tiny teacher with random weights and non-unit norm weights.
private func sixBlockTeacher(seed: UInt64) -> Transformer {
    var m = tinyModelConfig()
    m.layers = 6
    let model = Transformer(config: m, needsGrad: false)
    model.initialize(seed: seed)
    for e in model.layout.entries where !e.isMatrix {
        for i in 0..<e.count { model.params.base[e.offset + i] = 1 + 0.2 * CounterRNG(seed: seed, purpose: .test).normal(UInt64(e.offset + i)) }
    }
    return model
}

private func calibrationFor(_ teacher: Transformer, b: Int, t: Int, batches: Int) throws -> Calibration {
    let rng = CounterRNG(seed: 5, purpose: .test)
    let stream = (0..<(batches * b * t + 40)).map { Int32(rng.index(teacher.config.vocabSize, UInt64($0))) }
    return Calibration(teacher: teacher, sampler: try WindowSampler(stream: stream, seqLen: t, seed: 1), batches: batches, b: b, t: t)
}

/// KL(teacher ‖ the teacher cut to `keep`) per token over the calibration windows, from materialized logits in Double.
private func referenceKL(_ teacher: Transformer, keep: [Int], _ cal: Calibration) throws -> Double {
    var shape = teacher.config
    shape.layers = keep.count
    let student = Transformer(config: shape, needsGrad: false)
    try student.copyPruned(from: teacher, layers: keep)
    let v = teacher.config.vocabSize
    var total = 0.0
    for i in 0..<cal.batches {
        let lt = logits(teacher, cal.tokens(i), cal), ls = logits(student, cal.tokens(i), cal)
        for r in 0..<cal.rows {
            let p = softmax(Array(lt[(r * v)..<((r + 1) * v)])), q = softmax(Array(ls[(r * v)..<((r + 1) * v)]))
            total += zip(p, q).reduce(0) { $0 + $1.0 * Foundation.log($1.0 / $1.1) }
        }
    }
    return total / Double(cal.batches * cal.rows)
}

private func logits(_ m: Transformer, _ toks: UnsafePointer<Int32>, _ cal: Calibration) -> [Float] {
    var out = [Float](repeating: 0, count: cal.rows * m.config.vocabSize)
    m.forward(tokens: toks, b: cal.b, t: cal.t)
    out.withUnsafeMutableBufferPointer { m.logits(into: $0.baseAddress!) }
    return out
}

private func softmax(_ z: [Float]) -> [Double] {
    let m = Double(z.max()!), e = z.map { Foundation.exp(Double($0) - m) }, s = e.reduce(0, +)
    return e.map { $0 / s }
}

@Test func greedySelectionRemovesTheCheapestBlockEveryRound() throws {
    configureThreads(1)
    let teacher = sixBlockTeacher(seed: 21)
    let cal = try calibrationFor(teacher, b: 2, t: 9, batches: 2)
    let sel = try measureLayerSelection(.greedy, source: teacher, keep: 3, calibration: cal, comm: LocalCommunicator())
    #expect(sel.rounds.count == 3 && sel.kept.count == 3)
    var kept = Array(0..<6)
    for round in sel.rounds {
        #expect(round.kept == kept)
        for cand in round.candidates {
            let ref = try referenceKL(teacher, keep: kept.filter { $0 != cand.block }, cal)
            #expect(abs(cand.score - ref) <= 1e-4 * max(ref, 1e-3), "block \(cand.block): \(cand.score) vs reference \(ref)")
        }
        let cheapest = round.candidates.min { $0.score < $1.score }!.block
        #expect(round.removed == cheapest)
        kept.removeAll { $0 == round.removed }
    }
    #expect(sel.kept == kept)
    // the blocks differ in cost: the choice is not the trivial last or first block every time
    #expect(Set(sel.rounds[0].candidates.map { ($0.score * 1e4).rounded() }).count == 6)
    #expect(abs(sel.finalKL - (try referenceKL(teacher, keep: sel.kept, cal))) <= 1e-4 * sel.finalKL)
}

@Test func angularSelectionDropsTheRunWhoseEndsAreClosest() throws {
    configureThreads(1)
    let teacher = sixBlockTeacher(seed: 22)
    let cal = try calibrationFor(teacher, b: 2, t: 9, batches: 2)
    let sel = try measureLayerSelection(.angular, source: teacher, keep: 4, calibration: cal, comm: LocalCommunicator())
    // the reference: residual streams saved by a training forward of the same weights, angles in Double
    let copy = Transformer(config: teacher.config, needsGrad: true)
    copy.params.base.update(from: teacher.params.base, count: teacher.layout.count)
    var distance = [Double](repeating: 0, count: 5)
    for i in 0..<cal.batches {
        copy.forward(tokens: cal.tokens(i), b: cal.b, t: cal.t)
        let resid = copy.acts!.resid, c = teacher.config.dim
        for s in 0...4 {
            var sum = 0.0
            for r in 0..<cal.rows {
                let a = (0..<c).map { Double(resid[s].base[r * c + $0]) }, b = (0..<c).map { Double(resid[s + 2].base[r * c + $0]) }
                let dot = zip(a, b).reduce(0) { $0 + $1.0 * $1.1 }
                let na = a.reduce(0) { $0 + $1 * $1 }.squareRoot(), nb = b.reduce(0) { $0 + $1 * $1 }.squareRoot()
                sum += Foundation.acos(min(1, max(-1, dot / (na * nb)))) / Double.pi
            }
            distance[s] += sum / Double(cal.rows) / Double(cal.batches)
        }
    }
    #expect(sel.runs.map(\.block) == Array(0...4))
    for (run, ref) in zip(sel.runs, distance) { #expect(abs(run.score - ref) < 1e-6, "run \(run.block): \(run.score) vs \(ref)") }
    let best = distance.indices.min { distance[$0] < distance[$1] }!
    #expect(sel.kept == Array(0..<best) + Array((best + 2)..<6))
    #expect(abs(sel.finalKL - (try referenceKL(teacher, keep: sel.kept, cal))) <= 1e-4 * sel.finalKL)
}

@Test func badSelectionsAreRefusedBeforeTheStudentExists() throws {
    let teacher = sixBlockTeacher(seed: 23)
    var c = RunConfig()
    c.model = teacher.config
    c.student.initFrom = .fromTeacher
    c.student.select = .greedy
    #expect(throws: (any Error).self) { try checkCut(c, source: teacher) }  // 6 of 6 blocks: nothing to select
    do { try checkCut(c, source: teacher) } catch { #expect("\(error)".contains("model.layers from 1 to 5"), "\(error)") }
    c.model.layers = 4
    try checkCut(c, source: teacher)
    c.student.select = nil
    c.student.layers = [0, 2, 4, 6]
    do { try checkCut(c, source: teacher); Issue.record("block 6 of a 6-block teacher accepted") } catch { #expect("\(error)".contains("below 6"), "\(error)") }
    // in YAML: a measured rule with a list, and a misspelt rule
    let data = "data:\n  train: [corpus.txt]\n"
    let yaml = data + "student:\n  init: from_teacher\n  select: greedy\n  every: 6\n"
    do { _ = try RunConfig.parse(yaml: yaml); Issue.record("greedy with every accepted") } catch { #expect("\(error)".contains("greedy alone"), "\(error)") }
    do { _ = try RunConfig.parse(yaml: data + "student:\n  init: from_teacher\n  select: greedie\n"); Issue.record("unknown rule accepted") } catch {
        #expect("\(error)".contains("'greedy'") && "\(error)".contains("'angular'"), "\(error)")
    }
    #expect(try RunConfig.parse(yaml: data + "student:\n  init: from_teacher\n  select: angular\n").student.rule == .angular)
}

@Test func aSavedSelectionIsReusedOnlyForTheSameMeasurement() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("selection-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let sel = LayerSelection(rule: "greedy", metric: "kl_teacher_cut", teacherLayers: 6, kept: [0, 1, 5], calibrationTokens: 36, key: "k1")
    try sel.save(in: dir)
    #expect(try LayerSelection.saved(in: dir, key: "k1", comm: LocalCommunicator()) == sel)
    #expect(try LayerSelection.saved(in: dir, key: "k2", comm: LocalCommunicator()) == nil)
    #expect(!FileManager.default.fileExists(atPath: dir + "/selection.json.partial"))
    // rank 0's file decides for every rank, also where another node does not see its directory (all measure again,
    // or none, never a collective on some ranks alone)
    let seen = try ThreadCommunicator.run(worldSize: 2) { comm in
        try LayerSelection.saved(in: comm.rank == 0 ? dir : dir + "-another-node", key: "k1", comm: comm)
    }
    #expect(seen == [sel, sel])
    let none = try ThreadCommunicator.run(worldSize: 2) { comm in
        try LayerSelection.saved(in: comm.rank == 0 ? dir + "-another-node" : dir, key: "k1", comm: comm)
    }
    #expect(none == [nil, nil])
}
