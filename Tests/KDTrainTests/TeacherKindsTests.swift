// Several teachers and self-distillation at the trainer level: a mixture of one teacher with itself trains exactly
// like that teacher, different members change the target, the EMA self-teacher follows θ_T ← d·θ_T + (1 − d)·θ and
// travels in checkpoints so a resumed run is bitwise the uninterrupted one.
import Foundation
import KDCheckpoint
import KDConfig
import KDCore
import KDData
import KDModel
@testable import KDTrain
import KDData
import Testing

func twoTeacherConfig(_ combine: String = "mixture") throws -> RunConfig {
    var c = try tinyConfig()
    c.train.steps = 3
    c.teacher = TeacherConfig()
    c.teacher!.members = [TeacherMember(path: "in-memory-a", weight: 0.25), TeacherMember(path: "in-memory-b", weight: 0.75)]
    c.teacher!.combine = try #require(TeacherCombine(rawValue: combine))
    c.distill.kdRatio = 0.8
    c.distill.objective = .skewRKL
    return c
}

func randomTeacher(_ c: RunConfig, seed: UInt64) -> Transformer {
    let t = Transformer(config: c.model, needsGrad: false)
    t.initialize(seed: seed)
    return t
}

@Test(arguments: ["mixture", "logits"])
func aTeacherMixedWithItselfTrainsLikeThatTeacher(combine: String) throws {
    var c = try twoTeacherConfig(combine)
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let a = randomTeacher(c, seed: 5), b = randomTeacher(c, seed: 5)
    let pair = try Trainer(config: c, corpus: corpus, teachers: [a, b])
    let pairStats = try pair.run()
    var one = c
    one.teacher!.members = []
    one.teacher!.path = "in-memory-a"
    let single = try Trainer(config: one, corpus: corpus, teacher: randomTeacher(c, seed: 5))
    let singleStats = try single.run()
    for (x, y) in zip(pairStats, singleStats) { #expect(abs(x.loss - y.loss) < 1e-5 * abs(y.loss), "\(x.loss) vs \(y.loss)") }
    var worst: Float = 0
    for i in 0..<pair.model.layout.count { worst = max(worst, abs(pair.model.params.base[i] - single.model.params.base[i])) }
    #expect(worst < 1e-5, "max |Δθ| \(worst)")
    // a genuinely different second member changes the target
    c.train.steps = 2
    let mixed = try Trainer(config: c, corpus: corpus, teachers: [randomTeacher(c, seed: 5), randomTeacher(c, seed: 6)])
    let m = try mixed.trainStep()
    #expect(abs(m.kd - pairStats[0].kd) > 1e-4)
}

@Test func membersMustMatchTheConfigAndTheVocabulary() throws {
    let c = try twoTeacherConfig()
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    #expect(throws: (any Error).self) { try Trainer(config: c, corpus: corpus, teachers: [randomTeacher(c, seed: 1)]) }
    var big = c.model
    big.vocabSize = 300
    let wrong = Transformer(config: big, needsGrad: false)
    do {
        _ = try Trainer(config: c, corpus: corpus, teachers: [randomTeacher(c, seed: 1), wrong])
        Issue.record("a member with another vocabulary was accepted")
    } catch {
        #expect("\(error)".contains("300 tokens in in-memory-b") && "\(error)".contains("256"), "\(error)")
    }
}

@Test func emaSelfTeacherFollowsTheStudentAndResumesBitwise() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("distill-ema-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: dir) }
    var c = try tinyConfig()
    c.train.steps = 4
    c.teacher = TeacherConfig()
    c.teacher!.selfSource = .ema
    c.teacher!.emaDecay = 0.9
    c.train.gradAccum = 1
    c.distill.kdRatio = 0.5
    c.checkpoint.dir = dir.path
    c.checkpoint.every = 2
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let tr = try Trainer(config: c, corpus: corpus)
    let n = tr.model.layout.count
    let start = Array(UnsafeBufferPointer(start: tr.model.params.base, count: n))
    // step 1: the teacher is the initial student, so the divergence is exactly zero
    let s1 = try tr.trainStep()
    #expect(s1.kd < 1e-7, "\(s1.kd)")
    let after = Array(UnsafeBufferPointer(start: tr.model.params.base, count: n))
    let ema = (tr.placement as! SelfTeacherPlacement).model.params.base
    var worst: Float = 0
    for i in 0..<n { worst = max(worst, abs(ema[i] - (0.9 * start[i] + 0.1 * after[i]))) }
    #expect(worst < 1e-6 && after != start, "max |Δ| from the EMA formula \(worst)")
    let s2 = try tr.trainStep()
    #expect(s2.kd > 0)
    // the uninterrupted run against stop (checkpoint at 2) + resume
    let full = try Trainer(config: c, corpus: corpus)
    try full.run(checkpoints: true)
    let resumed = try Trainer(config: c, corpus: corpus)
    try resumed.resume(from: dir.appendingPathComponent("step_00000002").path)
    try resumed.run()
    #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("step_00000004/ema_teacher.safetensors").path))
    #expect(memcmp(full.model.params.base, resumed.model.params.base, n * 4) == 0)
    #expect(memcmp((full.placement as! SelfTeacherPlacement).model.params.base, (resumed.placement as! SelfTeacherPlacement).model.params.base, n * 4) == 0)
}

/// Prepared JSONL whose examples name teacher `route(i)` (nil: no field) → a corpus.
func routedCorpus(_ dir: URL, _ name: String, route: (Int) -> Int?) throws -> String {
    let lines = (0..<240).map { i in route(i).map { "{\"text\": \"fortune \(i): a line of text.\", \"teacher\": \($0)}" } ?? "{\"text\": \"fortune \(i): a line of text.\"}" }
    try lines.joined(separator: "\n").write(to: dir.appendingPathComponent("\(name).jsonl"), atomically: true, encoding: .utf8)
    var o = PrepareOptions(inputs: [dir.appendingPathComponent("\(name).jsonl").path], output: dir.appendingPathComponent(name).path)
    o.valFraction = 0.1
    try prepareCorpus(o, tokenizer: .bytes)
    return o.output
}

@Test func examplesRoutedToOneTeacherTrainOnThatTeacherAlone() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("distill-route-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    var c = try twoTeacherConfig()
    c.train.seqLen = 32
    c.train.steps = 2
    let (a, b) = (randomTeacher(c, seed: 21), randomTeacher(c, seed: 22))
    func run(_ corpusPath: String, _ config: RunConfig, _ teachers: [Transformer]) throws -> (Trainer, [StepStats]) {
        var cfg = config
        cfg.data.train = [corpusPath]
        let tr = try Trainer(config: cfg, corpus: try TokenCorpus.load(cfg.data, seed: cfg.train.seed), teachers: teachers)
        return (tr, try tr.run())
    }
    // every example names teacher 1: the pair trains exactly like teacher b alone on the same text without routes
    let all = try routedCorpus(dir, "all", route: { _ in 1 }), none = try routedCorpus(dir, "none", route: { _ in nil })
    let (pair, pairStats) = try run(all, c, [a, b])
    #expect(pair.batches.routing)
    var single = c
    single.teacher!.members = [TeacherMember(path: "b")]
    let (alone, aloneStats) = try run(none, single, [b])
    for (x, y) in zip(pairStats, aloneStats) { #expect(abs(x.kd - y.kd) < 1e-5 * y.kd, "\(x.kd) vs \(y.kd)") }
    var worst: Float = 0
    for i in 0..<pair.model.layout.count { worst = max(worst, abs(pair.model.params.base[i] - alone.model.params.base[i])) }
    #expect(worst < 1e-5)
    // no field: the mixture, which is not teacher b
    let (mixed, mixedStats) = try run(none, c, [a, b])
    #expect(!mixed.batches.routing && abs(mixedStats[0].kd - aloneStats[0].kd) > 1e-4)
    // a route beyond the members is refused before training, naming the index
    let far = try routedCorpus(dir, "far", route: { $0 % 3 == 0 ? 2 : nil })
    do {
        _ = try run(far, c, [a, b])
        Issue.record("a route to a third teacher was accepted")
    } catch {
        #expect("\(error)".contains("index 2") && "\(error)".contains("below 2"), "\(error)")
    }
}
