// Compress to a budget (`student.target`): the cut the trainer picks meets the target in the file it exports, each
// candidate is the widest FFN that meets it at its depth, and the choice is the lowest calibration KL of those.
import Foundation
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
/// lowest, and the lowest) are each healed that many steps and the lowest validation divergence after it wins. Each
/// healed score is what the same cut trained as a run of its own reports, to the bit; the others are not healed.
@Test func aHealedBudgetPicksTheLowestValidationDivergenceAfterTheHeal() throws {
    let dir = try temporaryDirectory("distill-budget-heal")
    defer { try? FileManager.default.removeItem(at: dir) }
    // teacher weights large enough for peaked outputs: the cuts' KLs are then of one order (a near-uniform teacher's
    // are not); with these the heal reverses the KL's order (4 blocks × FFN 96 starts closest, 3 × 160 heals better),
    // so a choice by KL alone fails the checks below
    let (base, teacher, tpath, target) = try budgetRun(dir, teacherStd: 0.1)
    var config = base
    config.student.target = StudentTarget(bytes: target, healSteps: 3, finalists: 2)
    let corpus = try TokenCorpus.load(config.data, seed: config.train.seed)
    let tr = try Trainer(config: config, corpus: corpus, teachers: [teacher])
    let choice = try JSONDecoder().decode(BudgetChoice.self, from: Data(contentsOf: URL(fileURLWithPath: config.checkpoint.dir + "/budget.json")))
    let healed = choice.candidates.indices.filter { choice.candidates[$0].healed != nil }
    #expect(healed == healFinalists(choice.candidates, count: 2) && healed.count >= 2, "\(choice.candidates)")
    #expect(choice.chosen.map(healed.contains) == true && healed.allSatisfy { choice.candidates[$0].healed! >= choice.candidates[choice.chosen!].healed! })
    #expect(tr.config.model.layers == choice.candidates[choice.chosen!].layers && tr.config.model.ffnDim == choice.candidates[choice.chosen!].ffnDim)
    // each healed score, replayed: the cut as a run of its own (its kept blocks listed, no target), 3 steps, validation
    for i in healed {
        let run = try Trainer(config: healConfig(config, cut: choice.candidates[i], teacherLayers: 4, steps: 3), corpus: corpus, teachers: [teacher])
        #expect(run.config.model.layers == choice.candidates[i].layers && run.config.student.target == nil && run.cut.blocks == choice.candidates[i].kept)
        for _ in 0..<3 { _ = try run.trainStep() }
        let v = try #require(try run.evaluate())
        #expect(v.kdMean == choice.candidates[i].healed!, "cut \(i): replayed \(v.kdMean), recorded \(choice.candidates[i].healed!)")
    }
    // a run stopped during the heal resumes it: the KL and the finished heals are read back (the KLs nudged here so that
    // a measurement would show), the rest healed, and the choice is the uninterrupted run's
    let path = config.checkpoint.dir + "/budget.json", last = healed.last!
    var progress = choice
    progress.chosen = nil
    progress.candidates[last].healed = nil
    for i in progress.candidates.indices { progress.candidates[i].kl += 1e-9 }
    try progress.save(to: path, comm: LocalCommunicator())
    var calls: [RunConfig] = []
    let resumed = try chooseBudgetCut(config, source: teacher, overhead: ggufHeaderBytes(tpath), calibration: tr.batches.sampler,
                                      comm: LocalCommunicator()) { c in calls.append(c); return choice.candidates[last].healed! }
    #expect(calls.map(\.model.layers) == [choice.candidates[last].layers] && calls.first?.student.keptLayers(teacherLayers: 4) == choice.candidates[last].kept)
    #expect(resumed.model.layers == tr.config.model.layers && resumed.model.ffnDim == tr.config.model.ffnDim)
    let after = try JSONDecoder().decode(BudgetChoice.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    #expect(after.chosen == choice.chosen && after.candidates.map(\.kl) == progress.candidates.map(\.kl) && after.candidates.map(\.healed) == choice.candidates.map(\.healed))
    // a heal shorter than the run's warmup is a valid run (its warmup cut to the heal), not a refused config
    var longWarmup = config
    longWarmup.optimizer.warmupSteps = 10
    let short = healConfig(longWarmup, cut: choice.candidates[last], teacherLayers: 4, steps: 3)
    #expect(short.optimizer.warmupSteps == 3 && healConfig(config, cut: choice.candidates[last], teacherLayers: 4, steps: 3).optimizer.warmupSteps == config.optimizer.warmupSteps)
    _ = try Trainer(config: short, corpus: corpus, teachers: [teacher])
    // the shortlist: within 1.5× the lowest KL, spread over it with both ends, the lowest always in
    func cut(_ kl: Double) -> BudgetCut { var b = BudgetCut(layers: 1, ffnDim: 32, bytes: 0, params: 0); b.kl = kl; return b }
    #expect(healFinalists([0.75, 0.7, 0.72, 0.8, 1.0, 0.9, 1.2].map(cut), count: 3) == [0, 1, 3, 5])  // 1.2 > 1.05
    #expect(healFinalists([0.5, 0.6, 2.0].map(cut), count: 3) == [0, 1])
    // heal_steps needs a validation split; finalists below 2 are refused where the config is read
    #expect(throws: (any Error).self) { try RunConfig.parse(yaml: try config.yaml().replacingOccurrences(of: "finalists: 2", with: "finalists: 1"), source: "t") }
}
