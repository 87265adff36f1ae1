// Teachers given as top-k: the k most likely tokens' log-probabilities plus the remaining tail mass, what ranks
// exchange instead of full-vocabulary rows (and what an offline cache stores). The divergence is then taken between
// the (k + 1)-bucket coarsenings of p and q — the k tokens and "everything else" — which is exact when k = v and a
// true divergence of the coarse distributions otherwise; every objective reuses its dense formula on the buckets.
// Dims: v vocabulary, k kept tokens.
import Foundation
import KDCore
import KDOps

/// One row of a top-k teacher: ids and log-probabilities of the k most likely tokens (most likely first) and
/// log of the remaining probability mass (−inf when nothing remains).
/// Wire format per token: k × (Int32 id, Float log-prob) + Float tail = 8k + 4 bytes.
public enum TopK {
    public static func bytesPerToken(k: Int) -> Int { 8 * k + 4 }

    /// Fills ids/logProbs with the k largest entries of the log-probability row `lp`, returns log of the tail mass.
    /// - Shapes: lp [v] · ids, logProbs [k]
    public static func select(lp: UnsafePointer<Float>, v: Int, k: Int, ids: UnsafeMutablePointer<Int32>,
                              logProbs: UnsafeMutablePointer<Float>) -> Float {
        precondition(k >= 1 && k <= v, "TopK.select: k must be in 1...\(v), got \(k)")
        _ = largest(k, of: v, values: logProbs, ids: ids) { lp[$0] }
        // the tail summed directly (no 1 − Σ cancellation) over what ranks below the k-th kept entry: exactly empty
        // when k = v
        let minV = logProbs[k - 1], minID = Int(ids[k - 1])
        var tail = 0.0
        for j in 0..<v where lp[j] < minV || (lp[j] == minV && j > minID) { tail += exp(Double(lp[j])) }
        return tail > 0 ? Float(log(tail)) : -Float.infinity
    }

    /// The `k` largest of the candidates 0..<count (`value(j)`; nil skips j), largest first, ties to the smaller
    /// index: a min-heap of the best so far, then heap-sorted in place. Every candidate's `value` is asked for, once,
    /// in order (callers sum alongside). Returns how many were kept (≤ k).
    /// - Shapes: values, ids [k]
    @inline(__always)
    static func largest(_ k: Int, of count: Int, values hv: UnsafeMutablePointer<Float>, ids hid: UnsafeMutablePointer<Int32>,
                        _ value: (Int) -> Float?) -> Int {
        // (value, id) a precedes b in the heap's order when smaller, or equal with a larger id
        @inline(__always) func less(_ a: Int, _ b: Int) -> Bool { hv[a] < hv[b] || (hv[a] == hv[b] && hid[a] > hid[b]) }
        @inline(__always) func swap(_ a: Int, _ b: Int) { (hv[a], hv[b]) = (hv[b], hv[a]); (hid[a], hid[b]) = (hid[b], hid[a]) }
        func siftDown(_ i0: Int, _ n: Int) {
            var i = i0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n, less(l, m) { m = l }
                if r < n, less(r, m) { m = r }
                if m == i { return }
                swap(i, m); i = m
            }
        }
        var size = 0
        for j in 0..<count {
            guard let x = value(j) else { continue }
            if k == 0 { continue }  // nothing to keep; every candidate is still visited
            if size < k {
                hv[size] = x; hid[size] = Int32(j); size += 1
                var i = size - 1
                while i > 0, less(i, (i - 1) / 2) { swap(i, (i - 1) / 2); i = (i - 1) / 2 }
            } else if x > hv[0] {
                // a later candidate of equal value has a larger id: it does not displace the kept one
                hv[0] = x; hid[0] = Int32(j)
                siftDown(0, size)
            }
        }
        // heap sort of a min-heap: the smallest goes last, the largest ends first
        var end = size
        while end > 1 {
            swap(0, end - 1)
            end -= 1
            siftDown(0, end)
        }
        return size
    }
}

/// D between the top-k teacher row and q = softmax(s / T), over k + 1 buckets; with `grad`, scale · ∂D/∂s.
/// `scratch` holds 2·v + 2·(k + 1) Floats.
/// - Shapes: ids, logProbs [k] · s, grad [v]
public func divergenceRowTopK(
    _ d: Divergence, ids: UnsafePointer<Int32>, logProbs: UnsafePointer<Float>, logTail: Float, k: Int,
    studentLogits s: UnsafePointer<Float>, v: Int, temperature T: Float, grad: UnsafeMutablePointer<Float>?, scale: Float,
    scratch: UnsafeMutablePointer<Float>
) -> Double {
    let lq = scratch, q = scratch + v, bp = scratch + 2 * v, bq = bp + (k + 1)
    lq.update(from: s, count: v)
    logSoftmaxInPlace(lq, v, temperature: T, scratch: q)
    expRow(q, lq, v)
    // bucket log-probabilities: the k tokens, then the tail (q's tail from the kept mass, in Double)
    // q's tail summed directly over the tokens not kept (exactly empty when k = v)
    var tailQ = 0.0
    for j in 0..<v { tailQ += Double(q[j]) }
    for i in 0..<k {
        bp[i] = logProbs[i]
        bq[i] = lq[Int(ids[i])]
        tailQ -= Double(q[Int(ids[i])])
    }
    if k == v { tailQ = 0 }
    bp[k] = logTail
    bq[k] = tailQ > 1e-30 ? Float(log(tailQ)) : -Float.infinity
    let value = bucketDivergence(d, lp: bp, lq: bq, n: k + 1)
    guard let g = grad else { return value }
    // ∂D/∂q over buckets; a tail token moves q_tail one for one, so it shares the tail's derivative
    let a = bp
    bucketGradient(d, lp: bp, lq: bq, n: k + 1, into: a)   // in place over bp: each bucket reads only its own entries
    for j in 0..<v { g[j] = a[k] }
    for i in 0..<k { g[Int(ids[i])] = a[i] }
    var sqa = 0.0
    for j in 0..<v { sqa += Double(q[j]) * Double(g[j]) }
    let c = Float(sqa)
    for j in 0..<v { g[j] = scale / T * q[j] * (g[j] - c) }
    return value
}

/// D over n buckets given their log-probabilities: ``Divergence/element(p:q:lp:lq:)``, the dense rows' definition.
func bucketDivergence(_ d: Divergence, lp: UnsafePointer<Float>, lq: UnsafePointer<Float>, n: Int) -> Double {
    let kind = d.normalized
    var value = 0.0
    for i in 0..<n { value += kind.element(p: exp(lp[i]), q: exp(lq[i]), lp: lp[i], lq: lq[i]).value }
    return value
}

/// ∂D/∂q_b for each bucket into `out` (the same definition); `out` may be `lp`: each bucket reads only its own entries.
func bucketGradient(_ d: Divergence, lp: UnsafePointer<Float>, lq: UnsafePointer<Float>, n: Int, into out: UnsafeMutablePointer<Float>) {
    let kind = d.normalized
    for i in 0..<n { out[i] = kind.element(p: exp(lp[i]), q: exp(lq[i]), lp: lp[i], lq: lq[i]).a }
}

/// A teacher signal drawn instead of selected ("Sparse Logit Sampling", ACL 2025): per position, N tokens drawn from the
/// teacher's distribution p at the distillation temperature, kept as their empirical distribution p̂ = counts / N over
/// the distinct tokens drawn. As top-k rows (k = N: the distinct ids, most frequent first, log(count / N); the rest
/// padded with distinct undrawn ids of probability 0; tail −∞) the forward-KL bucket gradient is q − p̂, whose
/// expectation over the draws is q − p: the dense forward-KL gradient, unbiased. Objectives that need p at tokens
/// not drawn (reverse KL, JSD, skew, TVD) have no such estimate and are refused with a sampled signal.
public enum SampledSignal {
    /// Draws `n` tokens from the log-probability row `lp` by inverse CDF at the `uniforms` (in [0, 1)), and writes the
    /// empirical distribution as a top-k row (k = n). - Shapes: lp [v] · uniforms, ids, logProbs [n]
    public static func draw(lp: UnsafePointer<Float>, v: Int, uniforms: UnsafeMutablePointer<Double>, n: Int,
                            ids: UnsafeMutablePointer<Int32>, logProbs: UnsafeMutablePointer<Float>) {
        precondition(n >= 1 && n <= v, "SampledSignal.draw: n must be in 1...\(v), got \(n)")
        // one pass over the CDF with the draws sorted; the total (≈ 1) scales the draws so rounding leaves no gap
        var total = 0.0
        for j in 0..<v { total += exp(Double(lp[j])) }
        var u = UnsafeMutableBufferPointer(start: uniforms, count: n)
        u.sort()
        var counts: [Int32: Int] = [:], order: [Int32] = []
        var cdf = 0.0, j = 0
        for i in 0..<n {
            let target = u[i] * total
            while j < v - 1 && cdf + exp(Double(lp[j])) <= target { cdf += exp(Double(lp[j])); j += 1 }
            if counts[Int32(j)] == nil { order.append(Int32(j)) }
            counts[Int32(j), default: 0] += 1
        }
        // most frequent first (ties: smaller id), then probability-0 pads with the smallest ids not drawn
        order.sort { (counts[$0]!, -$0) > (counts[$1]!, -$1) }
        for (i, id) in order.enumerated() {
            ids[i] = id
            logProbs[i] = Float(log(Double(counts[id]!) / Double(n)))
        }
        var pad: Int32 = 0
        for i in order.count..<n {
            while counts[pad] != nil { pad += 1 }
            ids[i] = pad
            logProbs[i] = -.infinity
            pad += 1
        }
    }

    /// The `n` uniforms of position `key` (a window's global row index) for `seed`: counter-based, so a cache written on
    /// any number of ranks or in any batch draws the same tokens.
    public static func uniforms(seed: UInt64, key: UInt64, n: Int, into out: UnsafeMutablePointer<Double>) {
        let rng = CounterRNG(seed: seed, purpose: .teacherSampling)
        for i in 0..<n { out[i] = Double(rng.bits(key, UInt64(i)) >> 11) * 0x1p-53 }
    }
}

extension TopK {
    /// One token's mixture of several teachers' top-k rows, p(id) = Σ_i w_i p_i(id), as top-k rows again: a token
    /// outside teacher i's list gets that teacher's tail mass spread evenly over its v − k unlisted tokens (the one
    /// assumption; exact when every list covers the vocabulary). Keeps the k most likely tokens of the union, most
    /// likely first; returns log of the rest. `weights` sum to 1.
    /// - Shapes: rows[i] [n, k_i] (row r is used) · ids, logProbs [k]
    public static func mergeMixture(rows: [TopKRows], r: Int, weights: [Float], v: Int, k: Int,
                                    ids: UnsafeMutablePointer<Int32>, logProbs: UnsafeMutablePointer<Float>) -> Float {
        var mass: [Int32: Double] = [:]
        var spread = [Double](repeating: 0, count: rows.count)
        for (i, t) in rows.enumerated() {
            let w = Double(weights[i])
            for j in 0..<t.k { mass[t.ids[r * t.k + j], default: 0] += w * exp(Double(t.logProbs[r * t.k + j])) }
            spread[i] = v > t.k ? exp(Double(t.logTail[r])) / Double(v - t.k) : 0
        }
        // every union token also receives the spread tail of each teacher that did not list it
        var listed = [Set<Int32>]()
        for t in rows { listed.append(Set((0..<t.k).map { t.ids[r * t.k + $0] })) }
        for (id, _) in mass {
            for i in rows.indices where !listed[i].contains(id) { mass[id]! += Double(weights[i]) * spread[i] }
        }
        let kept = mass.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }.prefix(k)
        precondition(kept.count == k, "TopK.mergeMixture: the union has \(kept.count) tokens, fewer than k = \(k)")
        let keptIDs = Set(kept.map(\.key))
        for (j, e) in kept.enumerated() { ids[j] = e.key; logProbs[j] = Float(log(e.value)) }
        // the tail, summed from its parts: each teacher's own tail, minus the spread share now kept, plus its listed
        // tokens that were dropped
        var tail = 0.0
        for (i, t) in rows.enumerated() {
            var ti = exp(Double(t.logTail[r]))
            ti -= spread[i] * Double(keptIDs.subtracting(listed[i]).count)
            for j in 0..<t.k where !keptIDs.contains(t.ids[r * t.k + j]) { ti += exp(Double(t.logProbs[r * t.k + j])) }
            tail += Double(weights[i]) * max(0, ti)
        }
        return tail > 0 ? Float(log(tail)) : -Float.infinity
    }
}
