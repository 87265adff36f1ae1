// Compress to a budget (`student.target`): the cut the trainer picks meets the target in the file it exports, each
// candidate is the widest FFN that meets it at its depth, and the choice is the lowest calibration KL of those.
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDData
import KDFormats
import KDModel
import KDTestSupport
@testable import KDTrain
import Testing

/// A run cut from a 4-block tiny teacher written as a GGUF file in `dir` (its header is what the student's export
/// copies: metadata, tensor infos), QAT Q4_0 with a Q8_0 table, and a byte target just above 3 blocks × FFN 160: every
/// depth from 4 down to 2 has a candidate, 4 a narrower one, 2 the teacher's width. `teacherStd`: the teacher's
/// initialization (default the config's).
func budgetRun(_ dir: URL, teacherStd: Float? = nil) throws -> (config: RunConfig, teacher: Transformer, tpath: String, target: Int) {
    var c = try placementConfig(.replicated, members: 1, steps: 2)
    c.model.ffnDim = 192
    c.qat.scheme = .q4_0; c.qat.embeddings = true; c.qat.embeddingScheme = .q8_0
    var tc = c
    if let teacherStd { tc.model.initStd = teacherStd }
    let teacher = tinyTeacher(tc, layers: 4, seed: 21)
    let tpath = dir.appendingPathComponent("teacher.gguf").path
    try teacher.exportGGUF(path: tpath, type: .f32, name: "t", extraMetadata: [])
    c.teacher!.path = tpath
    c.student.initFrom = .fromTeacher
    c.checkpoint.dir = dir.appendingPathComponent("run").path
    var probe = c.model
    probe.layers = 3; probe.ffnDim = 160
    let target = exportBytes(probe, qat: c.qat, overhead: ggufHeaderBytes(tpath)) + 64
    c.student.target = StudentTarget(bytes: target)
    return (c, teacher, tpath, target)
}

@Test func theBudgetMeetsItsTargetInTheExportedFileWithTheLowestKLOfItsCandidates() throws {
    let dir = try temporaryDirectory("distill-budget")
    defer { try? FileManager.default.removeItem(at: dir) }
    let (config, teacher, tpath, target) = try budgetRun(dir)
    _ = try trainRanks(1, config, teachers: { [tinyTeacher(config, layers: 4, seed: 21)] })
    let choice = try JSONDecoder().decode(BudgetChoice.self, from: Data(contentsOf: URL(fileURLWithPath: config.checkpoint.dir + "/budget.json")))
    #expect(choice.candidates.map(\.layers) == [4, 3, 2] && choice.candidates.map(\.ffnDim).last == 192, "\(choice.candidates)")
    for cand in choice.candidates {
        #expect(cand.bytes <= target && cand.ffnDim % 32 == 0 && cand.kl.isFinite && cand.kl > 0, "\(cand)")
        // the widest: one block of 32 more channels would not fit (or the teacher's width is reached)
        var wider = config.model
        wider.layers = cand.layers; wider.ffnDim = cand.ffnDim + 32
        #expect(cand.ffnDim + 32 > 192 || exportBytes(wider, qat: config.qat, overhead: ggufHeaderBytes(tpath)) > target, "\(cand)")
    }
    let best = choice.candidates[choice.chosen!]
    #expect(choice.candidates.allSatisfy { $0.kl >= best.kl })
    // the student that trained has that shape, and its export (in the formats it trained in) is within the target
    let corpus = try TokenCorpus.load(config.data, seed: config.train.seed)
    let tr = try Trainer(config: config, corpus: corpus, teachers: [teacher])
    #expect(tr.config.model.layers == best.layers && tr.config.model.ffnDim == best.ffnDim)
    let out = dir.appendingPathComponent("student.gguf").path
    try tr.model.exportGGUF(path: out, type: .q4_0, tableType: .q8_0, name: "t", extraMetadata: [])
    let size = try FileManager.default.attributesOfItem(atPath: out)[.size] as! Int
    #expect(size <= target && size >= best.bytes - 32 * tr.model.layout.entries.count - ggufHeaderBytes(tpath), "file \(size), estimate \(best.bytes), target \(target)")
    // the resolved config is what a checkpoint records; eval and export parse it back
    _ = try RunConfig.parse(yaml: try tr.config.yaml(), source: "state.json")
    // a cut that keeps the teacher's depth (at a narrower FFN) resolves to every block, and that config parses back too
    let full = resolvedConfig(config, cut: BudgetCut(layers: 4, ffnDim: 160, bytes: 0, params: 0), teacherLayers: 4)
    let reread = try RunConfig.parse(yaml: try full.yaml(), source: "state.json")
    #expect(reread.model == full.model && reread.student.rule == .every && reread.student.keptLayers(teacherLayers: 4) == [0, 1, 2, 3])
    // which, as a config of its own, weighs the teacher's depth alone: the widest FFN that meets the target
    let (widthOnly, _) = budgetCandidates(reread, teacher: teacher.config, target: config.student.target!, overhead: ggufHeaderBytes(tpath))
    #expect(widthOnly.map(\.layers) == [4] && widthOnly.first?.ffnDim == choice.candidates.first?.ffnDim, "\(widthOnly)")
    // a target no cut can meet is refused with the smallest size tried
    var tooSmall = config
    tooSmall.student.target = StudentTarget(bytes: 1000)
    do {
        _ = try Trainer(config: tooSmall, corpus: corpus, teachers: [teacher])
        Issue.record("a 1000-byte target accepted")
    } catch {
        #expect("\(error)".contains("student.target") && "\(error)".contains("the smallest tried"), "\(error)")
    }
}

@Test func aSpeedTargetKeepsTheWidestCutsWhoseEstimatedSpeedupMeetsIt() throws {
    var c = try placementConfig(.replicated, members: 1, steps: 2)
    c.model.ffnDim = 192
    c.student.initFrom = .fromTeacher
    let teacher = tinyTeacher(c, layers: 4, seed: 21).config
    // the cost, counted independently from the layout: each block's matrices and attention over the context, the
    // head, the fixed cost per block
    func cost(_ m: ModelConfig) -> Double {
        let layout = ParameterLayout(config: m)
        let blockMatrices = layout.entries.filter { $0.isMatrix && ParameterLayout.block(of: $0.name) != nil }.reduce(0) { $0 + $1.count }
        let attention = 2 * m.maxSeqLen * m.heads * m.headSize
        return Double(blockMatrices + m.vocabSize * m.dim) + Double(m.layers) * (Double(attention) + perBlockCost)
    }
    var shaped = c.model
    shaped.layers = teacher.layers
    #expect(generationCost(shaped, context: c.model.maxSeqLen) == cost(shaped))
    for speed in [1.3, 1.9] {
        c.student.target = StudentTarget(speed: speed)
        let (fits, _) = budgetCandidates(c, teacher: teacher, target: c.student.target!, overhead: 0)
        #expect(!fits.isEmpty && fits.allSatisfy { $0.layers < teacher.layers }, "\(fits)")
        for cand in fits {
            var m = c.model
            m.layers = cand.layers; m.ffnDim = cand.ffnDim
            #expect(abs(cand.speedup! - cost(shaped) / cost(m)) < 1e-12 && cand.speedup! >= speed, "\(cand)")
            // the widest: 32 more channels would miss the target (or the teacher's width is reached)
            m.ffnDim += 32
            #expect(m.ffnDim > 192 || cost(shaped) / cost(m) < speed, "\(cand)")
        }
    }
    // a speed no cut reaches is refused with the fastest cut tried
    c.student.target = StudentTarget(speed: 50)
    let (none, smallest) = budgetCandidates(c, teacher: teacher, target: c.student.target!, overhead: 0)
    #expect(none.isEmpty && smallest.layers == 2 && smallest.speedup! < 50)
}

/// With `qat.tensor_types: {ffn_down: q3_k}` beside IQ4_NL blocks, every FFN width the budget weighs is a multiple of
/// 256, so that ffn_down keeps its Q3_K (a width its 256-blocks do not divide would fall back to Q4_0); without it,
/// widths go in blocks of 32. Each candidate's estimate counts ffn_down in the type its plan gives it.
@Test func aByteBudgetKeepsFFNWidthsWhereFFNDownKeepsItsKQuant() throws {
    var c = try placementConfig(.replicated, members: 1, steps: 2)
    c.model.dim = 256; c.model.ffnDim = 1024
    c.qat.scheme = .iq4_nl; c.qat.embeddings = true
    c.student.initFrom = .fromTeacher
    let teacher = tinyTeacher(c, layers: 4, seed: 5).config
    var probe = c.model
    probe.layers = 4; probe.ffnDim = 1024
    for (types, multiple) in [([BlockMatrix.ffnDown: QATScheme.q3_K], 256), (nil, 32)] {
        c.qat.tensorTypes = types
        c.student.target = StudentTarget(bytes: exportBytes(probe, qat: c.qat, overhead: 0) * 3 / 4)
        let (fits, _) = budgetCandidates(c, teacher: teacher, target: c.student.target!, overhead: 0)
        #expect(fits.count >= 2, "\(fits)")
        for cand in fits {
            #expect(cand.ffnDim % multiple == 0 && cand.bytes <= c.student.target!.bytes!, "\(types ?? [:]): \(cand.summary)")
            var m = c.model
            m.layers = cand.layers; m.ffnDim = cand.ffnDim
            let layout = ParameterLayout(config: m), plan = QuantPlan(qat: c.qat, config: m, layout: layout)
            let down = layout.entries.first { $0.name.hasSuffix("mlp.down_proj.weight") }!
            #expect(plan.ggmlType(down) == (types == nil ? .iq4_nl : .q3_K), "\(cand.summary)")
        }
        if types == nil { #expect(fits.contains { $0.ffnDim % 256 != 0 }, "\(fits)") }
    }
}

/// The byte budget counts a k-quant plan tensor by tensor — llama.cpp's Q4_K_M choices, the row fallback (FFN 320: the
/// down projection in Q5_0), Q6_K tables — so its estimate is the exported file's size.
@Test func theByteEstimateOfAPresetStudentIsItsExportedFile() throws {
    let dir = try temporaryDirectory("distill-budget")
    defer { try? FileManager.default.removeItem(at: dir) }
    var c = try placementConfig(.replicated, members: 1, steps: 2)
    c.model.dim = 256; c.model.ffnDim = 320
    c.qat.preset = .q4_K_M; c.qat.scheme = .q4_K; c.qat.embeddings = true
    let model = tinyTeacher(c, layers: 4, seed: 3)
    let out = dir.appendingPathComponent("s.gguf").path
    let plan = model.quantPlan(c.qat)
    try model.exportGGUF(path: out, typeOf: { plan.ggmlType($0) }, name: "s", extraMetadata: [])
    let size = try FileManager.default.attributesOfItem(atPath: out)[.size] as! Int
    #expect(size == exportBytes(model.config, qat: c.qat, overhead: ggufHeaderBytes(out)), "file \(size)")
    #expect(plan.summary(model.layout).hasPrefix("Q4_K") && plan.summary(model.layout).contains("Q6_K") && plan.summary(model.layout).contains("Q5_0"),
            "\(plan.summary(model.layout))")
}

/// `heal_steps`: the calibration KL only shortlists; the finalists (spread over the cuts whose KL is within 1.5× the
/// lowest, and the lowest) are healed in a tournament — all of them `heal_steps` steps, the better half on to twice as
/// many, … — and the lowest validation divergence of the last round wins. Each score is what the same cut trained as a
/// run of its own reports at that step, to the bit (the survivors go on from their checkpoints); the others are not
/// healed; a stopped tournament resumes where it was.
@Test func aHealedBudgetPicksTheWinnerOfAHealTournament() throws {
    let dir = try temporaryDirectory("distill-budget-heal")
    defer { try? FileManager.default.removeItem(at: dir) }
    // teacher weights large enough for peaked outputs: the cuts' KLs are then of one order (a near-uniform teacher's
    // are not); with these the heal reverses the KL's order (4 blocks × FFN 96 starts closest, 3 × 160 heals better),
    // so a choice by KL alone fails the checks below
    let (base, teacher, tpath, target) = try budgetRun(dir, teacherStd: 0.1)
    var config = base
    config.student.target = StudentTarget(bytes: target, healSteps: 2, finalists: 3)
    let corpus = try TokenCorpus.load(config.data, seed: config.train.seed)
    let tr = try Trainer(config: config, corpus: corpus, teachers: [teacher])
    let path = config.checkpoint.dir + "/budget.json"
    let first = try JSONDecoder().decode(BudgetChoice.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    let healed = first.candidates.indices.filter { !first.candidates[$0].heals.isEmpty }
    #expect(healed == healFinalists(first.candidates, count: 3) && healed.count >= 2, "\(first.candidates)")
    #expect(first.chosen.map(healed.contains) == true && tr.config.model.layers == first.candidates[first.chosen!].layers
            && tr.config.model.ffnDim == first.candidates[first.chosen!].ffnDim)
    #expect(!FileManager.default.fileExists(atPath: config.checkpoint.dir + "/heal"), "the heals' checkpoints are removed once it has chosen")

    // all three cuts in the tournament (the saved KLs set within 1.5× of each other; a run reads them back and heals):
    // round 1 heals the three to step 2, round 2 the better two from their checkpoints to step 4
    var progress = first
    progress.chosen = nil
    for i in progress.candidates.indices { progress.candidates[i].heals = []; progress.candidates[i].kl = 1 + Double(i) / 100 }
    try progress.save(to: path, comm: LocalCommunicator())
    var calls: [(layers: Int, until: Int)] = []
    let chosen = try chooseBudgetCut(config, source: teacher, overhead: ggufHeaderBytes(tpath), calibration: tr.batches.sampler, comm: LocalCommunicator()) { c, until in
        #expect(c.train.steps == 4 && c.student.target == nil && c.checkpoint.dir.hasSuffix("/heal/\(c.model.layers)x\(c.model.ffnDim)"))
        if until == 4 {  // round 2: only the survivors' checkpoints are left, each at step 2
            let left = try FileManager.default.contentsOfDirectory(atPath: config.checkpoint.dir + "/heal").sorted()
            #expect(left.count == 2 && left.contains("\(c.model.layers)x\(c.model.ffnDim)"), "\(left)")
            #expect(CheckpointStore(root: c.checkpoint.dir, keep: 1).newestValid()?.state.step == 2)
        }
        calls.append((c.model.layers, until))
        let (v, from) = try Trainer.heal(c, until: until, corpus: corpus, comm: LocalCommunicator(), teachers: [teacher])
        #expect(from == (until == 4 ? 2 : 0), "round \(until == 4 ? 2 : 1) went on from step \(from)")
        return try #require(v)
    }
    let choice = try JSONDecoder().decode(BudgetChoice.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    let cands = choice.candidates, winner = try #require(choice.chosen)
    #expect(calls.map(\.until) == [2, 2, 2, 4, 4] && calls.prefix(3).map(\.layers) == [4, 3, 2], "\(calls)")
    let survivors = cands.indices.sorted { (cands[$0].heals[0], $0) < (cands[$1].heals[0], $1) }.prefix(2).sorted()
    #expect(calls.suffix(2).map(\.layers) == survivors.map { cands[$0].layers } && cands.indices.map { cands[$0].heals.count } == cands.indices.map { survivors.contains($0) ? 2 : 1 })
    #expect(survivors.contains(winner) && survivors.allSatisfy { cands[$0].heals[1] >= cands[winner].heals[1] } && chosen.model.layers == cands[winner].layers)
    #expect(!FileManager.default.fileExists(atPath: config.checkpoint.dir + "/heal"))
    // each score, replayed: the cut as a run of its own (its kept blocks listed, no target, no checkpoint), trained
    // straight through and evaluated at each round's step — the survivors' second scores came through a checkpoint
    for (i, cand) in cands.enumerated() {
        var c = healConfig(config, cut: cand, teacherLayers: 4, steps: 4)
        c.checkpoint.dir = dir.appendingPathComponent("replay\(i)").path
        let run = try Trainer(config: c, corpus: corpus, teachers: [teacher])
        #expect(run.config.model.layers == cand.layers && run.config.student.target == nil && run.cut.blocks == cand.kept)
        for (r, until) in [2, 4].prefix(cand.heals.count).enumerated() {
            while run.step < until { _ = try run.trainStep() }
            let v = try #require(try run.evaluate())
            #expect(v.kdMean == cand.heals[r], "cut \(i) at step \(until): replayed \(v.kdMean), recorded \(cand.heals[r])")
        }
    }

    // a run stopped during the tournament resumes it: the KL and the finished heals are read back (the KLs nudged here so
    // that a measurement would show), the missing one healed, and the choice is the uninterrupted run's
    let last = survivors.last!
    var stopped = choice
    stopped.chosen = nil
    stopped.candidates[last].heals.removeLast()
    for i in stopped.candidates.indices { stopped.candidates[i].kl += 1e-9 }
    try stopped.save(to: path, comm: LocalCommunicator())
    calls = []
    let resumed = try chooseBudgetCut(config, source: teacher, overhead: ggufHeaderBytes(tpath), calibration: tr.batches.sampler,
                                      comm: LocalCommunicator()) { c, until in
        calls.append((c.model.layers, until))
        #expect(c.student.keptLayers(teacherLayers: 4) == cands[last].kept)
        return cands[last].heals[1]
    }
    #expect(calls.map(\.layers) == [cands[last].layers] && calls.map(\.until) == [4], "\(calls)")
    #expect(resumed.model.layers == chosen.model.layers && resumed.model.ffnDim == chosen.model.ffnDim)
    let after = try JSONDecoder().decode(BudgetChoice.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    #expect(after.chosen == choice.chosen && after.candidates.map(\.kl) == stopped.candidates.map(\.kl) && after.candidates.map(\.heals) == cands.map(\.heals))
    // a heal folder left by another selection is not this one's: a fresh selection (no budget.json) starts without it
    try FileManager.default.removeItem(atPath: path)
    try FileManager.default.createDirectory(atPath: config.checkpoint.dir + "/heal/stale", withIntermediateDirectories: true)
    var fresh = 0
    _ = try chooseBudgetCut(config, source: teacher, overhead: ggufHeaderBytes(tpath), calibration: tr.batches.sampler, comm: LocalCommunicator()) { _, _ in
        #expect(!FileManager.default.fileExists(atPath: config.checkpoint.dir + "/heal/stale"))
        fresh += 1
        return 1
    }
    #expect(fresh >= 2)
    // the heal is the run in miniature: its warmup scaled to its length (at least 1), never beyond it
    var longWarmup = config
    longWarmup.optimizer.warmupSteps = 10; longWarmup.train.steps = 100
    #expect(healConfig(longWarmup, cut: cands[last], teacherLayers: 4, steps: 25).optimizer.warmupSteps == 3)
    longWarmup.train.steps = 10
    let short = healConfig(longWarmup, cut: cands[last], teacherLayers: 4, steps: 3)
    #expect(short.optimizer.warmupSteps == 3)
    _ = try Trainer(config: short, corpus: corpus, teachers: [teacher])
    #expect(healRounds(8, steps: 20) == [20, 40, 80] && healRounds(5, steps: 3) == [3, 6, 12] && healRounds(3, steps: 5) == [5, 10]
            && healRounds(2, steps: 5) == [5] && healRounds(1, steps: 5).isEmpty)
    // a heal's checkpoint goes as soon as the cut is behind as many finished ones as go on (ties to the lower cut)
    #expect(outOfTheRunning([(0.5, 0), (0.4, 1)], goingOn: 2).isEmpty)
    #expect(outOfTheRunning([(0.5, 0), (0.4, 1), (0.6, 2)], goingOn: 2) == [2])
    #expect(outOfTheRunning([(0.5, 0), (0.5, 1), (0.5, 2)], goingOn: 2) == [2])
    #expect(outOfTheRunning([(0.3, 3), (0.2, 5)], goingOn: 1) == [3])
    #expect(outOfTheRunning([(0.41, 0), (0.45, 1), (0.40, 2), (0.47, 3), (0.44, 4)], goingOn: 4) == [3])
    #expect(outOfTheRunning([(0.41, 0), (0.45, 1), (0.40, 2), (0.47, 3), (0.44, 4), (0.46, 5), (0.39, 6)], goingOn: 4) == [1, 3, 5])
    // the shortlist: within 1.5× the lowest KL, spread over it with both ends, the lowest always in
    func cut(_ kl: Double) -> BudgetCut { var b = BudgetCut(layers: 1, ffnDim: 32, bytes: 0, params: 0); b.kl = kl; return b }
    #expect(healFinalists([0.75, 0.7, 0.72, 0.8, 1.0, 0.9, 1.2].map(cut), count: 3) == [0, 1, 3, 5])  // 1.2 > 1.05
    #expect(healFinalists([0.5, 0.6, 2.0].map(cut), count: 3) == [0, 1])
    // heal_steps needs a validation split; finalists below 2 are refused where the config is read
    #expect(throws: (any Error).self) { try RunConfig.parse(yaml: try config.yaml().replacingOccurrences(of: "finalists: 3", with: "finalists: 1"), source: "t") }
}
