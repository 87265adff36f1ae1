// Every kernel's backward against central finite differences of L = Σ out·dout (Double accumulation).
// Tolerance: maxRelError (worst absolute error over the largest gradient entry) < 2e-3 with eps = 1e-2;
// the truncation error of central differences is O(eps²·f''') ≈ 1e-4 here and Float rounding adds ~1e-5.
import KDCore
import KDOps
import KDTestSupport
import Testing

let tol: Float = 2e-3

@Test func matmulBackwardMatchesFiniteDifferences() {
    let n = 5, c = 7, oc = 6
    let inp = randomArray(n * c, seed: 1), w = randomArray(oc * c, seed: 2), dout = randomArray(n * oc, seed: 3)
    func f(_ x: [Float], _ w: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: n * oc)
        x.withUnsafeBufferPointer { xp in w.withUnsafeBufferPointer { wp in
            out.withUnsafeMutableBufferPointer { matmulForward(out: $0.baseAddress!, inp: xp.baseAddress!, weight: wp.baseAddress!, n: n, c: c, oc: oc) }
        } }
        return out
    }
    var dinp = [Float](repeating: 0.5, count: n * c), dw = [Float](repeating: -0.25, count: oc * c)
    dinp.withUnsafeMutableBufferPointer { di in dw.withUnsafeMutableBufferPointer { dwp in
        matmulBackward(dinp: di.baseAddress!, dweight: dwp.baseAddress!, dout: dout, inp: inp, weight: w, n: n, c: c, oc: oc)
    } }
    // backward accumulates: subtract the initial contents
    let gi = numericalGradient(inp) { fakeLoss(f($0, w), dout) }
    let gw = numericalGradient(w) { fakeLoss(f(inp, $0), dout) }
    #expect(maxRelError(dinp.map { $0 - 0.5 }, gi) < tol)
    #expect(maxRelError(dw.map { $0 + 0.25 }, gw) < tol)
}

@Test func blasMatmulEqualsNaiveLoop() {
    let n = 9, c = 33, oc = 17
    let inp = randomArray(n * c, seed: 4), w = randomArray(oc * c, seed: 5)
    var out = [Float](repeating: 0, count: n * oc)
    out.withUnsafeMutableBufferPointer { matmulForward(out: $0.baseAddress!, inp: inp, weight: w, n: n, c: c, oc: oc) }
    for r in 0..<n {
        for o in 0..<oc {
            var s: Double = 0
            for i in 0..<c { s += Double(inp[r * c + i]) * Double(w[o * c + i]) }
            #expect(abs(Double(out[r * oc + o]) - s) < 1e-4 * max(1, abs(s)))
        }
    }
}

/// f32 products large enough to split over our threads (rows when op(A) is the taller, else columns; one
/// single-threaded sgemm a slice), every transpose, beta 0 and 1, with padded leading dimensions: each element against a
/// Double sum within f32's bound for a sum of k terms, and the same bits on 1, 2 and 3 threads.
@Test func f32GEMMSplitOverOurThreadsIsOneSum() {
    for (m, n, k) in [(600, 130, 160), (40, 900, 300), (257, 255, 200)] {
        for (transA, transB) in [(false, true), (false, false), (true, false), (true, true)] {
            let lda = (transA ? m : k) + 3, ldb = (transB ? k : n) + 5, ldc = n + 2
            let a = randomArray((transA ? k : m) * lda, seed: 51), b = randomArray((transB ? n : k) * ldb, seed: 52)
            let c0 = randomArray(m * ldc, seed: 53)
            for beta: Float in [0, 1] {
                func run(_ threads: Int) -> [Float] {
                    var c = c0
                    let saved = Parallel.threads
                    Parallel.threads = threads
                    defer { Parallel.threads = saved }
                    gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: &c, ldc: ldc)
                    return c
                }
                let one = run(1)
                var worst = 0.0
                for i in 0..<m {
                    for j in 0..<n {
                        var sum = 0.0, magnitude = 0.0
                        for p in 0..<k {
                            let product = Double(a[transA ? p * lda + i : i * lda + p]) * Double(b[transB ? j * ldb + p : p * ldb + j])
                            sum += product
                            magnitude += abs(product)
                        }
                        let want = 0.5 * sum + Double(beta) * Double(c0[i * ldc + j])
                        // an f32 sum of k terms in any order: within k·2⁻²⁴ of the terms' magnitudes (a wrong slice
                        // offset errs by the values themselves)
                        let bound = Double(k + 4) * 0x1p-24 * (0.5 * magnitude + abs(Double(beta) * Double(c0[i * ldc + j])))
                        worst = max(worst, abs(Double(one[i * ldc + j]) - want) / bound)
                    }
                    // the padding between rows is never written
                    for j in n..<ldc { #expect(one[i * ldc + j] == c0[i * ldc + j]) }
                }
                #expect(worst <= 1, "\(m)x\(n)x\(k) transA \(transA) transB \(transB) beta \(beta): error \(worst) × the f32 bound")
                for threads in [2, 3] {
                    let same = run(threads) == one
                    #expect(same, "\(m)x\(n)x\(k) transA \(transA) transB \(transB) beta \(beta): \(threads) threads differ from one")
                }
            }
        }
    }
}

@Test func rmsNormBackwardMatchesFiniteDifferences() {
    let n = 6, c = 8
    let inp = randomArray(n * c, seed: 6), w = randomArray(c, seed: 7).map { 1 + 0.3 * $0 }, dout = randomArray(n * c, seed: 8)
    func f(_ x: [Float], _ w: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: n * c), rstd = [Float](repeating: 0, count: n)
        out.withUnsafeMutableBufferPointer { o in rstd.withUnsafeMutableBufferPointer { r in
            rmsNormForward(out: o.baseAddress!, rstd: r.baseAddress!, inp: x, weight: w, n: n, c: c, eps: 1e-5)
        } }
        return out
    }
    var rstd = [Float](repeating: 0, count: n)
    var scratch = [Float](repeating: 0, count: n * c)
    scratch.withUnsafeMutableBufferPointer { o in rstd.withUnsafeMutableBufferPointer { r in
        rmsNormForward(out: o.baseAddress!, rstd: r.baseAddress!, inp: inp, weight: w, n: n, c: c, eps: 1e-5)
    } }
    var dinp = [Float](repeating: 0, count: n * c), dw = [Float](repeating: 0, count: c)
    dinp.withUnsafeMutableBufferPointer { di in dw.withUnsafeMutableBufferPointer { dwp in
        rmsNormBackward(dinp: di.baseAddress!, dweight: dwp.baseAddress!, dout: dout, inp: inp, weight: w, rstd: rstd, n: n, c: c)
    } }
    #expect(maxRelError(dinp, numericalGradient(inp) { fakeLoss(f($0, w), dout) }) < tol)
    #expect(maxRelError(dw, numericalGradient(w) { fakeLoss(f(inp, $0), dout) }) < tol)
}

@Test(arguments: RopeStyle.allCases)
func ropeBackwardMatchesFiniteDifferencesAndPreservesNorms(style: RopeStyle) {
    let t = 5, b = 2, nh = 3, hs = 8, n = b * t
    let table = RoPETable(maxT: 16, hs: hs, theta: 10000)
    let inp = randomArray(n * nh * hs, seed: 9), dout = randomArray(n * nh * hs, seed: 10)
    func f(_ x: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        out.withUnsafeMutableBufferPointer { ropeForward(out: $0.baseAddress!, inp: x, table: table, n: n, t: t, pos0: 3, nh: nh, hs: hs, style: style) }
        return out
    }
    let out = f(inp)
    // a rotation: every head vector keeps its norm, and position 0 is the identity
    for r in 0..<n * nh {
        var a: Float = 0, o: Float = 0
        for i in 0..<hs { a += inp[r * hs + i] * inp[r * hs + i]; o += out[r * hs + i] * out[r * hs + i] }
        #expect(abs(a - o) < 1e-4 * a)
    }
    var dinp = [Float](repeating: 0, count: inp.count)
    dinp.withUnsafeMutableBufferPointer { ropeBackward(dinp: $0.baseAddress!, dout: dout, table: table, n: n, t: t, pos0: 3, nh: nh, hs: hs, style: style) }
    #expect(maxRelError(dinp, numericalGradient(inp) { fakeLoss(f($0), dout) }) < tol)
}

@Test func ropeStylesArePermutationsOfEachOther() {
    // adjacent pairs (2i, 2i+1) on a permuted vector equal half pairs (i, i + hs/2) on the original:
    // exactly the row permutation llama.cpp's converter applies to Q and K.
    let hs = 8, nh = 1, t = 4
    let table = RoPETable(maxT: 8, hs: hs, theta: 500)
    let x = randomArray(t * hs, seed: 11)
    var perm = [Int](repeating: 0, count: hs)
    for i in 0..<hs / 2 { perm[2 * i] = i; perm[2 * i + 1] = i + hs / 2 }
    let xp = (0..<t).flatMap { r in perm.map { x[r * hs + $0] } }
    var half = [Float](repeating: 0, count: x.count), adj = half
    half.withUnsafeMutableBufferPointer { ropeForward(out: $0.baseAddress!, inp: x, table: table, n: t, t: t, nh: nh, hs: hs, style: .half) }
    adj.withUnsafeMutableBufferPointer { ropeForward(out: $0.baseAddress!, inp: xp, table: table, n: t, t: t, nh: nh, hs: hs, style: .adjacent) }
    for r in 0..<t { for j in 0..<hs { #expect(abs(adj[r * hs + j] - half[r * hs + perm[j]]) < 1e-6) } }
}

@Test func swiGLUBackwardMatchesFiniteDifferences() {
    let n = 4, f = 6
    let gate = randomArray(n * f, seed: 12, scale: 2), up = randomArray(n * f, seed: 13), dout = randomArray(n * f, seed: 14)
    func fwd(_ g: [Float], _ u: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: n * f)
        out.withUnsafeMutableBufferPointer { swiGLUForward(out: $0.baseAddress!, gate: g, up: u, n: n, f: f) }
        return out
    }
    var dg = [Float](repeating: 0, count: n * f), du = dg
    dg.withUnsafeMutableBufferPointer { a in du.withUnsafeMutableBufferPointer { b in
        swiGLUBackward(dgate: a.baseAddress!, dup: b.baseAddress!, dout: dout, gate: gate, up: up, n: n, f: f)
    } }
    #expect(maxRelError(dg, numericalGradient(gate) { fakeLoss(fwd($0, up), dout) }) < tol)
    #expect(maxRelError(du, numericalGradient(up) { fakeLoss(fwd(gate, $0), dout) }) < tol)
}

/// The vectorized SwiGLU against silu(g)·u in Double, on a length with a tail past the 16-lane blocks and at extremes
/// (σ's exp is ``simdExp``, ~2 ulp; with the division and the products each output is within 1e-6 relative); an
/// element's value does not depend on whether it falls in a 16-lane block or in the tail.
@Test func swiGLUForwardIsSiluTimesUpInDouble() {
    let n = 3, f = 37
    var gate = randomArray(n * f, seed: 41, scale: 4), up = randomArray(n * f, seed: 42)
    gate[0] = 0; gate[1] = 100; gate[2] = -100; gate[3] = -87.5; gate[n * f - 1] = 30
    var out = [Float](repeating: .nan, count: n * f)
    swiGLUForward(out: &out, gate: gate, up: up, n: n, f: f)
    for i in 0..<(n * f) {
        let g = Double(gate[i]), want = g / (1 + Foundation.exp(-g)) * Double(up[i])
        #expect(abs(Double(out[i]) - want) <= 1e-6 * abs(want) + 1e-30, "[\(i)] g \(g): \(out[i]) vs \(want)")
    }
    // the same inputs shifted by 5 land in other lanes and in the tail
    var shifted = [Float](repeating: .nan, count: n * f + 5)
    swiGLUForward(out: &shifted, gate: [0, 0, 0, 0, 0] + gate, up: [0, 0, 0, 0, 0] + up, n: 1, f: n * f + 5)
    #expect(Array(shifted[5...]) == out)
}

@Test func embeddingBackwardMatchesFiniteDifferences() {
    let n = 6, c = 4, v = 5
    let tokens: [Int32] = [0, 3, 3, 1, 4, 0]
    let wte = randomArray(v * c, seed: 15), dout = randomArray(n * c, seed: 16)
    func f(_ w: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: n * c)
        out.withUnsafeMutableBufferPointer { embeddingForward(out: $0.baseAddress!, tokens: tokens, wte: w, n: n, c: c) }
        return out
    }
    var dw = [Float](repeating: 0, count: v * c)
    dw.withUnsafeMutableBufferPointer { embeddingBackward(dwte: $0.baseAddress!, dout: dout, tokens: tokens, n: n, c: c) }
    #expect(maxRelError(dw, numericalGradient(wte) { fakeLoss(f($0), dout) }) < tol)
}

@Test(arguments: [(1, 2), (2, 1), (3, 3)])
func attentionBackwardMatchesFiniteDifferences(group: Int, nkv: Int) {
    let b = 2, t = 5, hs = 4, nh = nkv * group
    let shape = AttentionShape(b: b, tq: t, tk: t, nh: nh, nkv: nkv, hs: hs)
    let q = randomArray(b * t * nh * hs, seed: 17), k = randomArray(b * t * nkv * hs, seed: 18)
    let v = randomArray(b * t * nkv * hs, seed: 19), dout = randomArray(b * t * nh * hs, seed: 20)
    func f(_ q: [Float], _ k: [Float], _ v: [Float]) -> ([Float], [Float]) {
        var out = [Float](repeating: 0, count: q.count), probs = [Float](repeating: 0, count: b * nh * t * t)
        out.withUnsafeMutableBufferPointer { o in probs.withUnsafeMutableBufferPointer { p in
            attentionForward(out: o.baseAddress!, probs: p.baseAddress!, q: q, k: k, v: v, shape: shape)
        } }
        return (out, probs)
    }
    let (_, probs) = f(q, k, v)
    // causal: row i has weight only on keys 0...i, and every row sums to 1
    for bh in 0..<b * nh { for i in 0..<t {
        var s: Float = 0
        for j in 0..<t { let p = probs[(bh * t + i) * t + j]; s += p; if j > i { #expect(p == 0) } }
        #expect(abs(s - 1) < 1e-5)
    } }
    var dq = [Float](repeating: 0, count: q.count), dk = [Float](repeating: 0, count: k.count), dv = dk
    var scratch = [Float](repeating: 0, count: t * t)
    dq.withUnsafeMutableBufferPointer { a in dk.withUnsafeMutableBufferPointer { bb in dv.withUnsafeMutableBufferPointer { c in
        scratch.withUnsafeMutableBufferPointer { s in
            attentionBackward(dq: a.baseAddress!, dk: bb.baseAddress!, dv: c.baseAddress!, scratch: s.baseAddress!,
                              dout: dout, probs: probs, q: q, k: k, v: v, shape: shape)
        } } } }
    #expect(maxRelError(dq, numericalGradient(q) { fakeLoss(f($0, k, v).0, dout) }) < tol)
    #expect(maxRelError(dk, numericalGradient(k) { fakeLoss(f(q, $0, v).0, dout) }) < tol)
    #expect(maxRelError(dv, numericalGradient(v) { fakeLoss(f(q, k, $0).0, dout) }) < tol)
}

@Test func attentionMatchesNaiveReference() {
    // independent scalar reference in Double: scores, causal mask, softmax, weighted sum; GQA head mapping h / group
    let b = 1, t = 6, hs = 4, nh = 4, nkv = 2
    let shape = AttentionShape(b: b, tq: t, tk: t, nh: nh, nkv: nkv, hs: hs)
    let q = randomArray(t * nh * hs, seed: 21), k = randomArray(t * nkv * hs, seed: 22), v = randomArray(t * nkv * hs, seed: 23)
    var out = [Float](repeating: 0, count: q.count), probs = [Float](repeating: 0, count: nh * t * t)
    out.withUnsafeMutableBufferPointer { o in probs.withUnsafeMutableBufferPointer { p in
        attentionForward(out: o.baseAddress!, probs: p.baseAddress!, q: q, k: k, v: v, shape: shape)
    } }
    for h in 0..<nh {
        let kh = h / (nh / nkv)
        for i in 0..<t {
            var s = [Double](repeating: 0, count: i + 1)
            for j in 0...i { for d in 0..<hs { s[j] += Double(q[(i * nh + h) * hs + d]) * Double(k[(j * nkv + kh) * hs + d]) }; s[j] /= Double(hs).squareRoot() }
            let m = s.max()!, e = s.map { Foundation.exp($0 - m) }, z = e.reduce(0, +)
            for d in 0..<hs {
                var o: Double = 0
                for j in 0...i { o += e[j] / z * Double(v[(j * nkv + kh) * hs + d]) }
                #expect(abs(Double(out[(i * nh + h) * hs + d]) - o) < 1e-5)
            }
        }
    }
}

/// The f32 path in 64-query blocks (OpenBLAS on one thread per head, (batch, head) pairs over our threads) against an
/// independent Double reference, forward and backward, on shapes that cross block edges: several query blocks, a
/// sliding window, queries after a cached prefix, one decoded query. Probabilities start as NaN, so an entry the
/// blocks never write shows; the results are the same bit for bit on 1, 2 and 3 threads, and without keeping the
/// probabilities (a frozen model's forward).
@Test func f32AttentionInQueryBlocksIsTheDoubleReference() {
    let hs = 16
    let cases: [(b: Int, tq: Int, tk: Int, pos0: Int, nh: Int, nkv: Int, window: Int)] = [
        (2, 150, 150, 0, 6, 2, 0), (1, 130, 130, 0, 2, 2, 40), (2, 70, 100, 30, 3, 1, 0), (1, 1, 37, 36, 3, 1, 0),
    ]
    for c in cases {
        var shape = AttentionShape(b: c.b, tq: c.tq, tk: c.tk, nh: c.nh, nkv: c.nkv, hs: hs, pos0: c.pos0)
        shape.window = c.window
        let q = randomArray(c.b * c.tq * c.nh * hs, seed: 41), k = randomArray(c.b * c.tk * c.nkv * hs, seed: 42)
        let v = randomArray(c.b * c.tk * c.nkv * hs, seed: 43), dout = randomArray(q.count, seed: 44)
        func run(threads: Int) -> [[Float]] { attentionRun(nil, threads: threads, shape: shape, q: q, k: k, v: v, dout: dout) }
        // reference: per (batch, head), scores over the keys each query sees, softmax, and the backward by hand
        var want = [[Double]]([q.count, c.b * c.nh * c.tq * c.tk, q.count, k.count, k.count].map { [Double](repeating: 0, count: $0) })
        let scale = 1 / Double(hs).squareRoot()
        for bi in 0..<c.b { for h in 0..<c.nh {
            let kvh = h / (c.nh / c.nkv)
            func qi(_ i: Int, _ d: Int) -> Int { ((bi * c.tq + i) * c.nh + h) * hs + d }
            func kj(_ j: Int, _ d: Int) -> Int { ((bi * c.tk + j) * c.nkv + kvh) * hs + d }
            for i in 0..<c.tq {
                let last = c.pos0 + i, first = c.window > 0 ? max(0, last - c.window + 1) : 0
                let keys = Array(first...last)
                let s = keys.map { j in (0..<hs).reduce(0.0) { $0 + Double(q[qi(i, $1)]) * Double(k[kj(j, $1)]) } * scale }
                let m = s.max()!, e = s.map { Foundation.exp($0 - m) }, z = e.reduce(0, +), p = e.map { $0 / z }
                for (n, j) in keys.enumerated() { want[1][((bi * c.nh + h) * c.tq + i) * c.tk + j] = p[n] }
                for d in 0..<hs { want[0][qi(i, d)] = keys.indices.reduce(0.0) { $0 + p[$1] * Double(v[kj(keys[$1], d)]) } }
                let dp = keys.map { j in (0..<hs).reduce(0.0) { $0 + Double(dout[qi(i, $1)]) * Double(v[kj(j, $1)]) } }
                let dot = zip(dp, p).reduce(0.0) { $0 + $1.0 * $1.1 }
                for (n, j) in keys.enumerated() {
                    let ds = p[n] * (dp[n] - dot) * scale
                    for d in 0..<hs {
                        want[2][qi(i, d)] += ds * Double(k[kj(j, d)])
                        want[3][kj(j, d)] += ds * Double(q[qi(i, d)])
                        want[4][kj(j, d)] += p[n] * Double(dout[qi(i, d)])
                    }
                }
            }
        } }
        let got = run(threads: 1)
        for (name, (g, w)) in zip(["out", "probs", "dq", "dk", "dv"], zip(got, want)) {
            let largest = w.map { abs($0) }.max()!, worst = zip(g, w).map { abs(Double($0) - $1) }.max()!
            #expect(worst <= 1e-5 * largest, "\(c) \(name): |f32 − reference| up to \(worst) (NaN: an entry never written), largest \(largest)")
        }
        for threads in [2, 3] {
            let same = run(threads: threads) == got
            #expect(same, "\(c): \(threads) threads differ from one")
        }
        // a frozen model's forward (no probabilities kept): each block's in the thread's buffer, the same output bits,
        // the tensor untouched
        var out = [Float](repeating: 0, count: q.count), probs = [Float](repeating: .nan, count: c.b * c.nh * c.tq * c.tk)
        let saved = Parallel.threads
        Parallel.threads = 2
        BF16.$kernel.withValue(nil) { attentionForward(out: &out, probs: &probs, q: q, k: k, v: v, shape: shape, keepProbs: false) }
        Parallel.threads = saved
        #expect(out == got[0], "\(c): the forward without probabilities differs")
        #expect(probs.allSatisfy { $0.isNaN }, "\(c): the forward without probabilities wrote them")
    }
}

import Foundation

/// OpenBLAS 0.3.21 falls back to its SSE3 Prescott kernels on CPUs it does not recognize; the executable then re-runs
/// itself with OPENBLAS_CORETYPE set to the best family the CPU's flags allow, unless the user set one.
@Test func blasCoreIsRaisedOnlyWhenOpenBLASFellBackBelowTheCPU() {
    let avx512: Set<String> = ["sse3", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"]
    #expect(BLASCore.better(flags: avx512, current: "Prescott", environment: [:]) == "SkylakeX")
    #expect(BLASCore.better(flags: ["avx2", "fma", "avx"], current: "Prescott", environment: [:]) == "Haswell")
    #expect(BLASCore.better(flags: ["sse3"], current: "Prescott", environment: [:]) == nil)
    #expect(BLASCore.better(flags: avx512, current: "SkylakeX", environment: [:]) == nil)
    #expect(BLASCore.better(flags: avx512, current: "Zen", environment: [:]) == nil)
    #expect(BLASCore.better(flags: avx512, current: "Prescott", environment: ["OPENBLAS_CORETYPE": "Haswell"]) == nil)
    // the library in this process: never a pre-AVX2 core when the CPU has AVX2 (the tests set nothing, so this
    // checks what OpenBLAS chose on its own and says so when it would need the executable's correction)
    let flags = BLASCore.cpuFlags()
    if BLASCore.better(flags: flags, current: BLASCore.current, environment: ProcessInfo.processInfo.environment) != nil {
        print("note: OpenBLAS chose \(BLASCore.current) on this CPU; the distill executable re-runs itself with a better core")
    }
}
