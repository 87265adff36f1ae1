// Hidden-state distillation at the trainer level: a student that is its teacher has no hidden-state loss, a cut student
// starts with one that training lowers, the teacher's staged forward gives bitwise the final hidden states of one forward,
// and pairs that cannot be matched are refused before the student exists; a student of another width learns projections
// to the teacher's (gradients against finite differences, training lowers the loss, checkpoints resume them bitwise).
import Foundation
import KDComm
import KDConfig
import KDCore
import KDData
import KDModel
import KDTestSupport
@testable import KDTrain
import Testing

private func hiddenConfig(layers teacherLayers: Int) throws -> (RunConfig, Transformer) {
    var c = try tinyConfig()
    c.train.steps = 6
    c.teacher = TeacherConfig()
    c.teacher!.path = "in-memory"
    c.distill.kdRatio = 0.5
    c.distill.hiddenWeight = 1
    var tm = c.model
    tm.layers = teacherLayers
    let teacher = Transformer(config: tm, needsGrad: false)
    teacher.initialize(seed: 8)
    c.student.initFrom = .fromTeacher
    return (c, teacher)
}

@Test func aStudentThatIsItsTeacherHasNoHiddenStateLoss() throws {
    var (c, teacher) = try hiddenConfig(layers: 2)
    c.student.layers = [0, 1]
    c.optimizer.lr = 0  // nothing moves: the student stays the teacher
    c.train.steps = 1
    c.optimizer.warmupSteps = 1
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let trainer = try Trainer(config: c, corpus: corpus, teacher: teacher)
    #expect(trainer.hidden!.pairs.map(\.student) == [0, 1] && trainer.hidden!.pairs.map(\.teacher) == [0, 1])
    let s = try trainer.trainStep()
    #expect(s.hidden == 0, "hidden-state loss \(s.hidden)")
}

/// A 2-block student cut from a 4-block teacher (blocks 0 and 3 kept) trained 4 steps with the hidden-state loss at
/// `weight`: its pairs' teacher blocks and the steps' statistics.
private func cutStudentRun(_ layers: HiddenLayers, weight: Float = 1) throws -> (teachers: [Int], stats: [StepStats]) {
    var (c, teacher) = try hiddenConfig(layers: 4)
    c.model.layers = 2
    c.student.layers = [0, 3]
    c.distill.hiddenLayers = layers
    c.distill.hiddenWeight = weight
    c.train.steps = 4
    let trainer = try Trainer(config: c, corpus: try TokenCorpus.load(c.data, seed: c.train.seed), teacher: teacher)
    return (trainer.hidden!.pairs.map(\.teacher), try trainer.run())
}

/// The same run with a negligible weight (the loss measured, its gradient ~0) starts at the same loss and drifts
/// further from the teacher's states than `stats`.
private func expectTrainingLowersTheHiddenLoss(_ layers: HiddenLayers, _ stats: [StepStats]) throws {
    let loose = try cutStudentRun(layers, weight: 1e-6).stats
    #expect(loose[0].hidden == stats[0].hidden)
    #expect(stats.last!.hidden < 0.7 * loose.last!.hidden, "\(layers) with weight 1: \(stats.map(\.hidden)); 1e-6: \(loose.map(\.hidden))")
}

@Test func theHiddenStateLossPullsACutStudentTowardItsTeacher() throws {
    let (teachers, stats) = try cutStudentRun(.auto)
    #expect(teachers == [0, 3])
    // block 0 is copied (its output matches at first), block 3's input is no longer block 2's output
    #expect(stats[0].hidden > 0.01, "\(stats.map(\.hidden))")
    #expect(abs(stats[0].loss - (0.5 * stats[0].ce + 0.5 * stats[0].kd + stats[0].hidden)) < 1e-9 * stats[0].loss)
    try expectTrainingLowersTheHiddenLoss(.auto, stats)
}

@Test func seamPairsAskTheBlockBeforeACutForWhatTheRemovedRunHandedOn() throws {
    func teachers(_ layers: HiddenLayers, _ cut: [Int], of n: Int) -> [Int] {
        let p = hiddenPairs(layers, cutBlocks: cut, teacherLayers: n)
        #expect(p.map(\.student) == Array(cut.indices))
        return p.map(\.teacher)
    }
    // blocks 2–3 and 6 removed: block 1 stands for 1–3, the last kept block (5) for the teacher's last (6)
    #expect(teachers(.seams, [0, 1, 4, 5], of: 7) == [0, 3, 4, 6])
    #expect(teachers(.auto, [0, 1, 4, 5], of: 7) == [0, 1, 4, 5])
    #expect(teachers(.seams, [0, 1, 2], of: 3) == [0, 1, 2])  // no depth cut: auto's pairs
    #expect(teachers(.seams, [2, 3], of: 4) == [2, 3])  // leading blocks removed: no seam after any kept block

    let (pairs, stats) = try cutStudentRun(.seams)
    #expect(pairs == [2, 3])
    // the copied block 0 hands on teacher block 0's output where block 2's is asked: a loss from the first step,
    // larger than auto's (which matches block 0 exactly at first)
    let auto = try cutStudentRun(.auto).stats
    #expect(stats[0].hidden > auto[0].hidden, "seams \(stats[0].hidden), auto \(auto[0].hidden)")
    try expectTrainingLowersTheHiddenLoss(.seams, stats)
}

@Test func theStagedTeacherForwardEndsBitwiseWhereOneForwardDoes() throws {
    let (c, teacher) = try hiddenConfig(layers: 4)
    let placement = ReplicatedTeachers(teachers: [teacher], weights: [1], combine: .mixture, topK: nil, vocabSize: c.model.vocabSize)
    placement.hiddenBlocks = [2, 0]
    let b = 2, t = 8, toks = (0..<(b * t)).map { Int32($0 * 7 % c.model.vocabSize) }
    let staged = try toks.withUnsafeBufferPointer { p in
        let out = try placement.output(for: TeacherBatch(tokens: p.baseAddress!, b: b, t: t, windows: [0, 1], validation: false, route: nil))
        #expect(out.blockOutputs.count == 2)
        return Array(UnsafeBufferPointer(start: out.members[0].hidden, count: b * t * c.model.dim))
    }
    toks.withUnsafeBufferPointer { teacher.forward(tokens: $0.baseAddress!, b: b, t: t) }
    #expect(staged == Array(UnsafeBufferPointer(start: teacher.finalHidden, count: b * t * c.model.dim)))
    // block 0's output is the stream a one-block cut of the teacher hands to its final norm
    let first = toks.withUnsafeBufferPointer { p in
        Array(UnsafeBufferPointer(start: teacher.forwardStage(0..<1, tokens: p.baseAddress!, hidden: nil, b: b, t: t, finalNorm: false), count: b * t * c.model.dim))
    }
    #expect(Array(UnsafeBufferPointer(start: placement.captured[0].base, count: b * t * c.model.dim)) == first)
}

@Test func hiddenPairsThatCannotBeMatchedAreRefused() throws {
    var (c, teacher) = try hiddenConfig(layers: 4)
    c.model.layers = 2
    c.student.layers = [0, 3]
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    c.distill.hiddenLayers = .pairs([[0, 0], [2, 3]])  // the student has blocks 0 and 1
    do { _ = try Trainer(config: c, corpus: corpus, teacher: teacher); Issue.record("student block 2 accepted") } catch {
        #expect("\(error)".contains("pair [2, 3]") && "\(error)".contains("below 2"), "\(error)")
    }
    c.distill.hiddenLayers = .pairs([[1, 4]])
    do { _ = try Trainer(config: c, corpus: corpus, teacher: teacher); Issue.record("teacher block 4 accepted") } catch {
        #expect("\(error)".contains("teacher blocks below 4"), "\(error)")
    }
    c.student = StudentInitConfig()
    for layers in [HiddenLayers.auto, .seams] {
        c.distill.hiddenLayers = layers
        do { _ = try Trainer(config: c, corpus: corpus, teacher: teacher); Issue.record("\(layers) without a cut accepted") } catch {
            #expect("\(error)".contains("from_teacher") && "\(error)".contains("hidden_layers: \(layers)"), "\(error)")
        }
    }
    // in YAML: a word other than auto, and a pair of three
    let data = "data:\n  train: [corpus.txt]\n"
    for bad in ["hidden_layers: all", "hidden_layers: [[0, 1, 2]]", "hidden_weight: -1"] {
        do { _ = try RunConfig.parse(yaml: data + "distill:\n  \(bad)\n"); Issue.record("\(bad) accepted") } catch {
            #expect("\(error)".contains("hidden_"), "\(bad): \(error)")
        }
    }
}

@Test func aStudentCutNarrowerKeepsItsTeachersMostActiveChannelsAndMatchesThem() throws {
    var (c, teacher) = try hiddenConfig(layers: 2)
    c.student.layers = [0, 1]
    c.model.dim = 48
    c.model.headDim = teacher.config.headSize
    c.train.steps = 4
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let trainer = try Trainer(config: c, corpus: corpus, teacher: teacher)
    let kept = try #require(trainer.cut.channels)
    #expect(kept.count == 48 && kept == kept.sorted())
    // the channels are the teacher's 48 largest by summed importance on the calibration windows
    let t = c.train, cb = c.student.calibrationBatches, rows = t.microBatch * t.seqLen
    let sampler = try WindowSampler(stream: corpus.train, mask: corpus.trainMask, seqLen: t.seqLen, seed: t.seed)
    var toks = [Int32](repeating: 0, count: cb * rows), tg = toks
    toks.withUnsafeMutableBufferPointer { p in tg.withUnsafeMutableBufferPointer { q in sampler.fillSequential(inputs: p.baseAddress!, targets: q.baseAddress!, first: 0, count: cb * t.microBatch) } }
    var total = [Double](repeating: 0, count: 64)
    for i in 0..<cb {
        let imp = toks.withUnsafeBufferPointer { teacher.residualChannelImportance(tokens: $0.baseAddress! + i * rows, b: t.microBatch, t: t.seqLen) }
        for l in 0..<2 { for j in 0..<64 { total[j] += imp[l][j] } }
    }
    #expect(Set(kept) == Set(total.indices.sorted { total[$0] > total[$1] }.prefix(48)))
    // the embedding keeps those columns
    let m = trainer.model
    for v in [0, 17, 255] { for (j, ch) in kept.enumerated() { #expect(m.params.base[m.layout.embedding + v * 48 + j] == teacher.params.base[teacher.layout.embedding + v * 64 + ch]) } }
    // the hidden-state loss compares the kept channels and training lowers it (as in the full-width case)
    let stats = try trainer.run()
    c.distill.hiddenWeight = 1e-6
    let loose = try Trainer(config: c, corpus: corpus, teacher: teacher).run()
    #expect(stats[0].hidden > 0 && loose[0].hidden == stats[0].hidden)
    #expect(stats.last!.hidden < 0.7 * loose.last!.hidden, "with weight 1: \(stats.map(\.hidden)); 1e-6: \(loose.map(\.hidden))")
}

@Test func aNarrowStudentThatCannotBeCutIsRefusedBeforeItExists() throws {
    var (c, teacher) = try hiddenConfig(layers: 2)
    c.student.layers = [0, 1]
    c.distill.hiddenWeight = 0
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    c.model.dim = 80
    c.model.headDim = 16
    do { _ = try Trainer(config: c, corpus: corpus, teacher: teacher); Issue.record("a student wider than its teacher accepted") } catch {
        #expect("\(error)".contains("model.dim") && "\(error)".contains("at most the teacher's 64") && "\(error)".contains("80"), "\(error)")
    }
    c.model.dim = 48
    c.model.headDim = 0  // 48 / 4 heads = 12, not the teacher's 16
    do { _ = try Trainer(config: c, corpus: corpus, teacher: teacher); Issue.record("another head size accepted") } catch {
        #expect("\(error)".contains("model.head_dim") && "\(error)".contains("16") && "\(error)".contains("needs head_dim set"), "\(error)")
    }
}

/// The projected loss Σ_k Σ_rows ‖P_k·s_k − t_k‖² / ‖t_k‖²: its gradients with respect to the student's block outputs and
/// to every projection matrix against central differences of the same loss computed forward only.
@Test func theProjectedHiddenStateLossGradientMatchesFiniteDifferences() {
    let rows = 5, ds = 6, dt = 9, pairs = 2, w: Float = 0.8
    let p = HiddenProjection(pairs: pairs, studentDim: ds, teacherDim: dt, rows: rows, comm: LocalCommunicator())
    let weights = randomArray(p.parameterCount, seed: 41, scale: 0.5)
    let s = (0..<pairs).map { randomArray(rows * ds, seed: 50 + UInt64($0), scale: 1.3) }
    let t = (0..<pairs).map { randomArray(rows * dt, seed: 60 + UInt64($0), scale: 2) }
    let targets: [Int32] = [3, -1, 7, 0, 2]  // a masked row carries no loss
    func loss(_ weights: [Float], _ s: [[Float]]) -> Double {
        p.weights.base.update(from: weights, count: weights.count)
        return Double(w) * (0..<pairs).reduce(0.0) { sum, k in
            sum + p.loss(pair: k, student: s[k], teacher: t[k], rows: rows, targets: targets, dx: nil, scale: 0)
        }
    }
    let value = loss(weights, s)
    #expect(value > 0.5)
    // analytic: dx per pair, the projections' gradient accumulated
    p.grads.zero()
    var dx = s.map { [Float](repeating: 0, count: $0.count) }
    var fromBackward = 0.0
    for k in 0..<pairs {
        fromBackward += dx[k].withUnsafeMutableBufferPointer { p.loss(pair: k, student: s[k], teacher: t[k], rows: rows, targets: targets, dx: $0.baseAddress!, scale: w) }
    }
    #expect(abs(Double(w) * fromBackward - value) < 1e-6 * value)
    let dP = Array(UnsafeBufferPointer(start: p.grads.base, count: p.parameterCount))
    let numericP = numericalGradient(weights, eps: 1e-2) { loss($0, s) }
    #expect(maxRelError(dP, numericP) < 1e-2, "projection: \(maxRelError(dP, numericP))")
    for k in 0..<pairs {
        let numeric = numericalGradient(s[k], eps: 1e-2) { x in var all = s; all[k] = x; return loss(weights, all) }
        #expect(maxRelError(dx[k], numeric) < 1e-2, "student outputs of pair \(k): \(maxRelError(dx[k], numeric))")
        // the masked row gets no gradient
        #expect(dx[k][ds..<(2 * ds)].allSatisfy { $0 == 0 })
    }
}

/// A random-init student half its teacher's width, matched on two block pairs through learned projections: the loss
/// starts at 1 (the projections start at zero; up to the ε beside ‖t‖²), training lowers it, and a run resumed from a checkpoint ends with
/// bitwise the same student and projections.
@Test func aStudentOfAnotherWidthLearnsProjectionsToItsTeachersStreamAndResumesThemBitwise() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("distill-projection-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: dir) }
    var (c, teacher) = try hiddenConfig(layers: 4)
    c.student = StudentInitConfig()
    c.model.dim = 32
    c.distill.hiddenLayers = .pairs([[0, 1], [1, 3]])
    c.train.steps = 8
    c.checkpoint.dir = dir.path
    c.checkpoint.every = 4
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let full = try Trainer(config: c, corpus: corpus, teacher: teacher)
    let p = try #require(full.hidden!.projection)
    #expect(p.shape == [2, 64, 32])
    let a = try full.run(checkpoints: true)
    #expect(abs(a[0].hidden - 1) < 1e-3, "\(a.map(\.hidden))")
    #expect(a.last!.hidden < 0.8, "\(a.map(\.hidden))")
    let resumed = try Trainer(config: c, corpus: corpus, teacher: teacher)
    try resumed.resume(from: dir.appendingPathComponent("step_00000004").path)
    let b = try resumed.run()
    #expect(b.map(\.loss) == a.suffix(4).map(\.loss))
    #expect(memcmp(full.model.params.base, resumed.model.params.base, full.model.layout.count * 4) == 0)
    let q = try #require(resumed.hidden!.projection)
    for (x, y) in [(p.weights, q.weights), (p.m, q.m), (p.v, q.v)] { #expect(memcmp(x.base, y.base, x.count * 4) == 0) }
    // every checkpoint carries them beside the student
    #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("step_00000008/hidden_projection.safetensors").path))
}
