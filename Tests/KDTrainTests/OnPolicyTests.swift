// On-policy distillation at the trainer level: generated steps mask their prompts and train on the divergence only,
// the choice of source follows the counter-based RNG, MiniLLM's rewards vanish when the teacher is the student,
// DistiLLM's threshold rises with the validation loss and its replay buffer resumes bitwise from a checkpoint.
import Foundation
import KDConfig
import KDCore
import KDData
import KDModel
@testable import KDTrain
import Testing

func onPolicyConfig(_ mode: String) throws -> RunConfig {
    var c = try tinyConfig()
    c.train.steps = 3
    c.train.gradAccum = 1
    c.train.seqLen = 32
    c.teacher = TeacherConfig()
    c.teacher!.path = "in-memory"
    c.distill.kdRatio = 0.5
    c.policy.mode = try #require(PolicyMode(rawValue: mode))
    c.policy.promptTokens = 8
    return c
}

@Test func gkdStepsTrainOnStudentContinuationsOfCorpusPrompts() throws {
    var c = try onPolicyConfig("gkd")
    c.policy.fraction = 1
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let teacher = randomTeacher(c, seed: 8)
    let a = try Trainer(config: c, corpus: corpus, teacher: teacher)
    let stats = try a.run()
    #expect(stats.allSatisfy { $0.source == .fresh && $0.kd > 0 && abs($0.loss - $0.kd) < 1e-12 })
    // only the generated tokens count: seq_len + 1 − prompt of each window
    #expect(stats.allSatisfy { $0.tokens == c.train.microBatch * (c.train.seqLen + 1 - c.policy.promptTokens) })
    // the same seed generates the same sequences: a second run is identical
    let b = try Trainer(config: c, corpus: corpus, teacher: teacher)
    #expect(try b.run().map(\.loss) == stats.map(\.loss))
    // λ = 0.5: the choice is a function of the step alone, and some steps stay on the corpus
    c.policy.fraction = 0.5
    c.train.steps = 8
    let mixed = try Trainer(config: c, corpus: corpus, teacher: teacher).run().map(\.source)
    #expect(mixed.contains(.fresh) && mixed.contains(.corpus), "\(mixed)")
}

@Test func miniLLMRewardsVanishWhenTheTeacherIsTheStudent() throws {
    var c = try onPolicyConfig("minillm")
    c.distill.objective = .rkl
    c.policy.fraction = 1
    c.teacher!.path = ""
    c.teacher!.selfSource = .initial
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let tr = try Trainer(config: c, corpus: corpus)
    let s = try tr.trainStep()
    // p = q: rewards log p − log q are 0, so are the advantages and the reverse KL; nothing to learn
    #expect(s.source == .rollout && abs(s.reward) < 1e-6 && s.kd < 1e-6 && s.gradNorm < 1e-4, "\(s)")
    // another teacher: rewards are negative on average (log p < log q on the student's own samples) and it trains
    c.teacher!.selfSource = .none
    c.teacher!.path = "in-memory"
    let other = try Trainer(config: c, corpus: corpus, teacher: randomTeacher(c, seed: 9))
    let o = try other.run()
    #expect(o.allSatisfy { $0.reward.isFinite && $0.kd > 0 && $0.gradNorm > 0 })
    #expect(o[0].reward < 0)
}

@Test func distillmReplayBufferAndThresholdResumeBitwise() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("distill-dllm-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: dir) }
    var c = try onPolicyConfig("distillm")
    c.train.steps = 6
    c.train.evalEvery = 1
    c.train.evalBatches = 1
    c.optimizer.lr = 0.05  // big steps, so the validation loss rises now and then
    c.policy.thresholdInit = 0.5
    c.policy.replayCapacity = 6
    c.checkpoint.dir = dir.path
    c.checkpoint.every = 3
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let teacher = randomTeacher(c, seed: 10)
    let full = try Trainer(config: c, corpus: corpus, teacher: teacher)
    let stats = try full.run(checkpoints: true)
    #expect(stats.contains { $0.source != .corpus })
    #expect(full.batches.distillm!.replay.items.count <= 6 && !full.batches.distillm!.replay.items.isEmpty)
    let resumed = try Trainer(config: c, corpus: corpus, teacher: teacher)
    try resumed.resume(from: dir.appendingPathComponent("step_00000003").path)
    let rest = try resumed.run()
    #expect(rest.map(\.loss) == stats.suffix(3).map(\.loss) && rest.map(\.source) == stats.suffix(3).map(\.source))
    #expect(resumed.batches.distillm!.replay.items == full.batches.distillm!.replay.items && resumed.batches.distillm!.threshold == full.batches.distillm!.threshold)
    #expect(memcmp(full.model.params.base, resumed.model.params.base, full.model.layout.count * 4) == 0)
}

@Test func thresholdRisesOnlyWhenTheValidationLossRises() throws {
    var c = try onPolicyConfig("distillm")
    c.train.evalEvery = 1
    c.policy.thresholdStep = 0.25
    c.policy.margin = 0.01
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let tr = try Trainer(config: c, corpus: corpus, teacher: randomTeacher(c, seed: 3))
    for (loss, expected) in [(2.0, Float(0)), (1.5, 0), (1.505, 0), (1.6, 0.25), (1.7, 0.5), (1.0, 0.5)] {
        tr.batches.distillm!.adapt(validationLoss: loss)
        #expect(tr.batches.distillm!.threshold == expected, "after \(loss)")
    }
}
