// The whole model: against an independent Double-precision reference, a gradient check at sampled coordinates,
// overfitting one batch, KV-cache decoding against the full forward, and sampling.
import CKDKernels
import Foundation
import KDConfig
import KDCore
import KDLoss
import KDModel
import KDOps
import KDTestSupport
import Testing

func makeModel(_ m: ModelConfig, needsGrad: Bool = true, seed: UInt64 = 7) -> Transformer {
    let model = Transformer(config: m, needsGrad: needsGrad, lmHeadChunk: 5)  // odd chunk: exercises partial chunks
    model.initialize(seed: seed)
    // non-unit norm weights so a swapped norm weight would show
    for e in model.layout.entries where !e.isMatrix {
        for i in 0..<e.count { model.params.base[e.offset + i] = 1 + 0.1 * CounterRNG(seed: 3, purpose: .test).normal(UInt64(e.offset + i)) }
    }
    return model
}

func tokens(_ n: Int, vocab: Int, seed: UInt64) -> [Int32] {
    let rng = CounterRNG(seed: seed, purpose: .test)
    return (0..<n).map { Int32(rng.index(vocab, UInt64($0))) }
}

/// Straight-from-the-paper Llama forward in Double, written independently of KDOps: returns logits [t, v].
func referenceLogits(_ model: Transformer, _ toks: [Int32]) -> [[Double]] {
    let m = model.config, L = model.layout, P = model.params.base
    let c = m.dim, hs = m.headSize, qd = m.qDim, t = toks.count
    func w(_ off: Int, _ count: Int) -> [Double] { (0..<count).map { Double(P[off + $0]) } }
    func linear(_ x: [Double], _ off: Int, _ oc: Int, _ ic: Int) -> [Double] {
        (0..<oc).map { o in (0..<ic).reduce(0.0) { $0 + x[$1] * Double(P[off + o * ic + $1]) } }
    }
    func norm(_ x: [Double], _ off: Int) -> [Double] {
        let r = 1 / ((x.reduce(0) { $0 + $1 * $1 } / Double(c)) + Double(m.rmsEps)).squareRoot()
        return (0..<c).map { x[$0] * r * Double(P[off + $0]) }
    }
    func rope(_ x: [Double], heads: Int, pos: Int) -> [Double] {
        var y = x
        for h in 0..<heads {
            for i in 0..<hs / 2 {
                let a = m.ropeStyle == .adjacent ? h * hs + 2 * i : h * hs + i
                let b = m.ropeStyle == .adjacent ? a + 1 : a + hs / 2
                let ang = Double(pos) * pow(m.ropeTheta, -2 * Double(i) / Double(hs))
                y[a] = x[a] * cos(ang) - x[b] * sin(ang)
                y[b] = x[a] * sin(ang) + x[b] * cos(ang)
            }
        }
        return y
    }
    var xs = toks.map { w(L.embedding + Int($0) * c, c) }
    for l in 0..<m.layers {
        let B = L.blocks[l]
        let h1 = xs.map { norm($0, B.ln1) }
        let q = h1.enumerated().map { rope(linear($0.element, B.wq, qd, c), heads: m.heads, pos: $0.offset) }
        let k = h1.enumerated().map { rope(linear($0.element, B.wk, m.kvDim, c), heads: m.kvHeads, pos: $0.offset) }
        let v = h1.map { linear($0, B.wv, m.kvDim, c) }
        for i in 0..<t {
            var att = [Double](repeating: 0, count: qd)
            for h in 0..<m.heads {
                let kh = h / (m.heads / m.kvHeads)
                let s = (0...i).map { j in (0..<hs).reduce(0.0) { $0 + q[i][h * hs + $1] * k[j][kh * hs + $1] } / Double(hs).squareRoot() }
                let mx = s.max()!, e = s.map { exp($0 - mx) }, z = e.reduce(0, +)
                for d in 0..<hs { att[h * hs + d] = (0...i).reduce(0.0) { $0 + e[$1] / z * v[$1][kh * hs + d] } }
            }
            let o = linear(att, B.wo, c, qd)
            xs[i] = (0..<c).map { xs[i][$0] + o[$0] }
        }
        for i in 0..<t {
            let h2 = norm(xs[i], B.ln2)
            let g = linear(h2, B.wgate, m.ffnDim, c), u = linear(h2, B.wup, m.ffnDim, c)
            let a = (0..<m.ffnDim).map { g[$0] / (1 + exp(-g[$0])) * u[$0] }
            let d = linear(a, B.wdown, c, m.ffnDim)
            xs[i] = (0..<c).map { xs[i][$0] + d[$0] }
        }
    }
    return xs.map { linear(norm($0, L.finalNorm), L.lmHead, m.vocabSize, c) }
}

@Test(arguments: RopeStyle.allCases, [true, false])
func forwardMatchesIndependentDoubleReference(ropeStyle: RopeStyle, tied: Bool) {
    forwardMatchesReference(tinyModelConfig(tied: tied, ropeStyle: ropeStyle))
}

/// A head size other than dim / heads (a head-pruned student: 4 heads of 6 on a residual of 32).
func headDimConfig() -> ModelConfig {
    var m = tinyModelConfig(tied: false)
    m.headDim = 6
    return m
}

@Test func forwardWithAHeadSizeOtherThanDimOverHeadsMatchesTheReference() {
    #expect(headDimConfig().qDim == 24)
    forwardMatchesReference(headDimConfig())
}

func forwardMatchesReference(_ m: ModelConfig) {
    let model = makeModel(m)
    let t = 9, toks = tokens(t, vocab: m.vocabSize, seed: 1)
    toks.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: 1, t: t) }
    var logits = [Float](repeating: 0, count: t * m.vocabSize)
    logits.withUnsafeMutableBufferPointer { model.logits(into: $0.baseAddress!) }
    let ref = referenceLogits(model, toks)
    var worst = 0.0
    for i in 0..<t { for j in 0..<m.vocabSize { worst = max(worst, abs(Double(logits[i * m.vocabSize + j]) - ref[i][j])) } }
    #expect(worst < 2e-4, "max |logit − reference| = \(worst)")
}

@Test(arguments: [0, 6])
func wholeModelGradientMatchesFiniteDifferencesAtSampledCoordinates(headDim: Int) {
    var m = tinyModelConfig(tied: false)
    m.headDim = headDim
    _ = checkWholeModelGradient(m, t: 6)
}

/// Backward of b = 2 sequences of t tokens (one target masked) against central differences at four sampled
/// coordinates of every tensor; returns the model with its gradient.
func checkWholeModelGradient(_ m: ModelConfig, t: Int) -> Transformer {
    let model = makeModel(m)
    let b = 2, n = b * t
    let toks = tokens(n, vocab: m.vocabSize, seed: 2)
    var targets = tokens(n, vocab: m.vocabSize, seed: 3)
    targets[4] = -1  // an unmasked loss row must not leak gradient
    func loss() -> Double {
        toks.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: b, t: t) }
        return targets.withUnsafeBufferPointer { model.loss(targets: $0.baseAddress!) }.sum
    }
    model.grads!.zero()
    toks.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: b, t: t) }
    let ls = targets.withUnsafeBufferPointer { model.backward(targets: $0.baseAddress!, lossScale: 1) }
    #expect(ls.count == n - 1)
    #expect(abs(ls.sum - loss()) < 1e-4)
    let coords = sampledCoordinates(model, toks, seed: 11)
    let numeric = centralDifferences(model, at: coords, loss: loss), analytic = coords.map { model.grads!.base[$0] }
    let err = maxRelError(analytic, numeric)
    #expect(err < 1e-2, "\(m.family): max error relative to the largest gradient: \(err)")
    #expect(numeric.contains { abs($0) > 1e-2 })  // the check is not vacuous
    return model
}

/// Four parameter indices per tensor; embedding rows of tokens that occur (else the gradient is 0).
func sampledCoordinates(_ model: Transformer, _ toks: [Int32], seed: UInt64) -> [Int] {
    let rng = CounterRNG(seed: seed, purpose: .test), dim = model.config.dim
    return model.layout.entries.enumerated().flatMap { ti, e in
        (0..<4).map { s in
            e.name == "model.embed_tokens.weight" ? e.offset + Int(toks[s]) * dim + rng.index(dim, UInt64(ti), UInt64(s))
                : e.offset + rng.index(e.count, UInt64(ti), UInt64(s))
        }
    }
}

/// Central differences of `loss` at each parameter index (step 1e-2).
func centralDifferences(_ model: Transformer, at coords: [Int], loss: () -> Double) -> [Float] {
    let eps: Float = 1e-2
    return coords.map { i in
        let orig = model.params.base[i]
        model.params.base[i] = orig + eps
        let lp = loss()
        model.params.base[i] = orig - eps
        let lm = loss()
        model.params.base[i] = orig
        return Float((lp - lm) / Double(2 * eps))
    }
}

@Test func tinyModelOverfitsOneBatch() {
    let m = tinyModelConfig()
    let model = makeModel(m)
    let b = 2, t = 12, n = b * t
    let toks = tokens(n, vocab: m.vocabSize, seed: 4), targets = tokens(n, vocab: m.vocabSize, seed: 5)
    let mom = Slab(count: model.layout.count), vel = Slab(count: model.layout.count)
    var first = 0.0, last = 0.0
    for step in 1...150 {
        model.grads!.zero()
        toks.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: b, t: t) }
        let ls = targets.withUnsafeBufferPointer { model.backward(targets: $0.baseAddress!, lossScale: 1 / Float(n)) }
        if step == 1 { first = ls.mean }
        last = ls.mean
        adamWUpdate(param: model.params.base, grad: model.grads!.base, m: mom.base, v: vel.base, count: model.layout.count,
                    step: AdamWStep(lr: 1e-2, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, t: step))
    }
    #expect(first > 3)
    #expect(last < 0.05, "loss after 150 steps on one batch: \(last)")
}

@Test func kvCacheDecodingMatchesFullForward() {
    _ = checkKVCacheDecoding(tinyModelConfig(ropeStyle: .adjacent))
}

/// Decodes 4 tokens then 7 one at a time through the KV cache of an inference model: the logits equal the full forward
/// (1e-5), and the training model's full forward equals the inference model's bit for bit. Returns the weights used.
func checkKVCacheDecoding(_ m: ModelConfig) -> (model: Transformer, tokens: [Int32], logits: [Float]) {
    let train = makeModel(m)
    let infer = Transformer(config: m, needsGrad: false)
    infer.params.base.update(from: train.params.base, count: train.layout.count)
    let t = 11, toks = tokens(t, vocab: m.vocabSize, seed: 6), v = m.vocabSize
    toks.withUnsafeBufferPointer { infer.forward(tokens: $0.baseAddress!, b: 1, t: t) }
    var full = [Float](repeating: 0, count: t * v)
    full.withUnsafeMutableBufferPointer { infer.logits(into: $0.baseAddress!) }
    let cache = KVCache(config: m)
    var stepwise = infer.decode(tokens: Array(toks[0..<4]), cache: cache, allRows: true)
    for i in 4..<t { stepwise += infer.decode(tokens: [toks[i]], cache: cache) }
    #expect(cache.length == t)
    #expect(maxRelError(stepwise, full) < 1e-5)
    // the shared-buffer inference model and the training model agree
    toks.withUnsafeBufferPointer { train.forward(tokens: $0.baseAddress!, b: 1, t: t) }
    var trainLogits = [Float](repeating: 0, count: t * v)
    trainLogits.withUnsafeMutableBufferPointer { train.logits(into: $0.baseAddress!) }
    #expect(trainLogits == full)
    return (train, toks, full)
}

@Test func samplerModes() {
    let logits: [Float] = [1, 3, 2, 0.5, 2.9]
    #expect(Sampler.greedy.sample(logits: logits, u: 0.99) == 1)
    #expect(Sampler(temperature: 1, topK: 1).sample(logits: logits, u: 0.99) == 1)
    #expect(Sampler(temperature: 1, topP: 0.01).sample(logits: logits, u: 0.99) == 1)
    let d = Sampler(temperature: 0.7, topK: 3).candidateDistribution(logits: logits)
    #expect(d.map(\.0) == [1, 4, 2])
    #expect(abs(d.reduce(0) { $0 + $1.1 } - 1) < 1e-6)
    // inverse-CDF over an even grid of u reproduces the softmax probabilities
    let full = Sampler(temperature: 1).candidateDistribution(logits: logits)
    var counts = [Int](repeating: 0, count: logits.count)
    let draws = 10_000
    for i in 0..<draws { counts[Int(Sampler(temperature: 1).sample(logits: logits, u: (Float(i) + 0.5) / Float(draws)))] += 1 }
    for (tok, p) in full { #expect(abs(Float(counts[tok]) / Float(draws) - p) < 1e-3) }
    // top-p keeps the smallest prefix reaching p
    let p = Sampler(temperature: 1, topP: 0.6).candidateDistribution(logits: logits)
    #expect(p.count == 2)
}

/// Without top-k / top-p, `Sampler` draws in one pass over the row (no sort) from softmax(logits / T): over an even grid
/// of u each token's share equals its float64 probability and `candidateDistribution`'s, and the in-place entry
/// (synthesize's) draws the array entry's token.
@Test(arguments: [Float(1), 0.6])
func drawingFromLogitsFollowsTheTemperedSoftmax(temperature T: Float) {
    let rng = CounterRNG(seed: 41, purpose: .test), v = 97
    let logits = (0..<v).map { rng.uniform(UInt64($0)) * 6 - 3 }
    let exact = logits.map { Foundation.exp(Double($0) / Double(T)) }, z = exact.reduce(0, +)
    let sampled = Sampler(temperature: T).candidateDistribution(logits: logits)
    var counts = [Int](repeating: 0, count: v)
    let draws = 50_000
    var row = logits, scratch = [Float](repeating: 0, count: v)
    for i in 0..<draws {
        row = logits
        let u = (Float(i) + 0.5) / Float(draws)
        let tok = row.withUnsafeMutableBufferPointer { r in scratch.withUnsafeMutableBufferPointer {
            Sampler(temperature: T).sample(r.baseAddress!, v, u: u, scratch: $0.baseAddress!)
        } }
        if i % 997 == 0 { #expect(Sampler(temperature: T).sample(logits: logits, u: u) == tok) }
        counts[Int(tok)] += 1
    }
    for j in 0..<v { #expect(abs(Double(counts[j]) / Double(draws) - exact[j] / z) < 1e-4, "token \(j)") }
    for (j, p) in sampled { #expect(abs(Double(p) - exact[j] / z) < 1e-5) }
    // u just below 1 takes the last token with any mass, never one past it
    row = logits
    let last = row.withUnsafeMutableBufferPointer { r in scratch.withUnsafeMutableBufferPointer {
        Sampler(temperature: T).sample(r.baseAddress!, v, u: 0.99999994, scratch: $0.baseAddress!)
    } }
    #expect(Int(last) == v - 1)
}

@Test func generationIsDeterministicForASeed() {
    let m = tinyModelConfig()
    let model = makeModel(m, needsGrad: false)
    let s = Sampler(temperature: 0.9, topK: 20, topP: 0.95)
    let a = model.generate(prompt: [1, 2, 3], maxNewTokens: 8, sampler: s, rng: CounterRNG(seed: 5, purpose: .sampling))
    let b = model.generate(prompt: [1, 2, 3], maxNewTokens: 8, sampler: s, rng: CounterRNG(seed: 5, purpose: .sampling))
    #expect(a == b && a.count == 8)
    let g = model.generate(prompt: [1, 2, 3], maxNewTokens: 5, sampler: .greedy, rng: CounterRNG(seed: 1, purpose: .sampling))
    // greedy continuation = argmax of the full forward, token by token
    var seq: [Int32] = [1, 2, 3]
    for _ in 0..<5 {
        let logits = model.decode(tokens: seq, cache: KVCache(config: m))
        seq.append(Int32(logits.indices.max { logits[$0] < logits[$1] }!))
    }
    #expect(Array(seq[3...]) == g)
}

@Test func batchedDecodingMatchesEachSequenceDecodedAlone() {
    let m = tinyModelConfig(ropeStyle: .half)
    let model = makeModel(m)
    let b = 3, prompt = 5, steps = 4, v = m.vocabSize
    let seqs = (0..<b).map { tokens(prompt + steps, vocab: v, seed: 20 + UInt64($0)) }
    let cache = BatchKVCache(config: m, b: b, capacity: prompt + steps)
    var firstTokens = seqs.flatMap { $0[0..<prompt] }
    var batched = [firstTokens.withUnsafeBufferPointer { model.decodeBatch(tokens: $0.baseAddress!, tq: prompt, cache: cache) }]
    for s in 0..<steps - 1 {
        firstTokens = seqs.map { $0[prompt + s] }
        batched.append(firstTokens.withUnsafeBufferPointer { model.decodeBatch(tokens: $0.baseAddress!, tq: 1, cache: cache) })
    }
    for i in 0..<b {
        let single = KVCache(config: m)
        var alone = [model.decode(tokens: Array(seqs[i][0..<prompt]), cache: single)]
        for s in 0..<steps - 1 { alone.append(model.decode(tokens: [seqs[i][prompt + s]], cache: single)) }
        for s in 0..<steps { #expect(maxRelError(Array(batched[s][(i * v)..<((i + 1) * v)]), alone[s]) < 1e-5, "sequence \(i) step \(s)") }
    }
}

@Test func widthPrunedStudentIsTheTeacherWithoutItsDroppedChannels() throws {
    var m = tinyModelConfig(ropeStyle: .half)
    m.ffnDim = 24
    let teacher = makeModel(m, needsGrad: false, seed: 13)
    let t = 9, toks = tokens(2 * t, vocab: m.vocabSize, seed: 14)
    let importance = toks.withUnsafeBufferPointer { teacher.ffnChannelImportance(tokens: $0.baseAddress!, b: 2, t: t) }
    #expect(importance.count == m.layers && importance.allSatisfy { $0.count == 24 && $0.allSatisfy { $0 > 0 } })
    // keep the 16 most active channels of every block (depth: all blocks, reversed order to exercise the mapping)
    let layers = Array((0..<m.layers).reversed())
    let channels = layers.map { l in importance[l].indices.sorted { importance[l][$0] > importance[l][$1] }.prefix(16).sorted() }
    var sm = m
    sm.ffnDim = 16
    let student = Transformer(config: sm, needsGrad: false)
    try student.copyPruned(from: teacher, layers: layers, ffnChannels: channels)
    // the reference: the teacher with its blocks reordered and the dropped channels' down-projection columns zeroed
    let masked = makeModel(m, needsGrad: false, seed: 13)
    for (i, l) in layers.enumerated() {
        for e in teacher.layout.entries where e.name.hasPrefix("model.layers.\(l).") {
            let dst = masked.layout.entries.first { $0.name == e.name.replacingOccurrences(of: "layers.\(l).", with: "layers.\(i).") }!
            (masked.params.base + dst.offset).update(from: teacher.params.base + e.offset, count: e.count)
            if e.name.hasSuffix("down_proj.weight") {
                for r in 0..<e.shape[0] { for j in 0..<24 where !channels[i].contains(j) { masked.params.base[dst.offset + r * 24 + j] = 0 } }
            }
        }
    }
    let one = Array(toks[0..<t])
    #expect(maxRelError(logitsOf(student, one), logitsOf(masked, one)) < 1e-5)
}

@Test func headPrunedStudentIsTheTeacherWithoutItsDroppedHeads() throws {
    let m = tinyModelConfig(ropeStyle: .adjacent)  // 4 query heads of 8 over 2 key/value heads
    let teacher = makeModel(m, needsGrad: false, seed: 15)
    let t = 9, toks = tokens(2 * t, vocab: m.vocabSize, seed: 16)
    let importance = toks.withUnsafeBufferPointer { teacher.attentionHeadImportance(tokens: $0.baseAddress!, b: 2, t: t) }
    #expect(importance.count == m.layers && importance.allSatisfy { $0.count == 4 && $0.allSatisfy { $0 > 0 } })
    // one query head of each group (heads 0–1 read kv head 0, heads 2–3 kv head 1): the more active one
    let heads = (0..<m.layers).map { l in [0, 2].map { g in importance[l][g] >= importance[l][g + 1] ? g : g + 1 } }
    var sm = m
    sm.heads = 2
    sm.headDim = 8
    let student = Transformer(config: sm, needsGrad: false)
    try student.copyPruned(from: teacher, layers: [0, 1], queryHeads: heads)
    // a head of another group is refused: its query would read the wrong keys
    #expect(throws: (any Error).self) { try Transformer(config: sm, needsGrad: false).copyPruned(from: teacher, layers: [0, 1], queryHeads: [[1, 0], [0, 2]]) }
    // the reference: the teacher with the dropped heads' output-projection columns zeroed
    let masked = makeModel(m, needsGrad: false, seed: 15)
    for l in 0..<m.layers {
        let wo = masked.layout.blocks[l].wo
        for r in 0..<m.dim { for h in 0..<4 where !heads[l].contains(h) { for j in 0..<8 { masked.params.base[wo + r * m.qDim + h * 8 + j] = 0 } } }
    }
    let one = Array(toks[0..<t])
    #expect(maxRelError(logitsOf(student, one), logitsOf(masked, one)) < 1e-5)
}

/// The logits of one sequence. - Shapes: result [toks.count, v]
@Test(arguments: [true, false]) func hiddenDimPrunedStudentIsTheTeacherWithoutItsDroppedChannels(tied: Bool) throws {
    // residual channels, FFN channels and query heads pruned together, blocks reordered
    let m = tinyModelConfig(tied: tied, ropeStyle: .adjacent)
    let teacher = makeModel(m, needsGrad: false, seed: 17)
    let t = 9, toks = tokens(2 * t, vocab: m.vocabSize, seed: 18)
    let importance = toks.withUnsafeBufferPointer { teacher.residualChannelImportance(tokens: $0.baseAddress!, b: 2, t: t) }
    #expect(importance.count == m.layers && importance.allSatisfy { $0.count == m.dim && $0.allSatisfy { $0 > 0 } })
    let total = (0..<m.dim).map { j in importance.reduce(0) { $0 + $1[j] } }
    let channels = total.indices.sorted { total[$0] > total[$1] }.prefix(24).sorted()
    let layers = [1, 0], ffn = layers.map { _ in Array(stride(from: 0, to: 48, by: 3)) + Array(stride(from: 1, to: 48, by: 3)) }.map { $0.sorted() }
    let heads = layers.map { l in l == 0 ? [0, 3] : [1, 2] }
    var sm = m
    (sm.dim, sm.headDim, sm.heads, sm.ffnDim) = (24, 8, 2, 32)
    let student = Transformer(config: sm, needsGrad: false)
    try student.copyPruned(from: teacher, layers: layers, ffnChannels: ffn, queryHeads: heads, residualChannels: channels)
    // refused: a selection of the wrong size, or out of order
    #expect(throws: (any Error).self) { try Transformer(config: sm, needsGrad: false).copyPruned(from: teacher, layers: layers, ffnChannels: ffn, queryHeads: heads, residualChannels: Array(channels.dropLast())) }
    #expect(throws: (any Error).self) { try Transformer(config: sm, needsGrad: false).copyPruned(from: teacher, layers: layers, ffnChannels: ffn, queryHeads: heads, residualChannels: channels.reversed()) }
    // the reference: the full-width teacher whose dropped channels stay exactly zero along the stream (embedding
    // columns, o and down rows zeroed), whose dropped heads and FFN channels write nothing, and whose norms see the
    // same mean square: weights · √(24/32), ε · 24/32 (an RMS over 32 channels of which 8 are zero)
    var mm = m
    mm.rmsEps = m.rmsEps * 24 / 32
    let masked = makeModel(mm, needsGrad: false, seed: 17)
    let dropped = Set(0..<m.dim).subtracting(channels), P = masked.params.base
    for e in teacher.layout.entries {
        var name = e.name
        if let i = layers.firstIndex(where: { name.hasPrefix("model.layers.\($0).") }) { name = name.replacingOccurrences(of: "layers.\(layers[i]).", with: "layers.\(i).") }
        let dst = masked.layout.entries.first { $0.name == name }!
        (P + dst.offset).update(from: teacher.params.base + e.offset, count: e.count)
        if !e.isMatrix { for j in 0..<e.count { P[dst.offset + j] *= (24.0 / 32).squareRoot() } }
    }
    for c in dropped { for v in 0..<m.vocabSize { P[masked.layout.embedding + v * m.dim + c] = 0 } }
    for i in 0..<m.layers {
        let B = masked.layout.blocks[i]
        for c in dropped { for j in 0..<m.qDim { P[B.wo + c * m.qDim + j] = 0 }; for j in 0..<48 { P[B.wdown + c * 48 + j] = 0 } }
        for r in 0..<m.dim { for h in 0..<4 where !heads[i].contains(h) { for j in 0..<8 { P[B.wo + r * m.qDim + h * 8 + j] = 0 } } }
        for r in 0..<m.dim { for j in 0..<48 where !ffn[i].contains(j) { P[B.wdown + r * 48 + j] = 0 } }
    }
    let one = Array(toks[0..<t])
    #expect(maxRelError(logitsOf(student, one), logitsOf(masked, one)) < 1e-5)
}

func logitsOf(_ model: Transformer, _ toks: [Int32]) -> [Float] {
    var out = [Float](repeating: 0, count: toks.count * model.config.vocabSize)
    toks.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: 1, t: toks.count) }
    out.withUnsafeMutableBufferPointer { model.logits(into: $0.baseAddress!) }
    return out
}

/// Hidden-state distillation: the gradient of CE + w · Σ_pairs ‖h_l − h_teacher‖²/‖h_teacher‖² (block outputs, the
/// residual stream) through the whole model, against central differences of the same loss computed forward only.
@Test func hiddenStateLossGradientMatchesFiniteDifferences() {
    let m = tinyModelConfig(tied: true)
    let model = makeModel(m)
    let b = 2, t = 6, n = b * t, c = m.dim, w: Float = 0.7
    let toks = tokens(n, vocab: m.vocabSize, seed: 21)
    var targets = tokens(n, vocab: m.vocabSize, seed: 22)
    targets[3] = -1  // a masked row carries no hidden-state loss either
    // teacher block outputs: random streams of a realistic size, one per pair (student block 0 and 1; block 1 twice)
    let pairs = [0, 1, 1]
    let teacher = pairs.indices.map { randomArray(n * c, seed: 30 + UInt64($0), scale: 1.5) }
    func hidden(grad: ((Int, UnsafeMutablePointer<Float>) -> Void)? = nil) -> Double {
        var s = 0.0
        for (k, l) in pairs.enumerated() {
            s += teacher[k].withUnsafeBufferPointer { tb in targets.withUnsafeBufferPointer { tg in
                hiddenStateLoss(student: model.blockOutput(l), teacher: tb.baseAddress!, rows: n, c: c, targets: tg.baseAddress!, grad: nil, scale: 0)
            } }
        }
        return Double(w) * s
    }
    func loss() -> Double {
        toks.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: b, t: t) }
        return targets.withUnsafeBufferPointer { model.loss(targets: $0.baseAddress!) }.sum + hidden()
    }
    model.grads!.zero()
    toks.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: b, t: t) }
    var fromHook = 0.0
    // backward in the open: the hidden-state gradient joins the residual stream's before each block's backward
    targets.withUnsafeBufferPointer { tg in
        _ = model.headBackward(targets: tg.baseAddress!, lossScale: 1)
        for l in (0..<model.config.layers).reversed() {
            for (k, pl) in pairs.enumerated() where pl == l {
                fromHook += teacher[k].withUnsafeBufferPointer {
                    hiddenStateLoss(student: model.blockOutput(l), teacher: $0.baseAddress!, rows: n, c: c, targets: tg.baseAddress!,
                                    grad: model.residualGradient, scale: w)
                }
            }
            model.mlpBackward(l)
            model.attentionBackward(l)
        }
        model.applyEmbeddingGradient(model.embeddingLookupGradient())
    }
    #expect(abs(Double(w) * fromHook - hidden()) < 1e-6 * hidden())
    #expect(hidden() > 0.1)
    let coords = sampledCoordinates(model, toks, seed: 12)
    let numeric = centralDifferences(model, at: coords, loss: loss), analytic = coords.map { model.grads!.base[$0] }
    let err = maxRelError(analytic, numeric)
    #expect(err < 1e-2, "max error relative to the largest gradient: \(err)")
    // without the hook's part the gradient would be off: the hidden-state term is not negligible here
    model.grads!.zero()
    toks.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: b, t: t) }
    _ = targets.withUnsafeBufferPointer { model.backward(targets: $0.baseAddress!, lossScale: 1) }
    let ceOnly = coords.map { model.grads!.base[$0] }
    #expect(maxRelError(ceOnly, numeric) > 0.1)
}

/// A teacher packed to bf16 (every dense matrix in the kernel's layout, its f32 copy released) computes in a bf16 task
/// exactly what the unpacked model computes with its matrices rounded to bf16 (the kernel rounds its operands the same
/// way; embedding rows now come from the packed table), tied or not; in f32 it multiplies those bf16 values.
@Test(arguments: [true, false])
func packedTeacherIsTheBF16ForwardOfItsRoundedWeights(tied: Bool) {
    let cfg = tinyModelConfig(tied: tied), b = 2, t = 9
    let packed = Transformer(config: cfg, needsGrad: false), rounded = Transformer(config: cfg, needsGrad: false)
    packed.initialize(seed: 5)
    rounded.params.base.update(from: packed.params.base, count: packed.layout.count)
    var matrixBytes = 0
    for e in rounded.layout.entries where e.isMatrix {
        kd_bf16_round_f32(rounded.params.base + e.offset, rounded.params.base + e.offset, e.count)
        matrixBytes += e.count * 2
    }
    let (bytes, _) = packed.packDenseMatricesBF16()
    #expect(bytes >= matrixBytes && bytes < matrixBytes * 2, "packed \(bytes) bytes for \(matrixBytes) bytes of bf16 values")
    let tokens = (0..<(b * t)).map { Int32(($0 * 37 + 11) % cfg.vocabSize) }
    func logits(_ m: Transformer, _ kernel: BF16Kernel?) -> [Float] {
        var out = [Float](repeating: .nan, count: b * t * cfg.vocabSize)
        BF16.$kernel.withValue(kernel) {
            m.forward(tokens: tokens, b: b, t: t)
            m.logits(into: &out)
        }
        return out
    }
    #expect(logits(packed, .emulated) == logits(rounded, .emulated))
    if BF16.cpuHasAVX512BF16 { #expect(logits(packed, .avx512) == logits(rounded, .avx512)) }
    let f32 = logits(packed, nil), want = logits(rounded, nil)
    for i in 0..<f32.count { #expect(abs(f32[i] - want[i]) <= 1e-5 * (1 + abs(want[i])), "f32 [\(i)]") }
}
