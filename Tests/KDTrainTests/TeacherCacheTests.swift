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
                           k: 12, temperature: 1.5, seqLen: c.train.seqLen, batch: 3, comm: LocalCommunicator(), compact: false)
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

/// The compact encoding (4-byte entries: a 17-bit id, a 15-bit log-probability level) holds the wide cache's rows: the
/// same ids, log-probabilities within half a level (32 / 32767 / 2 nats) down to −32, tails exact; half the bytes.
@Test func compactCacheRowsRoundTripWithinTheirBound() throws {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("distill-compact-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: root) }
    let c = try tinyConfig()
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let teacher = randomTeacher(c, seed: 5)
    let k = 20
    for (name, compact) in [("wide", false), ("compact", true)] {
        try TeacherCache.write(dir: root.appendingPathComponent(name).path, corpus: corpus, teachers: [teacher], weights: [1], combine: .mixture,
                               manifest: [], k: k, temperature: 2, seqLen: c.train.seqLen, batch: 3, comm: LocalCommunicator(), compact: compact)
    }
    let wide = try TeacherCache(dir: root.appendingPathComponent("wide").path), compact = try TeacherCache(dir: root.appendingPathComponent("compact").path)
    #expect(!wide.info.isCompact && compact.info.isCompact && compact.info.format == 2 && compact.info.signal == "topk")
    let size = { (d: String) in try FileManager.default.attributesOfItem(atPath: root.appendingPathComponent("\(d)/train.topk").path)[.size] as! Int }
    #expect(try size("compact") * (8 * k + 4) == size("wide") * (4 * k + 4))
    let windows = Array(0..<wide.info.trainWindows), n = windows.count * c.train.seqLen
    let a = TopKBuffer(n: n, k: k), b = TopKBuffer(n: n, k: k)
    try wide.fill(a, windows: windows, validationSplit: false)
    try compact.fill(b, windows: windows, validationSplit: false)
    var worst: Float = 0
    for e in 0..<(n * k) {
        #expect(a.ids[e] == b.ids[e])
        worst = max(worst, abs(max(a.logProbs[e], -32) - b.logProbs[e]))
    }
    #expect(worst <= 32 / 32767 / 2 + 4e-6 && worst > 0, "max |Δ log p| \(worst)")  // half a level, and Float rounding at |log p| ≤ 32
    #expect((0..<n).allSatisfy { a.logTail[$0].bitPattern == b.logTail[$0].bitPattern })
}

/// A sampled signal (N tokens drawn from p, kept as p̂ = counts / N) gives forward KL's bucket gradient q − p̂, whose mean
/// over the draws is the dense gradient q − p: checked over 20,000 draws of 8 tokens on a 12-token vocabulary, every
/// component within 4.5 standard errors; and the mean gradient of the top-8 rows (biased) is not.
@Test func theSampledSignalsExpectedGradientIsTheDenseForwardKLGradient() throws {
    let v = 12, n = 8, draws = 20_000, T: Float = 1
    let rng = CounterRNG(seed: 3, purpose: .test)
    var teacher = (0..<v).map { 1.5 * rng.normal(UInt64($0)) }, student = (0..<v).map { rng.normal(UInt64(100 + $0)) }
    // the teacher's log-probabilities
    let mx = teacher.max()!, lse = mx + log(teacher.reduce(0) { $0 + exp($1 - mx) })
    teacher = teacher.map { $0 - lse }
    var dense = [Float](repeating: 0, count: v), scratch = [Float](repeating: 0, count: 4 * v + 4 * (n + 1))
    _ = divergenceRow(.forwardKL, teacherLogProbs: teacher, studentLogits: student, v: v, temperature: T, grad: &dense, scale: 1, scratch: &scratch)
    var sum = [Double](repeating: 0, count: v), sq = [Double](repeating: 0, count: v), g = [Float](repeating: 0, count: v)
    var ids = [Int32](repeating: 0, count: n), lp = [Float](repeating: 0, count: n), u = [Double](repeating: 0, count: n)
    for d in 0..<draws {
        SampledSignal.uniforms(seed: 7, key: UInt64(d), n: n, into: &u)
        SampledSignal.draw(lp: teacher, v: v, uniforms: &u, n: n, ids: &ids, logProbs: &lp)
        #expect(Set(ids).count == n)
        _ = divergenceRowTopK(.forwardKL, ids: ids, logProbs: lp, logTail: -.infinity, k: n, studentLogits: student, v: v, temperature: T,
                              grad: &g, scale: 1, scratch: &scratch)
        for j in 0..<v { sum[j] += Double(g[j]); sq[j] += Double(g[j]) * Double(g[j]) }
    }
    for j in 0..<v {
        let mean = sum[j] / Double(draws), se = ((sq[j] / Double(draws) - mean * mean) / Double(draws)).squareRoot()
        #expect(abs(mean - Double(dense[j])) <= 4.5 * se + 1e-7, "token \(j): mean \(mean), dense \(dense[j]), standard error \(se)")
    }
    // not vacuous: the top-8 buckets' gradient differs from the dense one by far more
    var top = [Float](repeating: 0, count: v)
    let tail = TopK.select(lp: teacher, v: v, k: n, ids: &ids, logProbs: &lp)
    _ = divergenceRowTopK(.forwardKL, ids: ids, logProbs: lp, logTail: tail, k: n, studentLogits: student, v: v, temperature: T,
                          grad: &top, scale: 1, scratch: &scratch)
    #expect(zip(top, dense).map { abs($0 - $1) }.max()! > 1e-3)
}

/// A sampled cache trains forward KL and refuses an objective it has no unbiased estimate for, before training.
@Test func aSampledCacheTrainsForwardKLAndRefusesReverseKL() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("distill-sampled-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: dir) }
    var c = try tinyConfig()
    c.train.steps = 3
    c.train.evalBatches = 1
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let teacher = randomTeacher(c, seed: 12)
    try TeacherCache.write(dir: dir.path, corpus: corpus, teachers: [teacher], weights: [1], combine: .mixture, manifest: [],
                           k: 16, temperature: 1, seqLen: c.train.seqLen, batch: 3, comm: LocalCommunicator(), sampledSeed: 11)
    let cache = try TeacherCache(dir: dir.path)
    #expect(cache.info.isSampled && cache.info.isCompact && cache.info.samplingSeed == 11)
    c.teacher = TeacherConfig()
    c.teacher!.cache = dir.path
    let stats = try Trainer(config: c, corpus: corpus, teacherCache: cache).run()
    #expect(stats.count == 3 && stats.allSatisfy { $0.loss.isFinite && $0.kd.isFinite })
    c.distill.objective = .rkl
    do {
        _ = try Trainer(config: c, corpus: corpus, teacherCache: cache)
        Issue.record("a sampled cache was accepted for reverse KL")
    } catch {
        #expect("\(error)".contains("signal sampled: expected distill.objective fkl") && "\(error)".contains("found rkl"), "\(error)")
    }
}
