// The offline teacher cache: training from the cached top-k rows equals training with the live teacher and the
// top-k exchange, and a cache made for another window length, temperature or corpus is refused naming both values.
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDData
import KDLoss
import KDModel
@testable import KDTrain
import Testing

@Test func trainingFromTheCacheEqualsTheLiveTopKTeacher() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("distill-cache-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: dir) }
    var c = try tinyConfig()
    c.train.steps = 3
    c.train.evalBatches = 1
    c.teacher = TeacherConfig()
    c.teacher!.path = "in-memory"
    c.teacher!.exchange = .topk
    c.teacher!.topK = 12
    c.distill.objective = .skewFKL
    c.distill.temperature = 1.5
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let teacher = randomTeacher(c, seed: 12)
    try TeacherCache.write(dir: dir.path, corpus: corpus, teachers: [teacher], weights: [1], combine: .mixture, manifest: [],
                           k: 12, temperature: 1.5, seqLen: c.train.seqLen, batch: 3, comm: LocalCommunicator())
    let cache = try TeacherCache(dir: dir.path)
    #expect(cache.info.trainWindows == (corpus.train.count - 1) / c.train.seqLen && cache.info.validationWindows > 0)
    #expect(cache.info.precision == "f32")
    let live = try Trainer(config: c, corpus: corpus, teacher: teacher)
    let liveStats = try live.run()
    var cached = c
    cached.teacher = TeacherConfig()
    cached.teacher!.cache = dir.path
    let offline = try Trainer(config: cached, corpus: corpus, teacherCache: cache)
    #expect(offline.teachers.isEmpty && !(offline.placement is SelfTeacherPlacement) && offline.hasTeacher)
    let offlineStats = try offline.run()
    // the same rows up to the teacher's forward being batched over other windows (summation order only)
    for (a, b) in zip(liveStats, offlineStats) { #expect(abs(a.loss - b.loss) <= 1e-6 * abs(a.loss) && abs(a.kd - b.kd) <= 1e-4 * a.kd, "\(a.kd) vs \(b.kd)") }
    var worst: Float = 0
    for i in 0..<live.model.layout.count { worst = max(worst, abs(live.model.params.base[i] - offline.model.params.base[i])) }
    #expect(worst < 1e-5, "max |Δθ| \(worst)")
    // validation windows come from the cache too
    let (lv, ov) = (try live.evaluate()!, try offline.evaluate()!)
    #expect(abs(lv.kdMean - ov.kdMean) < 1e-4 * lv.kdMean)
    // a cache for other settings is refused, naming what it holds and what the run needs
    var other = cached
    other.distill.temperature = 1
    do {
        _ = try Trainer(config: other, corpus: corpus, teacherCache: cache)
        Issue.record("a cache with another temperature was accepted")
    } catch {
        #expect("\(error)".contains("temperature") && "\(error)".contains("found 1.5"), "\(error)")
    }
    let shifted = TokenCorpus(tokens: Array(corpus.train.dropFirst()) + corpus.validation, valFraction: 0.1, seed: c.train.seed)
    #expect(throws: (any Error).self) { try Trainer(config: cached, corpus: shifted, teacherCache: cache) }
}
