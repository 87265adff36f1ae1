// The trainer end to end in-process: the golden loss curve of Configs/tiny.yaml, gradient accumulation equal to a
// bigger micro-batch, deterministic data order, a NaN stopping the run with a clear error, prepared shards with
// their loss mask, distillation from a teacher, and the teacher manifest guarding resume.
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDData
import KDModel
import KDTrain
import Testing

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

func tinyConfig() throws -> RunConfig {
    // one thread for every in-process run, set before the first one: a count changing mid-run changes summation order
    configureThreads(1)
    var c = try RunConfig.load(path: repoRoot.appendingPathComponent("Configs/tiny.yaml").path)
    c.data.train = c.data.train.map { repoRoot.appendingPathComponent($0).path }
    return c
}

@Test func firstTenLossesMatchTheGoldenCurve() throws {
    configureThreads(1)
    let c = try tinyConfig()
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let trainer = try Trainer(config: c, corpus: corpus)
    let losses = try trainer.run().map(\.loss)
    let fixture = repoRoot.appendingPathComponent("Tests/KDTrainTests/Fixtures/tiny_losses.txt")
    if ProcessInfo.processInfo.environment["DISTILL_RECORD_GOLDEN"] == "1" {
        try losses.map { String(format: "%.6f", $0) }.joined(separator: "\n").appending("\n").write(to: fixture, atomically: true, encoding: .utf8)
    }
    let golden = try String(contentsOf: fixture, encoding: .utf8).split(separator: "\n").compactMap { Double($0) }
    #expect(golden.count == 10)
    #expect(losses.count == 10)
    // rtol 1e-4: covers BLAS kernel choice and build mode, far below any real change to the numerics
    for (a, g) in zip(losses, golden) { #expect(abs(a - g) <= 1e-4 * g, "loss \(a) vs golden \(g)") }
    #expect(losses.last! < losses.first! - 0.5)
}

@Test func gradientAccumulationEqualsOneBiggerMicroBatch() throws {
    var a = try tinyConfig()
    a.train.steps = 3
    a.train.microBatch = 2
    a.train.gradAccum = 3
    a.optimizer.warmupSteps = 1
    var b = a
    b.train.microBatch = 6
    b.train.gradAccum = 1
    let corpus = try TokenCorpus.load(a.data, seed: a.train.seed)
    let ta = try Trainer(config: a, corpus: corpus), tb = try Trainer(config: b, corpus: corpus)
    let la = try ta.run().map(\.loss), lb = try tb.run().map(\.loss)
    for (x, y) in zip(la, lb) { #expect(abs(x - y) < 1e-5 * y) }
    var worst: Float = 0
    for i in 0..<ta.model.layout.count { worst = max(worst, abs(ta.model.params.base[i] - tb.model.params.base[i])) }
    #expect(worst < 1e-5)
    #expect(ta.sampleCursor == 18 && tb.sampleCursor == 18)
}

@Test func nonFiniteLossStopsBeforeTheUpdate() throws {
    var c = try tinyConfig()
    c.train.steps = 2
    let trainer = try Trainer(config: c, corpus: try TokenCorpus.load(c.data, seed: c.train.seed))
    trainer.model.params.base[5] = .nan
    let before = trainer.model.params.toArray()
    #expect(throws: KDError.nonFinite(what: "training loss", step: 1)) { try trainer.trainStep() }
    #expect(trainer.step == 0)
    let after = trainer.model.params.toArray()
    #expect(zip(before, after).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) })
}

@Test func everyWindowIsVisitedOncePerEpochInASeededOrder() throws {
    let stream = (0..<1000).map { Int32($0 % 251) }
    let s = try WindowSampler(stream: stream, seqLen: 10, seed: 9)
    #expect(s.windows == 99)
    for epoch in 0..<3 {
        let starts = (0..<s.windows).map { s.windowStart(sample: epoch * s.windows + $0) }
        #expect(Set(starts).count == s.windows)
        #expect(starts.allSatisfy { $0 % 10 == 0 && $0 + 11 <= stream.count })
    }
    let e0 = (0..<5).map { s.windowStart(sample: $0) }, e1 = (0..<5).map { s.windowStart(sample: 99 + $0) }
    #expect(e0 != e1)  // a new order each epoch
    let again = try WindowSampler(stream: stream, seqLen: 10, seed: 9)
    #expect((0..<50).map { again.windowStart(sample: $0) } == (0..<50).map { s.windowStart(sample: $0) })
    // targets are the inputs shifted by one
    var inp = [Int32](repeating: 0, count: 20), tgt = inp
    inp.withUnsafeMutableBufferPointer { i in tgt.withUnsafeMutableBufferPointer { t in s.fill(inputs: i.baseAddress!, targets: t.baseAddress!, first: 3, count: 2) } }
    for r in 0..<2 { #expect(Array(inp[(r * 10 + 1)..<(r * 10 + 10)]) == Array(tgt[(r * 10)..<(r * 10 + 9)])) }
}

/// A model that expects BOS first (Gemma): every window is BOS and the next seqLen − 1 tokens, and across an epoch every
/// token of the stream (but the last, which no window reaches) is a target exactly once; masked tokens are not.
@Test func windowsOfABOSModelStartWithBOSAndPredictEveryTokenOnce() throws {
    let stream = (0..<101).map { Int32($0) }
    var mask = [UInt8](repeating: 1, count: 101)
    mask[37] = 0
    let s = try WindowSampler(stream: stream, mask: mask, seqLen: 10, seed: 4, bos: 999)
    var inp = [Int32](repeating: 0, count: 10 * s.windows), tgt = inp
    inp.withUnsafeMutableBufferPointer { i in tgt.withUnsafeMutableBufferPointer { t in s.fill(inputs: i.baseAddress!, targets: t.baseAddress!, first: 0, count: s.windows) } }
    for r in 0..<s.windows {
        #expect(inp[r * 10] == 999)
        // input i + 1 is target i: each target is predicted from the tokens before it in the window
        for i in 0..<9 where tgt[r * 10 + i] >= 0 { #expect(inp[r * 10 + i + 1] == tgt[r * 10 + i]) }
    }
    let targets = tgt.filter { $0 >= 0 }.sorted()
    #expect(targets == (0..<100).map(Int32.init).filter { $0 != 37 })
}

@Test func corpusErrorsNameWhatWasExpected() throws {
    var d = DataConfig()
    d.train = ["/no/such/corpus"]
    #expect(throws: DataError.pathNotFound("/no/such/corpus")) { try TokenCorpus.load(d, seed: 1) }
    let empty = FileManager.default.temporaryDirectory.appendingPathComponent("distill-empty-\(getpid())")
    try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: empty) }
    d.train = [empty.path]
    #expect(throws: DataError.noFiles(paths: [empty.path])) { try TokenCorpus.load(d, seed: 1) }
    #expect(throws: DataError.tooSmall(split: "train", tokens: 5, needed: 65)) {
        try WindowSampler(stream: [1, 2, 3, 4, 5], seqLen: 64, seed: 1)
    }
    // a corpus round-trips through the byte tokenizer, and the split keeps every token
    let c = TokenCorpus(tokens: ByteTokenizer().encode(String(repeating: "héllo wörld\n", count: 3000)), valFraction: 0.2, seed: 4)
    #expect(c.train.count + c.validation.count == 14 * 3000)  // é and ö are two bytes each
    #expect(!c.validation.isEmpty)
    #expect(ByteTokenizer().decode(ByteTokenizer().encode("héllo ✓")) == "héllo ✓")
}

@Test func preparedShardsTrainWithTheirLossMask() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("distill-shards-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let lines = (0..<300).map { "{\"prompt\": \"question \($0)?\", \"response\": \"answer number \($0).\"}" }
    try lines.joined(separator: "\n").write(to: dir.appendingPathComponent("qa.jsonl"), atomically: true, encoding: .utf8)
    var o = PrepareOptions(inputs: [dir.appendingPathComponent("qa.jsonl").path], output: dir.appendingPathComponent("out").path)
    o.valFraction = 0.1
    let summary = try prepareCorpus(o, tokenizer: .bytes)
    #expect(summary.documents == 300)
    let corpus = try TokenCorpus.load({ var d = DataConfig(); d.train = [o.output]; return d }(), seed: 1)
    #expect(corpus.train.count == summary.trainTokens && corpus.trainMask != nil)
    // masked (prompt) positions never become targets
    let s = try WindowSampler(stream: corpus.train, mask: corpus.trainMask, seqLen: 32, seed: 1)
    var inp = [Int32](repeating: 0, count: 4 * 32), tgt = inp
    inp.withUnsafeMutableBufferPointer { i in tgt.withUnsafeMutableBufferPointer { t in s.fill(inputs: i.baseAddress!, targets: t.baseAddress!, first: 0, count: 4) } }
    for r in 0..<4 {
        let w = s.windowStart(sample: r)
        for i in 0..<32 { #expect((tgt[r * 32 + i] == -1) == (corpus.trainMask![w + 1 + i] == 0)) }
    }
    #expect(tgt.contains(-1) && tgt.contains { $0 >= 0 })
    var c = try tinyConfig()
    c.data.train = [o.output]
    c.train.seqLen = 32
    c.train.steps = 3
    let stats = try Trainer(config: c, corpus: corpus).run()
    #expect(stats.allSatisfy { $0.tokens < c.train.microBatch * c.train.gradAccum * 32 })  // prompts excluded from the count
    c.model.vocabSize = 128
    #expect(throws: (any Error).self) { try Trainer(config: c, corpus: corpus) }
}

@Test func distillationFromATeacher() throws {
    var c = try tinyConfig()
    c.train.steps = 3
    c.teacher = TeacherConfig()
    c.teacher!.path = "in-memory"
    c.distill.kdRatio = 1
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    // self-distillation from a copy of the initial student: the divergence starts at exactly 0
    let probe = try Trainer(config: c, corpus: corpus)
    let teacher = Transformer(config: c.model, needsGrad: false)
    teacher.params.base.update(from: probe.model.params.base, count: probe.model.layout.count)
    let selfKD = try Trainer(config: c, corpus: corpus, teacher: teacher)
    let first = try selfKD.trainStep()
    #expect(first.kd < 1e-6 && first.gradNorm < 1e-4, "kd \(first.kd), grad norm \(first.gradNorm)")
    // a different teacher: every objective trains and reports a positive divergence
    let other = Transformer(config: c.model, needsGrad: false)
    other.initialize(seed: 99)
    c.train.steps = 2
    c.train.gradAccum = 1
    for objective in Objective.allCases {
        c.distill.objective = objective
        c.distill.kdRatio = 0.5
        let tr = try Trainer(config: c, corpus: corpus, teacher: other)
        let stats = try tr.run()
        #expect(stats.allSatisfy { $0.kd > 0 && $0.loss.isFinite }, "\(objective)")
        #expect(abs(stats[0].loss - (0.5 * stats[0].ce + 0.5 * stats[0].kd)) < 1e-9)
    }
    // a teacher with another vocabulary is refused before training, naming both sizes
    var bigger = c.model
    bigger.vocabSize = 512
    do {
        _ = try Trainer(config: c, corpus: corpus, teacher: Transformer(config: bigger, needsGrad: false))
        Issue.record("a vocabulary mismatch was accepted")
    } catch {
        #expect("\(error)".contains("expected 256 tokens") && "\(error)".contains("found 512 tokens"), "\(error)")
    }
}

@Test func resumeRefusesAnotherTeacherUnlessAllowed() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("distill-teach-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let a = dir.appendingPathComponent("a.bin"), b = dir.appendingPathComponent("b.bin")
    try Data("teacher a".utf8).write(to: a)
    try Data("teacher b".utf8).write(to: b)
    var c = try tinyConfig()
    c.train.steps = 2
    c.checkpoint.dir = dir.appendingPathComponent("ck").path
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let first = try Trainer(config: c, corpus: corpus, teacherManifest: [try TeacherManifestEntry(path: a.path)])
    try first.run(checkpoints: true)
    let ckpt = dir.appendingPathComponent("ck/step_00000002").path
    let second = try Trainer(config: c, corpus: corpus, teacherManifest: [try TeacherManifestEntry(path: b.path)])
    #expect(throws: CheckpointError.self) { try second.resume(from: ckpt) }
    second.checkpointing.allowTeacherChange = true
    try second.resume(from: ckpt)
    #expect(second.step == 2)
}
