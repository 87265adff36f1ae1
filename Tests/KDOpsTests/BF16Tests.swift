// bf16 GEMM: the rounding against an independent Double rounding, each kernel against float64 references with bounds
// derived from bf16's 8-bit significand, and the precision's fallback to f32.
//
// Bounds, per element, with u_b = 2⁻⁹ (bf16 unit roundoff: 8 significant bits, nearest even), u = 2⁻²⁴ (f32),
// γ_n = n·u / (1 − n·u), S = Σ_p |a_ip|·|b_pj| and ã, b̃ the operands rounded to bf16:
//   • against its own numbers (f64 of Σ ã·b̃): products of two bf16 values are exact in f32, so only the K f32 sums
//     round: |C − Σ ã b̃| ≤ γ_K · Σ |ã b̃|  (tight: a wrong index or a lost pair breaks it by orders of magnitude);
//   • against the unrounded product (f64 of Σ a·b): |ã b̃ − a b| ≤ (2u_b + u_b²)|a b|, so
//     |C − Σ a b| ≤ (2u_b + u_b²)·S + γ_K·(1 + u_b)²·S.
// And the test can tell bf16 from f32: the bf16 result's error is > 10× sgemm's on the same operands.
import CBLAS
import CKDKernels
import Foundation
import KDCore
@testable import KDOps
import KDTestSupport
import Testing

/// bf16 bits of x by Double arithmetic: x scaled to 8 significant bits, rounded to nearest even (normal floats only).
private func referenceBF16(_ x: Float) -> UInt16 {
    let ulp = Double(sign: .plus, exponent: Int(x.exponent) - 7, significand: 1)
    let r = (Double(x) / ulp).rounded(.toNearestOrEven) * ulp
    return UInt16(truncatingIfNeeded: Float(r).bitPattern >> 16)
}

@Test func bf16RoundsToNearestEvenAsDoubleArithmeticDoes() {
    let rng = CounterRNG(seed: 11, purpose: .test)
    var values: [Float] = []
    for i in 0..<20_000 {
        // random significands over the whole normal exponent range
        let bits = UInt32(truncatingIfNeeded: rng.bits(UInt64(i)))
        let f = Float(bitPattern: (bits & 0x807f_ffff) | (UInt32(1 + (i % 253)) << 23))
        values.append(f)
    }
    // exact ties (the 16 dropped bits are 0x8000) on both sides of even, and just above and below them
    for top: UInt32 in [0x3f80, 0x3f81, 0x4049, 0xc2fe, 0x7f7e] {
        for low: UInt32 in [0x8000, 0x7fff, 0x8001, 0] { values.append(Float(bitPattern: top << 16 | low)) }
    }
    values.append(Float.greatestFiniteMagnitude)  // rounds up to inf
    for x in values where x.isNormal {
        #expect(kd_bf16_from_f32(x) == referenceBF16(x), "x = \(x) (bits \(String(x.bitPattern, radix: 16)))")
    }
    #expect(kd_bf16_from_f32(0x1.01p0) == 0x3f80 && kd_bf16_from_f32(0x1.03p0) == 0x3f82)  // tie → even, both ways
    #expect(kd_bf16_from_f32(.infinity) == 0x7f80 && kd_bf16_from_f32(-.infinity) == 0xff80)
    #expect(kd_bf16_from_f32(0) == 0 && kd_bf16_from_f32(-0.0) == 0x8000)
    let nan = kd_bf16_from_f32(Float(bitPattern: 0x7f80_0001))  // a signalling NaN whose payload is all in the low bits
    #expect(nan & 0x7f80 == 0x7f80 && nan & 0x7f != 0, "NaN must stay NaN, found \(String(nan, radix: 16))")
    var r: [Float] = [1.00390625, 3.0e38, -7.0e-3]
    kd_bf16_round_f32(r, &r, 3)
    #expect(r == [1.0, Float(bitPattern: UInt32(kd_bf16_from_f32(3.0e38)) << 16), Float(bitPattern: UInt32(kd_bf16_from_f32(-7.0e-3)) << 16)])
}

/// Runs `kernel` on every transpose and a few shapes (crossing the kernel's 8 × 32 tile, its 256-deep, 96-row and
/// 512-column blocks — (130, 600, 300) crosses all three at once —, odd depths) and checks the two bounds and that
/// bf16 is not f32.
private func checkGemm(_ kernel: BF16Kernel) {
    let ub = 0x1p-9, u = 0x1p-24
    for (m, n, k) in [(13, 37, 77), (100, 70, 600), (9, 530, 31), (1, 1, 1), (130, 600, 300)] {
        for transA in [false, true] {
            for transB in [false, true] {
                let a = randomArray(m * k, seed: UInt64(m * 7 + k), scale: 1.5), b = randomArray(k * n, seed: UInt64(n * 13 + k))
                let lda = transA ? m : k, ldb = transB ? k : n
                func A(_ i: Int, _ p: Int) -> Float { transA ? a[p * lda + i] : a[i * lda + p] }
                func B(_ p: Int, _ j: Int) -> Float { transB ? b[j * ldb + p] : b[p * ldb + j] }
                func bf(_ x: Float) -> Double { Double(Float(bitPattern: UInt32(kd_bf16_from_f32(x)) << 16)) }
                var c = [Float](repeating: .nan, count: m * n), f32 = c  // beta 0: C is never read
                BF16.$kernel.withValue(kernel) {
                    gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1, a: a, lda: lda, b: b, ldb: ldb, beta: 0, c: &c, ldc: n)
                }
                gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1, a: a, lda: lda, b: b, ldb: ldb, beta: 0, c: &f32, ldc: n)
                let gamma = Double(k) * u / (1 - Double(k) * u)
                var worstOwn = 0.0, worstBF16 = 0.0, worstF32 = 0.0
                for i in 0..<m {
                    for j in 0..<n {
                        var exact = 0.0, own = 0.0, s = 0.0, sOwn = 0.0
                        for p in 0..<k {
                            let x = A(i, p), y = B(p, j)
                            exact += Double(x) * Double(y)
                            own += bf(x) * bf(y)
                            s += abs(Double(x) * Double(y))
                            sOwn += abs(bf(x) * bf(y))
                        }
                        let v = Double(c[i * n + j])
                        let ownBound = gamma * sOwn, bound = (2 * ub + ub * ub) * s + gamma * (1 + ub) * (1 + ub) * s
                        #expect(abs(v - own) <= ownBound, "\(kernel) \(m)×\(n)×\(k) tA \(transA) tB \(transB) [\(i),\(j)]: \(v) vs Σ ã b̃ = \(own)")
                        #expect(abs(v - exact) <= bound, "\(kernel) [\(i),\(j)]: |\(v) − \(exact)| > \(bound)")
                        worstOwn = max(worstOwn, abs(v - own) / max(ownBound, .leastNormalMagnitude))
                        worstBF16 = max(worstBF16, abs(v - exact))
                        worstF32 = max(worstF32, abs(Double(f32[i * n + j]) - exact))
                    }
                }
                if k > 1 { #expect(worstBF16 > 10 * worstF32, "\(kernel) \(m)×\(n)×\(k): error \(worstBF16) is f32's (\(worstF32)): were the operands rounded?") }
            }
        }
    }
}

@Test(arguments: [BF16Kernel.rounded, .emulated])
func bf16GemmMeetsItsErrorBounds(kernel: BF16Kernel) { checkGemm(kernel) }

@Test(.enabled(if: BF16.cpuHasAVX512BF16, "this CPU has no AVX512-BF16"))
func avx512BF16GemmMeetsItsErrorBounds() { checkGemm(.avx512) }

/// The kernel against the rounded reference with alpha, beta and a C inside a wider matrix (ldc > n).
@Test(arguments: [BF16Kernel.emulated] + (BF16.cpuHasAVX512BF16 ? [.avx512] : []))
func bf16GemmAppliesAlphaAndBetaInsideAWiderC(kernel: BF16Kernel) {
    let m = 19, n = 45, k = 300, ldc = 50
    let a = randomArray(m * k, seed: 3), b = randomArray(n * k, seed: 4), c0 = randomArray(m * ldc, seed: 5)
    var got = c0, want = c0
    BF16.$kernel.withValue(kernel) {
        gemm(transA: false, transB: true, m: m, n: n, k: k, alpha: 0.5, a: a, lda: k, b: b, ldb: k, beta: 1, c: &got, ldc: ldc)
    }
    BF16.$kernel.withValue(.rounded) {
        gemm(transA: false, transB: true, m: m, n: n, k: k, alpha: 0.5, a: a, lda: k, b: b, ldb: k, beta: 1, c: &want, ldc: ldc)
    }
    for i in 0..<m {
        for j in 0..<ldc {
            if j >= n { #expect(got[i * ldc + j] == c0[i * ldc + j], "column \(j) past n was written"); continue }
            // both sum the same exact products in f32, in different orders: within 2γ_K of Σ|terms| + |C0|
            let tol = 2 * Double(k + 2) * 0x1p-24 * (Double(k) * 4 + abs(Double(c0[i * ldc + j])))
            #expect(abs(Double(got[i * ldc + j]) - Double(want[i * ldc + j])) <= tol, "[\(i),\(j)]")
        }
    }
}

@Test func bf16PrecisionFallsBackToF32WithOneWarning() throws {
    #expect(try BF16.resolve(bf16: false, environment: [:]) == (nil, nil))
    #expect(throws: KDError.invalidInput(what: "DISTILL_BF16_PRODUCTS", expected: "vdpbf16ps or fma", found: "'dp'")) {
        try BF16.resolve(bf16: true, environment: ["DISTILL_BF16_PRODUCTS": "dp"])
    }
    let off = try BF16.resolve(bf16: true, environment: ["DISTILL_BF16_KERNEL": "off"])
    #expect(off.kernel == nil && off.warning == "warning: train.precision bf16: DISTILL_BF16_KERNEL=off, computing in f32")
    let auto = try BF16.resolve(bf16: true, environment: [:])
    if BF16.cpuHasAVX512BF16 {
        #expect(auto.kernel == .avx512 && auto.warning == nil)
    } else {
        #expect(auto.kernel == nil && auto.warning?.contains("needs a CPU with AVX512-BF16") == true)
    }
    #expect(try BF16.resolve(bf16: true, environment: ["DISTILL_BF16_KERNEL": "rounded"]).kernel == .rounded)
    #expect(throws: KDError.invalidInput(what: "DISTILL_BF16_KERNEL", expected: "avx512, rounded, emulated or off", found: "'bf17'")) {
        try BF16.resolve(bf16: true, environment: ["DISTILL_BF16_KERNEL": "bf17"])
    }
}

/// Split over threads (rows when m ≥ n, columns otherwise), every element is still summed by one thread in the same
/// order: 2 and 3 threads give 1 thread's result bit for bit, on both splits and ragged edges.
@Test(arguments: [BF16Kernel.emulated] + (BF16.cpuHasAVX512BF16 ? [.avx512] : []))
func bf16GemmSplitOverThreadsIsOneThreadsBitForBit(kernel: BF16Kernel) {
    for (m, n, k) in [(70, 20, 90), (11, 100, 40)] {
        let a = randomArray(m * k, seed: 21), b = randomArray(n * k, seed: 22)
        func run(_ threads: Int) -> [Float] {
            var c = [Float](repeating: 0, count: m * n)
            bf16GEMM(kernel, threads: threads, transA: false, transB: true, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: b, ldb: k,
                     beta: 0, c: &c, ldc: n)
            return c
        }
        let one = run(1)
        #expect(one.allSatisfy { $0 != 0 })
        for t in [2, 3] { #expect(run(t) == one, "\(kernel) \(m)×\(n)×\(k) on \(t) threads") }
    }
}

/// Empty products: k = 0 scales C by beta (as BLAS does), m = 0 or n = 0 touches nothing.
@Test(arguments: [BF16Kernel.rounded, .emulated] + (BF16.cpuHasAVX512BF16 ? [.avx512] : []))
func bf16GemmOfEmptyShapesScalesOrLeavesC(kernel: BF16Kernel) {
    let a: [Float] = [1, 2, 3], b: [Float] = [4, 5, 6]
    var c: [Float] = [2, 4, 6, 8, 10, 12]
    bf16GEMM(kernel, threads: 1, transA: false, transB: true, m: 2, n: 3, k: 0, alpha: 1, a: a, lda: 1, b: b, ldb: 1, beta: 0.5, c: &c, ldc: 3)
    #expect(c == [1, 2, 3, 4, 5, 6], "\(kernel)")
    for (m, n) in [(0, 3), (2, 0)] {
        bf16GEMM(kernel, threads: 2, transA: false, transB: true, m: m, n: n, k: 1, alpha: 1, a: a, lda: 1, b: b, ldb: 1, beta: 0, c: &c, ldc: 3)
        #expect(c == [1, 2, 3, 4, 5, 6], "\(kernel) \(m)×\(n)")
    }
}

/// The bf16 attention (query blocks of 64 over the keys they can see, (batch, head) pairs over the threads) against
/// the f32 path on the same inputs: forward output, probabilities (exactly 0 where masked) and the three gradients,
/// with windows, grouped heads, ragged blocks and cached positions (pos0 > 0). bf16 rounds QKᵀ's and PV's operands
/// (unit roundoff u_b = 2⁻⁹); with |q|,|k|,|v| ~ 1 and 16-wide heads each result is within a few u_b of f32 relative
/// to the tensor's largest entry: 2⁻⁵ of it bounds that with room, and a wrong key range, head or block offset gives
/// errors of the entries' own size. The result is the same bit for bit on 1, 2 and 3 threads.
@Test(arguments: [BF16Kernel.emulated] + (BF16.cpuHasAVX512BF16 ? [.avx512] : []))
func bf16AttentionIsTheF32PathWithinBF16Rounding(kernel: BF16Kernel) {
    let hs = 16
    let cases: [(b: Int, tq: Int, tk: Int, pos0: Int, nh: Int, nkv: Int, window: Int)] = [
        (2, 150, 150, 0, 6, 2, 0), (1, 130, 130, 0, 2, 2, 40), (2, 70, 100, 30, 3, 1, 0), (1, 5, 5, 0, 1, 1, 0),
    ]
    for c in cases {
        var shape = AttentionShape(b: c.b, tq: c.tq, tk: c.tk, nh: c.nh, nkv: c.nkv, hs: hs, pos0: c.pos0)
        shape.window = c.window
        let q = randomArray(c.b * c.tq * c.nh * hs, seed: 31), k = randomArray(c.b * c.tk * c.nkv * hs, seed: 32)
        let v = randomArray(c.b * c.tk * c.nkv * hs, seed: 33), dout = randomArray(q.count, seed: 34)
        func run(_ kernel: BF16Kernel?, threads: Int) -> [[Float]] {
            attentionRun(kernel, threads: threads, shape: shape, q: q, k: k, v: v, dout: dout, dq0: 0.5, dkv0: 0.25)
        }
        let want = run(nil, threads: 1), got = run(kernel, threads: 2)
        for (name, (g, w)) in zip(["out", "probs", "dq", "dk", "dv"], zip(got, want)) {
            let scale = w.map { abs($0) }.max()!, worst = zip(g, w).map { abs($0 - $1) }.max()!
            #expect(worst <= 0x1p-5 * scale, "\(kernel) \(c) \(name): |bf16 − f32| up to \(worst), largest entry \(scale)")
            if c.tq > 5 { #expect(worst > 0, "\(kernel) \(c) \(name): bf16 equals f32 exactly: was the bf16 path taken?") }
        }
        // the mask: probabilities exactly 0 outside each query's keys
        let probs = got[1]
        for bh in 0..<(c.b * c.nh) {
            for i in 0..<c.tq {
                let valid = c.pos0 + i + 1, first = c.window > 0 ? max(0, valid - c.window) : 0
                for j in 0..<c.tk where j < first || j >= valid {
                    #expect(probs[(bh * c.tq + i) * c.tk + j] == 0, "\(c) [\(bh), \(i), \(j)] is masked")
                }
            }
        }
        for t in [1, 3] { #expect(run(kernel, threads: t) == got, "\(kernel) \(c) on \(t) threads") }
    }
}

/// The tiled bf16 attention forward (keys and values packed once per key/value head, 8-query panels times only the
/// 32-key tiles they see) is the blocked one (a GEMM per 64-query block over its keys) bit for bit: outputs and saved
/// probabilities, and the outputs again when the probabilities stay in the thread's buffer (`probs` nil) — with
/// grouped heads, ragged panels and tiles (77 queries, 40-wide heads), cached positions (pos0 > 0) and more than 256
/// keys (two depth blocks of the PV product), on 1 and 2 threads. A wrong tile range, panel end or depth block gives
/// other sums, and a skipped tile leaves a NaN (the buffers start as NaN).
@Test(arguments: [BF16Kernel.emulated] + (BF16.cpuHasAVX512BF16 ? [.avx512] : []))
func tiledAttentionIsTheBlockedAttentionBitForBit(kernel: BF16Kernel) {
    let cases: [(b: Int, tq: Int, tk: Int, pos0: Int, nh: Int, nkv: Int, hs: Int)] = [
        (2, 150, 150, 0, 6, 2, 64), (1, 77, 77, 0, 2, 1, 40), (2, 70, 100, 30, 3, 1, 32), (1, 300, 300, 0, 2, 1, 16),
        (1, 5, 5, 0, 1, 1, 64), (1, 1, 41, 40, 3, 3, 64),
    ]
    for c in cases {
        let shape = AttentionShape(b: c.b, tq: c.tq, tk: c.tk, nh: c.nh, nkv: c.nkv, hs: c.hs, pos0: c.pos0)
        let q = randomArray(c.b * c.tq * c.nh * c.hs, seed: 41), k = randomArray(c.b * c.tk * c.nkv * c.hs, seed: 42)
        let v = randomArray(c.b * c.tk * c.nkv * c.hs, seed: 43)
        func run(tiled: Bool, keep: Bool, threads: Int) -> (out: [Float], probs: [Float]) {
            var out = [Float](repeating: .nan, count: q.count), probs = [Float](repeating: .nan, count: c.b * c.nh * c.tq * c.tk)
            let saved = Parallel.threads
            Parallel.threads = threads
            defer { Parallel.threads = saved }
            if tiled {
                probs.withUnsafeMutableBufferPointer { p in
                    attentionForwardTiled(kernel, out: &out, probs: keep ? p.baseAddress! : nil, q: q, k: k, v: v, shape: shape)
                }
            } else {
                attentionForwardBlocked(kernel, out: &out, probs: &probs, q: q, k: k, v: v, shape: shape)
            }
            return (out, probs)
        }
        func differing(_ x: [Float], _ y: [Float]) -> Int { zip(x, y).filter { $0.bitPattern != $1.bitPattern }.count }
        let want = run(tiled: false, keep: true, threads: 1)
        #expect(!want.out.contains { $0.isNaN } && !want.probs.contains { $0.isNaN }, "\(c): the blocked path fills both")
        for threads in [1, 2] {
            let got = run(tiled: true, keep: true, threads: threads)
            #expect(differing(got.out, want.out) == 0, "\(kernel) \(c) on \(threads) threads: outputs differ")
            #expect(differing(got.probs, want.probs) == 0, "\(kernel) \(c) on \(threads) threads: probabilities differ")
            let unsaved = run(tiled: true, keep: false, threads: threads)
            #expect(differing(unsaved.out, want.out) == 0, "\(kernel) \(c) on \(threads) threads: outputs differ, probabilities not kept")
            #expect(unsaved.probs.allSatisfy { $0.isNaN }, "\(c): probabilities not kept are not written")
        }
    }
}

/// The fused gate/up/SwiGLU pass of a frozen model (two packed weights, the sums kept per 32-column panel) is the two
/// GEMMs followed by ``swiGLUForward`` bit for bit: rows crossing the 384-row blocks and ragged 8-row tiles, a depth
/// crossing the 256-deep blocks with a remainder, a last panel of 16 columns, on 1 and 2 threads. A wrong depth block,
/// epilogue or panel offset gives other bits; a row left unwritten stays NaN.
@Test(.enabled(if: BF16.cpuHasAVX512BF16 && RowKernels.avx512, "the fused pass needs AVX512-BF16 and AVX-512 row kernels"))
func fusedSwiGLUIsTheTwoGEMMsAndTheSwiGLULanesBitForBit() {
    for (n, c, f) in [(400, 300, 80), (13, 64, 32), (8, 576, 1536)] {
        let x = randomArray(n * c, seed: UInt64(61 + n)), wg = randomArray(f * c, seed: 62), wu = randomArray(f * c, seed: 63)
        let gate = PackedBF16(wg, n: f, k: c, rowStride: c, depthStride: 1), up = PackedBF16(wu, n: f, k: c, rowStride: c, depthStride: 1)
        var g = [Float](repeating: 0, count: n * f), u = g, want = g
        BF16.$kernel.withValue(.avx512) {
            gate.multiply(m: n, a: x, lda: c, beta: 0, c: &g, ldc: f)
            up.multiply(m: n, a: x, lda: c, beta: 0, c: &u, ldc: f)
        }
        swiGLUForward(out: &want, gate: g, up: u, n: n, f: f)
        for threads in [1, 2] {
            var got = [Float](repeating: .nan, count: n * f)
            let saved = Parallel.threads
            Parallel.threads = threads
            defer { Parallel.threads = saved }
            let ran = BF16.$kernel.withValue(.avx512) { bf16SwiGLUForward(h: &got, inp: x, n: n, gate: gate, up: up) }
            #expect(ran, "the fused pass ran")
            let differing = zip(got, want).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0, "\((n, c, f)) on \(threads) threads: \(differing) of \(n * f) elements differ")
        }
    }
}

/// Several packed weights multiplying one input packed once per thread (a frozen model's q, k, v) give what each
/// weight's own multiply gives, bit for bit: ragged rows and columns, a depth crossing the 256-deep blocks, on 1, 2 and
/// 3 threads. A wrong row offset into the shared packing, or a stale packing, gives other bits.
@Test(arguments: [BF16Kernel.emulated] + (BF16.cpuHasAVX512BF16 ? [.avx512] : []))
func weightsSharingOnePackedInputMultiplyAsEachAlone(kernel: BF16Kernel) {
    let n = 45, k = 300, widths = [70, 20, 33]
    let x = randomArray(n * k, seed: 71)
    let weights = widths.enumerated().map { i, w in PackedBF16(randomArray(w * k, seed: UInt64(72 + i)), n: w, k: k, rowStride: k, depthStride: 1) }
    let want: [[Float]] = weights.map { w in
        var out = [Float](repeating: 0, count: n * w.n)
        BF16.$kernel.withValue(kernel) { w.multiply(m: n, a: x, lda: k, beta: 0, c: &out, ldc: w.n) }
        return out
    }
    for threads in [1, 2, 3] {
        let outs = widths.map { UnsafeMutablePointer<Float>.allocate(capacity: n * $0) }
        defer { outs.forEach { $0.deallocate() } }
        for (o, w) in zip(outs, widths) { o.initialize(repeating: .nan, count: n * w) }
        let saved = Parallel.threads
        Parallel.threads = threads
        defer { Parallel.threads = saved }
        let ran = BF16.$kernel.withValue(kernel) { bf16MultiplySharingInput(n: n, inp: x, Array(zip(weights, outs)).map { ($0, $1) }) }
        #expect(ran)
        for (i, (o, w)) in zip(outs, widths).enumerated() {
            let got = Array(UnsafeBufferPointer(start: o, count: n * w))
            let differing = zip(got, want[i]).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0, "\(kernel) weight \(i) on \(threads) threads: \(differing) of \(n * w) differ")
        }
    }
}

/// A matrix packed ahead multiplies to exactly what the kernel gives on the unpacked f32 matrix (same rounding, same
/// panels, same order of sums), on both thread splits (m ≥ n by rows, m < n by 32-column tiles landing mid-matrix),
/// ragged columns, a depth crossing the 256-deep blocks with an odd remainder, transposed A, alpha and beta; packed in
/// either orientation of its source; and it unpacks to the source rounded to bf16.
@Test(arguments: [BF16Kernel.emulated] + (BF16.cpuHasAVX512BF16 ? [.avx512] : []))
func packedBF16MultipliesAsTheKernelDoesOnTheUnpackedMatrix(kernel: BF16Kernel) {
    for (m, n, k) in [(70, 45, 301), (20, 200, 77), (3, 1, 5)] {
        let w = randomArray(n * k, seed: UInt64(51 + n)), wt = (0..<(k * n)).map { w[($0 % n) * k + $0 / n] }  // wt = wᵀ [k, n]
        let rows = PackedBF16(w, n: n, k: k, rowStride: k, depthStride: 1)
        let cols = PackedBF16(wt, n: n, k: k, rowStride: 1, depthStride: n)
        var unpacked = [Float](repeating: .nan, count: n * k)
        rows.unpack(columns: 0, n, into: &unpacked, ldo: k)
        var rounded = w
        kd_bf16_round_f32(w, &rounded, w.count)
        #expect(unpacked == rounded, "\(m)×\(n)×\(k): unpacked is not the source rounded to bf16")
        for transA in [false, true] {
            let a = randomArray(m * k, seed: 61), lda = transA ? m : k, c0 = randomArray(m * n, seed: 62)
            for threads in [1, 2] {
                var want = c0, got = c0, gotT = c0
                bf16GEMM(kernel, threads: threads, transA: transA, transB: true, m: m, n: n, k: k, alpha: 0.75, a: a, lda: lda,
                         b: w, ldb: k, beta: 0.5, c: &want, ldc: n)
                let saved = Parallel.threads
                Parallel.threads = threads
                BF16.$kernel.withValue(kernel) {
                    rows.multiply(transA: transA, m: m, alpha: 0.75, a: a, lda: lda, beta: 0.5, c: &got, ldc: n)
                    cols.multiply(transA: transA, m: m, alpha: 0.75, a: a, lda: lda, beta: 0.5, c: &gotT, ldc: n)
                }
                Parallel.threads = saved
                #expect(got == want, "\(kernel) \(m)×\(n)×\(k) transA \(transA) on \(threads) threads")
                #expect(gotT == want, "\(kernel) \(m)×\(n)×\(k) packed from the transpose, transA \(transA)")
            }
        }
    }
}

/// Without a bf16 kernel (f32, or `rounded`) a packed weight multiplies its bf16 values in the task's arithmetic, and
/// its rows are its unpacked columns: an embedding lookup and an f32 evaluation of a packed teacher stay right.
@Test func bf16WeightFallsBackToItsBF16ValuesInF32() {
    let oc = 300, c = 70, n = 9
    let w = randomArray(oc * c, seed: 71), x = randomArray(n * c, seed: 72)
    let weight = BF16Weight(w, oc: oc, c: c)
    var rounded = w
    kd_bf16_round_f32(w, &rounded, w.count)
    var got = [Float](repeating: .nan, count: n * oc), want = got
    weight.forward(out: &got, inp: x, n: n, accumulate: false)
    matmulForward(out: &want, inp: x, weight: rounded, n: n, c: c, oc: oc)
    for i in 0..<(n * oc) { #expect(abs(got[i] - want[i]) <= 1e-5 * (1 + abs(want[i])), "[\(i)]") }
    var row = [Float](repeating: .nan, count: c)
    weight.row(123, into: &row)
    #expect(row == Array(rounded[(123 * c)..<(124 * c)]))
}

/// A bf16 LM head over several chunks packs its dense weight once per call, in the two layouts the logits and the input
/// gradient read: losses and both gradients are, bit for bit, those of the same chunks multiplied by the kernel on
/// the unpacked weight (logits = x·Wᵀ, dinp += dlogits·W, dweight += dlogitsᵀ·x per chunk).
@Test(arguments: [BF16Kernel.emulated] + (BF16.cpuHasAVX512BF16 ? [.avx512] : []))
func bf16HeadPackedOncePerCallIsTheChunkedKernelBitForBit(kernel: BF16Kernel) {
    let n = 50, c = 40, v = 300, rows = 16
    let inp = randomArray(n * c, seed: 81), w = randomArray(v * c, seed: 82, scale: 0.5)
    let targets = (0..<n).map { Int32($0 % 7 == 3 ? -1 : ($0 * 31) % v) }
    var losses = [Float](repeating: .nan, count: n), dinp = randomArray(n * c, seed: 83), dweight = randomArray(v * c, seed: 84)
    var wantDinp = dinp, wantDweight = dweight, wantLosses = losses
    BF16.$kernel.withValue(kernel) {
        lmHeadCrossEntropyForwardBackward(losses: &losses, dinp: &dinp, dweight: &dweight, inp: inp, weight: w, targets: targets,
                                          n: n, c: c, v: v, lossScale: 0.3, scratch: LMHeadScratch(rows: rows, v: v))
    }
    var logits = [Float](repeating: 0, count: rows * v)
    for r0 in stride(from: 0, to: n, by: rows) {
        let m = min(rows, n - r0)
        inp.withUnsafeBufferPointer { x in
            bf16GEMM(kernel, threads: Parallel.threads, transA: false, transB: true, m: m, n: v, k: c, alpha: 1, a: x.baseAddress! + r0 * c,
                     lda: c, b: w, ldb: c, beta: 0, c: &logits, ldc: v)
            for i in 0..<m {
                let t = Int(targets[r0 + i])
                logits.withUnsafeMutableBufferPointer { l in
                    if t < 0 { wantLosses[r0 + i] = 0; (l.baseAddress! + i * v).update(repeating: 0, count: v) }
                    else { wantLosses[r0 + i] = crossEntropyRow(l.baseAddress! + i * v, target: t, v: v, gradScale: 0.3) }
                }
            }
            wantDinp.withUnsafeMutableBufferPointer { d in
                bf16GEMM(kernel, threads: Parallel.threads, transA: false, transB: false, m: m, n: c, k: v, alpha: 1, a: logits, lda: v,
                         b: w, ldb: c, beta: 1, c: d.baseAddress! + r0 * c, ldc: c)
            }
            bf16GEMM(kernel, threads: Parallel.threads, transA: true, transB: false, m: v, n: c, k: m, alpha: 1, a: logits, lda: v,
                     b: x.baseAddress! + r0 * c, ldb: c, beta: 1, c: &wantDweight, ldc: c)
        }
    }
    #expect(losses == wantLosses)
    #expect(dinp == wantDinp)
    #expect(dweight == wantDweight)
}

/// The AVX512-BF16 kernel's two ways of forming its products — vdpbf16ps, and the bf16 values widened to f32 and
/// multiplied by FMAs (odd pair element first, then even, under MXCSR's DAZ and FTZ; the default on Intel's CPUs, whose
/// vdpbf16ps issues at half the products of two FMAs a cycle) — give the same bits: GEMMs of ragged shapes with either
/// operand transposed, alpha and beta, depths crossing the 256-deep blocks; a packed weight; the tiled attention forward
/// and its backward (keys within one block and across two, queries from position 0 and after a cached prefix); the
/// fused SwiGLU pass; on 1 and 2 threads. The operands hold bf16 denormals (both read them as 0)
/// and a row and a column of 1e-20s, whose products (1e-40) and their sums are below f32's normal range (both flush
/// them to 0): a widening that kept denormals, a wrong pair order or a lost FTZ gives other bits there.
@Test(.enabled(if: BF16.cpuHasAVX512BF16 && RowKernels.avx512, "the vdpbf16ps products need AVX512-BF16"))
func fmaProductsAreTheVdpbf16psProductsBitForBit() {
    func both(_ what: String, _ body: () -> [Float]) {
        let dp = BF16.$productsOverride.withValue(.vdpbf16ps) { BF16.$kernel.withValue(.avx512, operation: body) }
        let fma = BF16.$productsOverride.withValue(.fma) { BF16.$kernel.withValue(.avx512, operation: body) }
        let differing = zip(dp, fma).filter { $0.bitPattern != $1.bitPattern }
        #expect(dp.count == fma.count && differing.isEmpty,
                "\(what): \(differing.count) of \(dp.count) elements differ, e.g. vdpbf16ps \(differing.first?.0 ?? 0) vs fma \(differing.first?.1 ?? 0)")
    }
    func operand(_ rows: Int, _ k: Int, seed: UInt64) -> [Float] {
        var x = randomArray(rows * k, seed: seed)
        for p in 0..<k { x[p] = 1e-20 }  // row 0: products with the other operand's row 0 underflow
        for i in stride(from: 3, to: x.count, by: 17) { x[i] = 1e-39 }  // bf16 denormals
        return x
    }
    for (m, n, k, transA, transB) in [(19, 45, 300, false, true), (70, 33, 600, true, false), (8, 64, 64, false, true), (130, 20, 17, false, false),
                                              (1, 100, 600, false, true), (5, 70, 40, true, false)] {
        let a = operand(transA ? k : m, transA ? m : k, seed: 71), b = operand(transB ? n : k, transB ? k : n, seed: 72)
        let c0 = randomArray(m * n, seed: 73)
        for threads in [1, 2] {
            both("gemm \(m)×\(n)×\(k) on \(threads) threads") { () -> [Float] in
                var c = c0
                bf16GEMM(.avx512, threads: threads, transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, a: a,
                         lda: transA ? m : k, b: b, ldb: transB ? k : n, beta: 1, c: &c, ldc: n)
                return c
            }
        }
        if transB {
            let w = PackedBF16(b, n: n, k: k, rowStride: k, depthStride: 1)
            both("packed weight \(n)×\(k)") { () -> [Float] in
                var c = [Float](repeating: 0, count: m * n)
                w.multiply(m: m, a: a, lda: k, beta: 0, c: &c, ldc: n)
                return c
            }
        }
    }
    // one key block; then keys over two 256-deep blocks of the values, queries after a cached prefix; a decode step
    // (fewer rows than a tile: B widened panel by panel)
    for (tq, tk, pos0) in [(150, 150, 0), (280, 300, 20), (5, 300, 295)] {
        let shape = AttentionShape(b: 2, tq: tq, tk: tk, nh: 4, nkv: 2, hs: 40, pos0: pos0)
        let q = randomArray(2 * tq * 4 * 40, seed: 74), k = randomArray(2 * tk * 2 * 40, seed: 75), v = randomArray(k.count, seed: 76)
        let dout = randomArray(q.count, seed: 77)
        both("attention forward and backward, \(tq) queries from position \(pos0), \(tk) keys") { () -> [Float] in
            var out = [Float](repeating: 0, count: q.count), probs = [Float](repeating: 0, count: 2 * 4 * tq * tk)
            var dq = [Float](repeating: 0, count: q.count), dk = [Float](repeating: 0, count: k.count), dv = dk
            var scratch = [Float](repeating: 0, count: tq * tk)
            attentionForward(out: &out, probs: &probs, q: q, k: k, v: v, shape: shape)
            attentionBackward(dq: &dq, dk: &dk, dv: &dv, scratch: &scratch, dout: dout, probs: probs, q: q, k: k, v: v, shape: shape)
            return out + probs + dq + dk + dv
        }
    }
    let (rows, c, f) = (400, 300, 80)
    let x = operand(rows, c, seed: 78), gate = PackedBF16(operand(f, c, seed: 79), n: f, k: c, rowStride: c, depthStride: 1)
    let up = PackedBF16(randomArray(f * c, seed: 80), n: f, k: c, rowStride: c, depthStride: 1)
    both("fused SwiGLU") { () -> [Float] in
        var h = [Float](repeating: .nan, count: rows * f)
        #expect(bf16SwiGLUForward(h: &h, inp: x, n: rows, gate: gate, up: up), "the fused pass ran")
        return h
    }
}
