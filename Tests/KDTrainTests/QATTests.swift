// QAT in the trainer: the model computes with exactly the GGUF round trip of its full-precision master weights,
// gradients reach the masters through the straight-through masks, nothing quantizes before the start step, and a
// QAT run resumes bitwise (checkpoints hold the masters).
import Foundation
import KDConfig
import KDCore
import KDData
import KDModel
import KDQuant
@testable import KDTrain
import Testing

func qatConfig(_ scheme: String) throws -> RunConfig {
    var c = try tinyConfig()
    c.model.ffnDim = 192  // blocks of 32
    c.train.steps = 4
    c.train.gradAccum = 1
    c.qat.scheme = try #require(QATScheme(rawValue: scheme))
    return c
}

@Test(arguments: ["q8_0", "q4_0", "q4_1", "int4_channel"])
func qatComputesWithTheQuantizedMasterWeights(scheme: String) throws {
    var c = try qatConfig(scheme)
    c.qat.startStep = 2
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let tr = try Trainer(config: c, corpus: corpus)
    let n = tr.model.layout.count
    func params() -> [Float] { Array(UnsafeBufferPointer(start: tr.model.params.base, count: n)) }
    func masters() -> [Float] { Array(UnsafeBufferPointer(start: tr.qat!.masters.base, count: n)) }
    // before the start step the model runs on the masters themselves
    _ = try tr.trainStep()
    #expect(params() == masters() && !(tr.qat?.active(step: tr.step) ?? false))
    _ = try tr.trainStep()
    #expect(tr.qat?.active(step: tr.step) ?? false)
    let m = masters(), p = params()
    #expect(m != p)
    let fq = FakeQuantScheme(rawValue: scheme)!
    for e in tr.model.layout.entries {
        let slice = Array(m[e.offset..<(e.offset + e.count)])
        if tr.model.quantizedEntries(embeddings: false).contains(e) {
            var want = [Float](repeating: 0, count: e.count)
            want.withUnsafeMutableBufferPointer { fakeQuantize(fq, src: slice, rows: e.shape[0], c: e.shape[1], out: $0.baseAddress!, mask: nil) }
            #expect(Array(p[e.offset..<(e.offset + e.count)]) == want, "\(e.name)")
            if let t = fq.ggmlType {
                // … which is what the GGUF file of that type will hold
                var bytes = [UInt8](repeating: 0, count: t.byteCount(elements: e.count)), back = [Float](repeating: 0, count: e.count)
                bytes.withUnsafeMutableBytes { b in
                    quantize(t, src: slice, count: e.count, out: b.baseAddress!)
                    back.withUnsafeMutableBufferPointer { dequantize(t, src: b.baseAddress!, out: $0.baseAddress!, count: e.count) }
                }
                #expect(back == want)
            }
        } else {
            #expect(Array(p[e.offset..<(e.offset + e.count)]) == slice, "\(e.name) stays full precision")
        }
    }
}

@Test func qatGradientsReachTheMastersThroughTheStraightThroughMask() throws {
    let c = try qatConfig("q4_0")
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let tr = try Trainer(config: c, corpus: corpus)
    _ = try tr.trainStep()
    // some Q4_0 weights sit past +7·|d| on the side opposite their block's largest value: those get no gradient
    let mask = Array(UnsafeBufferPointer(start: tr.qat!.mask.base, count: tr.model.layout.count))
    let zeros = mask.filter { $0 == 0 }.count
    #expect(zeros > 0 && zeros < mask.count / 10)
    // the next step's gradient is zero exactly there
    _ = try tr.trainStep()
    let g = tr.model.grads!.base
    #expect((0..<mask.count).allSatisfy { mask[$0] != 0 || g[$0] == 0 })
}

@Test func qatRunResumesBitwise() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("distill-qat-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: dir) }
    var c = try qatConfig("q4_1")
    c.qat.activations = .int8
    c.checkpoint.dir = dir.path
    c.checkpoint.every = 2
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let full = try Trainer(config: c, corpus: corpus)
    let a = try full.run(checkpoints: true)
    #expect(full.model.quantizeActivations)
    let resumed = try Trainer(config: c, corpus: corpus)
    try resumed.resume(from: dir.appendingPathComponent("step_00000002").path)
    let b = try resumed.run()
    #expect(b.map(\.loss) == a.suffix(2).map(\.loss))
    #expect(memcmp(full.qat!.masters.base, resumed.qat!.masters.base, full.model.layout.count * 4) == 0)
    // activation quantization changes what the model computes
    var plain = c
    plain.qat.activations = .none
    let p = try Trainer(config: plain, corpus: corpus).run()
    #expect(p[0].loss != a[0].loss)
}

/// The model's quantized tensors equal fake quantization of the masters with the trainer's explicit scales.
func expectComputesWithTheScales(_ tr: Trainer) throws {
    let qs = try #require(tr.qat!.scales)
    for (i, e) in qs.entries.enumerated() {
        var want = [Float](repeating: 0, count: e.count)
        fakeQuantizeScaled(qs.scheme, src: tr.qat!.masters.base + e.offset, rows: e.shape[0], c: e.shape[1], scales: qs.values.base + qs.offsets[i],
                           out: &want, mask: nil)
        #expect(memcmp(want, tr.model.params.base + e.offset, e.count * 4) == 0, "\(e.name)")
    }
}

/// The absmax scales of the trainer's current masters.
func absmaxOfMasters(_ tr: Trainer) -> [Float] {
    let qs = tr.qat!.scales!
    var out = [Float](repeating: 0, count: qs.values.count)
    for (i, e) in qs.entries.enumerated() {
        out.withUnsafeMutableBufferPointer { absmaxScales(qs.scheme, src: tr.qat!.masters.base + e.offset, rows: e.shape[0], c: e.shape[1], out: $0.baseAddress! + qs.offsets[i]) }
    }
    return out
}

@Test(arguments: ["q8_0", "q4_0", "int8_channel"])
func learnedScalesStartAtAbsmaxThenTrain(scheme: String) throws {
    var c = try qatConfig(scheme)
    c.qat.scales = .learned
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let tr = try Trainer(config: c, corpus: corpus)
    var absmax = c
    absmax.qat.scales = .absmax
    let ref = try Trainer(config: absmax, corpus: corpus)
    // before any step the learned scales are the absmax ones: the model is bit for bit the absmax QAT model
    #expect(memcmp(tr.model.params.base, ref.model.params.base, tr.model.layout.count * 4) == 0)
    let start = Array(UnsafeBufferPointer(start: tr.qat!.scales!.values.base, count: tr.qat!.scales!.values.count))
    let history = try tr.run()
    let now = Array(UnsafeBufferPointer(start: tr.qat!.scales!.values.base, count: tr.qat!.scales!.values.count))
    // the scales moved (LSQ), each kept its sign, and the model computes with them
    #expect(zip(start, now).filter { $0 != $1 }.count > now.count / 2)
    #expect(zip(start, now).allSatisfy { ($0 < 0) == ($1 < 0) })
    try expectComputesWithTheScales(tr)
    #expect(history.allSatisfy { $0.loss.isFinite })
}

@Test func frozenRangesKeepTheScalesOfTheFreezeStep() throws {
    var c = try qatConfig("q4_0")
    c.qat.freezeStep = 2
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let tr = try Trainer(config: c, corpus: corpus)
    _ = try tr.trainStep()
    #expect(!tr.qat!.scalesReady)  // before the freeze step: absmax every step
    _ = try tr.trainStep()
    let atFreeze = absmaxOfMasters(tr)
    #expect(tr.qat!.scalesReady)
    _ = try tr.trainStep()
    _ = try tr.trainStep()
    let scales = Array(UnsafeBufferPointer(start: tr.qat!.scales!.values.base, count: tr.qat!.scales!.values.count))
    #expect(scales == atFreeze)
    #expect(absmaxOfMasters(tr) != atFreeze)  // the weights moved on, their ranges did not
    try expectComputesWithTheScales(tr)
}

@Test func learnedScalesResumeBitwise() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("distill-lsq-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: dir) }
    var c = try qatConfig("q4_0")
    c.qat.scales = .learned
    c.checkpoint.dir = dir.path
    c.checkpoint.every = 2
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let full = try Trainer(config: c, corpus: corpus)
    let a = try full.run(checkpoints: true)
    let resumed = try Trainer(config: c, corpus: corpus)
    try resumed.resume(from: dir.appendingPathComponent("step_00000002").path)
    let b = try resumed.run()
    #expect(b.map(\.loss) == a.suffix(2).map(\.loss))
    let n = full.qat!.scales!.values.count
    #expect(memcmp(full.qat!.scales!.values.base, resumed.qat!.scales!.values.base, n * 4) == 0)
    #expect(memcmp(full.qat!.scaleM!.base, resumed.qat!.scaleM!.base, n * 4) == 0)
}

/// qat.importance: activations — the importance matrix is the mean square of each matrix's input channels on the
/// student's first training windows (block 0's q, k and v read the normed embeddings: recomputed here in f64 from the
/// weights), the model computes with IQ4_NL (Q4_0, Q4_K: on these 64-wide rows its fallback Q5_0) weighed by it (and
/// not as without it), and the run resumes bitwise with the checkpoint's importance file.
@Test(arguments: ["iq4_nl", "q4_0", "q4_k"])
func importanceWeighsTheScaleSearchByTheStudentsOwnActivations(scheme: String) throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("distill-qat-importance-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: dir) }
    var c = try qatConfig(scheme)
    let fq = try #require(FakeQuantScheme(rawValue: scheme))
    c.qat.embeddings = true
    c.qat.importance = .activations
    c.qat.importanceWindows = 6  // two micro-batches of 4: 8 windows of 64
    c.checkpoint.dir = dir.path
    c.checkpoint.every = 2
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let tr = try Trainer(config: c, corpus: corpus)
    let imp = try #require(tr.qat?.importance), m = tr.model, P = tr.qat!.masters.base, dim = m.config.dim
    #expect(tr.qat!.importanceTokens == 8 * 64)
    // block 0's inputs: RMSNorm(embedding) of every token of the first 8 windows
    let n = 8 * 64
    var inputs = [Int32](repeating: 0, count: n), targets = inputs
    tr.batches.sampler.fillSequential(inputs: &inputs, targets: &targets, first: 0, count: 8)
    var want = [Double](repeating: 0, count: dim)
    let L = m.layout.blocks[0]
    for tok in inputs {
        let e = P + m.layout.embedding + Int(tok) * dim
        let ms = (0..<dim).reduce(0.0) { $0 + Double(e[$1]) * Double(e[$1]) } / Double(dim)
        let r = 1 / (ms + Double(m.config.rmsEps)).squareRoot()
        for j in 0..<dim { let v = Double(e[j]) * r * Double(P[L.ln1 + j]); want[j] += v * v / Double(n) }
    }
    for o in [L.wq, L.wk, L.wv] {
        let got = try #require(imp.weights(forOffset: o))
        let worst = (0..<dim).map { abs(Double(got[$0]) - want[$0]) / want[$0] }.max()!
        #expect(worst < 1e-4, "relative error \(worst)")
    }
    #expect(imp.weights(forOffset: m.layout.lmHead) != nil && imp.entries.count == m.quantizedEntries(embeddings: true).count)
    // the model computes with the format weighed by the importance, which is not the format without it
    var differ = 0
    for e in imp.entries {
        var weighed = [Float](repeating: 0, count: e.count), plain = weighed
        weighed.withUnsafeMutableBufferPointer {
            fakeQuantize(fq, src: P + e.offset, rows: e.shape[0], c: e.shape[1], out: $0.baseAddress!, mask: nil, importance: imp.row(forOffset: e.offset))
        }
        plain.withUnsafeMutableBufferPointer { fakeQuantize(fq, src: P + e.offset, rows: e.shape[0], c: e.shape[1], out: $0.baseAddress!, mask: nil) }
        #expect(Array(UnsafeBufferPointer(start: m.params.base + e.offset, count: e.count)) == weighed, "\(e.name)")
        if weighed != plain { differ += 1 }
    }
    #expect(differ == imp.entries.count, "\(differ) of \(imp.entries.count) matrices differ from unweighed \(scheme)")
    // resume: the checkpoint carries the importance file and the run continues bitwise
    let a = try tr.run(checkpoints: true)
    let ckpt = dir.appendingPathComponent("step_00000002")
    #expect(FileManager.default.fileExists(atPath: ckpt.appendingPathComponent("qat_importance.safetensors").path))
    let resumed = try Trainer(config: c, corpus: corpus)
    try resumed.resume(from: ckpt.path)
    let b = try resumed.run()
    #expect(b.map(\.loss) == a.suffix(2).map(\.loss))
    #expect(memcmp(tr.qat!.masters.base, resumed.qat!.masters.base, m.layout.count * 4) == 0)
    // without the importance the same run computes otherwise
    var plain = c
    plain.qat.importance = .none
    plain.checkpoint.dir = dir.appendingPathComponent("plain").path
    #expect(try Trainer(config: plain, corpus: corpus).run()[0].loss != a[0].loss)
}
