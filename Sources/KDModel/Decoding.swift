// Incremental decoding with a KV cache, and token sampling (greedy, temperature, top-k, top-p) driven by the
// counter-based RNG. Uses the same block forward as training, with keys/values written into the cache.
import KDConfig
import KDCore
import KDOps

/// Keys and values of every layer for one sequence, filled position by position.
public final class KVCache {
    /// Positions the cache can hold.
    public let capacity: Int
    /// Positions filled so far.
    public internal(set) var length = 0
    let k: [Slab], v: [Slab]

    public init(config: ModelConfig, capacity: Int? = nil) {
        let cap = min(capacity ?? config.maxSeqLen, config.maxSeqLen)
        self.capacity = cap
        k = (0..<config.layers).map { _ in Slab(count: cap * config.kvDim) }
        v = (0..<config.layers).map { _ in Slab(count: cap * config.kvDim) }
    }

    /// Forgets every position (the buffers are reused).
    public func reset() { length = 0 }
}

/// Keys and values of b sequences decoded in lockstep (the same length each): per layer [b, capacity, kvDim].
public final class BatchKVCache {
    public let b: Int, capacity: Int
    public internal(set) var length = 0
    let k: [Slab], v: [Slab]

    public init(config: ModelConfig, b: Int, capacity: Int) {
        let cap = min(capacity, config.maxSeqLen)
        self.b = b
        self.capacity = cap
        k = (0..<config.layers).map { _ in Slab(count: b * cap * config.kvDim) }
        v = (0..<config.layers).map { _ in Slab(count: b * cap * config.kvDim) }
    }

    public func reset() { length = 0 }
}

extension Transformer {
    /// Feeds tq new tokens to each of the cache's b sequences (positions cache.length ..< + tq) and returns the logits
    /// of each sequence's last new position.
    /// - Shapes: tokens [b, tq] · result [b, v]
    public func decodeBatch(tokens: UnsafePointer<Int32>, tq: Int, cache: BatchKVCache) -> [Float] {
        let m = config, b = cache.b, n = b * tq, pos = cache.length, tk = pos + tq, c = m.dim, kv = m.kvDim, cap = cache.capacity
        precondition(tq > 0 && tk <= cap, "decodeBatch: \(tk) positions exceed the cache capacity \(cap)")
        for i in 0..<n { precondition(tokens[i] >= 0 && Int(tokens[i]) < m.vocabSize, "decodeBatch: token \(tokens[i]) outside vocabulary of \(m.vocabSize)") }
        let A = BlockActivations(n: n, b: b, t: tq, tk: tk, m: m)
        let resid = Slab(count: n * c), P = params.base
        embed(out: resid.base, tokens: tokens, n: n)
        let shape = AttentionShape(b: b, tq: tq, tk: tk, nh: m.heads, nkv: m.kvHeads, hs: m.headSize, pos0: pos, kvBatchStride: cap * kv)
        for l in 0..<m.layers {
            let kc = cache.k[l].base, vc = cache.v[l].base
            blockForward(l, A, resIn: resid.base, resOut: resid.base, n: n, t: tq, pos0: pos, kDst: A.k.base, vDst: A.v.base,
                         kAll: kc, vAll: vc, shape: shape, afterRoPE: {
                // the new keys/values go into each sequence's own stretch of the cache
                for i in 0..<b {
                    (kc + (i * cap + pos) * kv).update(from: A.k.base + i * tq * kv, count: tq * kv)
                    (vc + (i * cap + pos) * kv).update(from: A.v.base + i * tq * kv, count: tq * kv)
                }
            })
        }
        cache.length = tk
        let last = Slab(count: b * c), lnf = Slab(count: b * c), rstd = Slab(count: b)
        for i in 0..<b { (last.base + i * c).update(from: resid.base + (i * tq + tq - 1) * c, count: c) }
        rmsNormForward(out: lnf.base, rstd: rstd.base, inp: last.base, weight: P + layout.finalNorm, n: b, c: c, eps: m.rmsEps)
        var out = [Float](repeating: 0, count: b * m.vocabSize)
        out.withUnsafeMutableBufferPointer { lmHeadWeight.forward(out: $0.baseAddress!, inp: lnf.base, n: b, accumulate: false) }
        return out
    }

    /// Feeds `tokens` at positions cache.length ..< cache.length + tokens.count and returns the logits of every
    /// new position when `allRows`, else of the last one only.
    /// - Shapes: result [tokens.count, v] or [v]
    public func decode(tokens: [Int32], cache: KVCache, allRows: Bool = false) -> [Float] {
        let m = config, tq = tokens.count, pos = cache.length, tk = pos + tq, c = m.dim, kv = m.kvDim
        precondition(tq > 0, "decode: no tokens")
        precondition(tk <= cache.capacity, "decode: \(tk) positions exceed the cache capacity \(cache.capacity)")
        for t in tokens { precondition(t >= 0 && Int(t) < m.vocabSize, "decode: token \(t) outside vocabulary of \(m.vocabSize)") }
        let A = BlockActivations(n: tq, b: 1, t: tq, tk: tk, m: m)
        let resid = Slab(count: tq * c), P = params.base
        tokens.withUnsafeBufferPointer { embed(out: resid.base, tokens: $0.baseAddress!, n: tq) }
        let shape = AttentionShape(b: 1, tq: tq, tk: tk, nh: m.heads, nkv: m.kvHeads, hs: m.headSize, pos0: pos)
        for l in 0..<m.layers {
            blockForward(l, A, resIn: resid.base, resOut: resid.base, n: tq, t: tq, pos0: pos,
                         kDst: cache.k[l].base + pos * kv, vDst: cache.v[l].base + pos * kv,
                         kAll: cache.k[l].base, vAll: cache.v[l].base, shape: shape)
        }
        cache.length = tk
        let rows = allRows ? tq : 1, first = tq - rows
        let lnf = Slab(count: rows * c), rstd = Slab(count: rows)
        rmsNormForward(out: lnf.base, rstd: rstd.base, inp: resid.base + first * c, weight: P + layout.finalNorm,
                       n: rows, c: c, eps: m.rmsEps)
        var out = [Float](repeating: 0, count: rows * m.vocabSize)
        out.withUnsafeMutableBufferPointer { lmHeadWeight.forward(out: $0.baseAddress!, inp: lnf.base, n: rows, accumulate: false) }
        return out
    }

    /// Prompt → continuation of up to `maxNewTokens`, stopping after `stop` tokens. Token i of the continuation is
    /// drawn with counter i of `rng`, so a seed fixes the output. `onToken` sees each token as it is chosen.
    public func generate(
        prompt: [Int32], maxNewTokens: Int, sampler: Sampler, rng: CounterRNG, stop: Set<Int32> = [],
        onToken: (Int32) -> Void = { _ in }
    ) -> [Int32] {
        let cache = KVCache(config: config, capacity: min(config.maxSeqLen, prompt.count + maxNewTokens))
        var out: [Int32] = []
        var logits = decode(tokens: prompt, cache: cache)
        for i in 0..<maxNewTokens {
            let tok = sampler.sample(logits: logits, u: rng.uniform(UInt64(i)))
            out.append(tok)
            onToken(tok)
            if stop.contains(tok) || cache.length >= cache.capacity { break }
            logits = decode(tokens: [tok], cache: cache)
        }
        return out
    }
}

/// How the next token is chosen from logits.
public struct Sampler: Sendable, Equatable {
    /// 0 = greedy (argmax); otherwise logits are divided by it before the softmax.
    public var temperature: Float
    /// Keep only the k most likely tokens; 0 = no limit.
    public var topK: Int
    /// Keep the smallest set of most likely tokens whose probability reaches p; 1 = no limit.
    public var topP: Float

    public init(temperature: Float = 1, topK: Int = 0, topP: Float = 1) {
        precondition(temperature >= 0 && topK >= 0 && topP > 0 && topP <= 1, "Sampler: invalid settings")
        self.temperature = temperature; self.topK = topK; self.topP = topP
    }

    public static let greedy = Sampler(temperature: 0)

    /// Draws a token from a row of logits in place (scaled by 1/T when T ≠ 1) with `scratch` [v] — no copy of the row:
    /// how a caller drawing many rows (`distill synthesize`) samples; the same token as ``sample(logits:u:)``.
    public func sample(_ logits: UnsafeMutablePointer<Float>, _ v: Int, u: Float, scratch: UnsafeMutablePointer<Float>) -> Int32 {
        guard temperature > 0, topK == 0, topP == 1 else { return sample(logits: Array(UnsafeBufferPointer(start: logits, count: v)), u: u) }
        return drawFromLogits(logits, v, temperature: temperature, u: u, scratch: scratch)
    }

    /// Draws a token with the uniform number `u` in [0, 1): without top-k / top-p an inverse CDF in vocabulary order
    /// over the whole row (one pass, no sort); with them, over the kept tokens, most likely first.
    public func sample(logits: [Float], u: Float) -> Int32 {
        precondition(!logits.isEmpty, "Sampler: empty logits")
        if temperature == 0 {
            var best = 0
            for i in 1..<logits.count where logits[i] > logits[best] { best = i }
            return Int32(best)
        }
        if topK == 0 && topP == 1 {
            var row = logits, scratch = [Float](repeating: 0, count: logits.count)
            return row.withUnsafeMutableBufferPointer { r in
                scratch.withUnsafeMutableBufferPointer { drawFromLogits(r.baseAddress!, r.count, temperature: temperature, u: u, scratch: $0.baseAddress!) }
            }
        }
        let probs = candidateDistribution(logits: logits)
        var acc: Float = 0
        for (tok, p) in probs {
            acc += p
            if u < acc { return Int32(tok) }
        }
        return Int32(probs.last!.0)
    }

    /// The kept tokens, most likely first, with probabilities renormalized to sum to 1.
    public func candidateDistribution(logits: [Float]) -> [(Int, Float)] {
        let mx = logits.max()!
        var probs = logits.enumerated().map { ($0.offset, fastExp(($0.element - mx) / max(temperature, 1e-6))) }
        probs.sort { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }
        if topK > 0, topK < probs.count { probs.removeLast(probs.count - topK) }
        var total: Float = probs.reduce(0) { $0 + $1.1 }
        if topP < 1 {
            var acc: Float = 0, keep = 0
            for (_, p) in probs {
                acc += p / total
                keep += 1
                if acc >= topP { break }
            }
            probs.removeLast(probs.count - keep)
            total = probs.reduce(0) { $0 + $1.1 }
        }
        return probs.map { ($0.0, $0.1 / total) }
    }
}

/// Draws a token from softmax(logits / T) with u in [0, 1): inverse CDF in vocabulary order over the row's exponentials
/// (no sort): how `Sampler` draws without top-k / top-p.
/// - Shapes: logits [v] (scaled in place when T ≠ 1) · scratch [v]
func drawFromLogits(_ logits: UnsafeMutablePointer<Float>, _ v: Int, temperature T: Float, u: Float, scratch: UnsafeMutablePointer<Float>) -> Int32 {
    if T != 1 { scaleRow(logits, v, 1 / T) }
    let mx = rowMax(logits, v)
    let total = expShiftSum(scratch, logits, v, shift: mx)
    let target = u * total
    var acc: Float = 0, last = 0
    for j in 0..<v where scratch[j] > 0 {
        acc += scratch[j]
        last = j
        if target < acc { return Int32(j) }
    }
    return Int32(last)
}
