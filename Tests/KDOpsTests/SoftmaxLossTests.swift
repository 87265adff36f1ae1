// Softmax, log-softmax, cross-entropy and the fused chunked LM head: invariants, references, finite differences.
import CKDKernels
import Foundation
import KDCore
import KDOps
import KDTestSupport
import Testing

@Test func simdExpMatchesLibm() {
    var worst: Double = 0
    var x: Float = -87
    while x < 88 {
        let e = Double(fastExp(x)), r = Foundation.exp(Double(x))
        worst = max(worst, abs(e - r) / r)
        x += 0.0137
    }
    #expect(worst < 5e-7)
    #expect(fastExp(0) == 1)
}

/// ln x within 2 ulp of the float64 log over every binade a probability or a mixture of two can take (denormals
/// included), and the edge values: 0 → −∞, negative → NaN, NaN → NaN, ∞ → ∞, 1 → 0.
@Test func simdLogMatchesLibm() {
    var worstUlps: Double = 0
    var x: Float = Float.leastNonzeroMagnitude
    while x < 1e30 {
        let l = Double(fastLog(x)), r = Foundation.log(Double(x))
        // ulps of the float result's magnitude (at least the smallest normal's, so ln x ≈ 0 near 1 is not divided by 0)
        worstUlps = max(worstUlps, abs(l - r) / Double(max(Float(abs(r)), Float.leastNormalMagnitude).ulp))
        x = x.nextUp * 1.000_731
    }
    #expect(worstUlps <= 2, "worst \(worstUlps) ulp")
    #expect(fastLog(1) == 0 && fastLog(0) == -.infinity && fastLog(-1).isNaN && fastLog(.nan).isNaN && fastLog(.infinity) == .infinity)
    // the lanes are the scalar's
    let xs = V16((0..<16).map { Float($0) * 0.37 + 1e-3 })
    let lanes = simdLog(xs)
    for i in 0..<16 { #expect(lanes[i] == fastLog(xs[i])) }
}

@Test func softmaxRowsSumToOneAndBackwardMatches() {
    let n = 3, v = 37  // v not a multiple of 16: exercises the scalar tail
    let inp = randomArray(n * v, seed: 30, scale: 3).enumerated().map { $0.offset == 5 ? $0.element + 80 : $0.element }
    let dout = randomArray(n * v, seed: 31)
    func f(_ x: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        out.withUnsafeMutableBufferPointer { softmaxForward(out: $0.baseAddress!, inp: x, n: n, v: v) }
        return out
    }
    let y = f(inp)
    for r in 0..<n { #expect(abs(y[(r * v)..<(r * v + v)].reduce(0, +) - 1) < 1e-5) }
    #expect(y.allSatisfy { $0.isFinite && $0 >= 0 })
    var dinp = [Float](repeating: 0, count: inp.count)
    dinp.withUnsafeMutableBufferPointer { softmaxBackward(dinp: $0.baseAddress!, dout: dout, out: y, n: n, v: v) }
    #expect(maxRelError(dinp, numericalGradient(inp, eps: 1e-3) { fakeLoss(f($0), dout) }) < 2e-3)
}

@Test func logSoftmaxIsStableAndBackwardMatches() {
    let n = 2, v = 40
    let inp = randomArray(n * v, seed: 32, scale: 2), dout = randomArray(n * v, seed: 33)
    func f(_ x: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        out.withUnsafeMutableBufferPointer { logSoftmaxForward(out: $0.baseAddress!, inp: x, n: n, v: v) }
        return out
    }
    // shifting a row by a huge constant changes nothing (max subtracted first)
    let shifted = f(inp.map { $0 + 1e4 }), plain = f(inp)
    #expect(maxRelError(shifted, plain) < 1e-3)
    var dinp = [Float](repeating: 0, count: inp.count)
    dinp.withUnsafeMutableBufferPointer { logSoftmaxBackward(dinp: $0.baseAddress!, dout: dout, out: plain, n: n, v: v) }
    #expect(maxRelError(dinp, numericalGradient(inp) { fakeLoss(f($0), dout) }) < 2e-3)
}

@Test func fusedChunkedLMHeadMatchesMaterializedReferenceAndFiniteDifferences() {
    let n = 7, c = 6, v = 50, chunk = 3
    let inp = randomArray(n * c, seed: 34), w = randomArray(v * c, seed: 35, scale: 0.5)
    let targets: [Int32] = [3, -1, 49, 0, 7, -1, 20]
    let scratch = LMHeadScratch(rows: chunk, v: v)
    func lossSum(_ x: [Float], _ w: [Float]) -> Double {
        var losses = [Float](repeating: 0, count: n)
        losses.withUnsafeMutableBufferPointer { l in w.withUnsafeBufferPointer { wp in
            lmHeadCrossEntropyForward(losses: l.baseAddress!, inp: x, head: DenseWeight(wp.baseAddress!, oc: v, c: c),
                                      targets: targets, n: n, scratch: scratch)
        } }
        return losses.reduce(0) { $0 + Double($1) }
    }
    // reference: materialize all logits, then plain cross-entropy
    var logits = [Float](repeating: 0, count: n * v), ref = [Float](repeating: 0, count: n)
    logits.withUnsafeMutableBufferPointer { matmulForward(out: $0.baseAddress!, inp: inp, weight: w, n: n, c: c, oc: v) }
    ref.withUnsafeMutableBufferPointer { crossEntropyForward(losses: $0.baseAddress!, logits: logits, targets: targets, n: n, v: v) }
    var losses = [Float](repeating: 0, count: n), dinp = [Float](repeating: 0, count: n * c), dw = [Float](repeating: 0, count: v * c)
    let scale: Float = 1.0 / 5
    losses.withUnsafeMutableBufferPointer { l in dinp.withUnsafeMutableBufferPointer { di in dw.withUnsafeMutableBufferPointer { d in
        lmHeadCrossEntropyForwardBackward(losses: l.baseAddress!, dinp: di.baseAddress!, dweight: d.baseAddress!, inp: inp, weight: w,
                                          targets: targets, n: n, c: c, v: v, lossScale: scale, scratch: scratch)
    } } }
    for r in 0..<n { #expect(abs(losses[r] - ref[r]) < 1e-5); if targets[r] < 0 { #expect(losses[r] == 0) } }
    // cross-entropy of uniform logits is log v
    let zeroW = [Float](repeating: 0, count: v * c)
    #expect(abs(lossSum(inp, zeroW) - 5 * log(Double(v))) < 1e-4)
    #expect(maxRelError(dinp, numericalGradient(inp) { Double(scale) * lossSum($0, w) }) < 2e-3)
    #expect(maxRelError(dw, numericalGradient(w) { Double(scale) * lossSum(inp, $0) }) < 2e-3)
}

@Test func clipAndAdamW() {
    var g: [Float] = [3, 4, 0, 0]
    let norm = g.withUnsafeMutableBufferPointer { clipGradNorm($0.baseAddress!, count: 4, maxNorm: 1) }
    #expect(abs(norm - 5) < 1e-6)
    #expect(abs(g[0] - 0.6) < 1e-5 && abs(g[1] - 0.8) < 1e-5)
    // first AdamW step moves each parameter by ≈ lr·sign(g) (bias-corrected m̂/√v̂ = ±1) plus decay
    var p: [Float] = [1, -1, 2], m = [Float](repeating: 0, count: 3), v = m
    let grad: [Float] = [0.5, -2, 1e-3]
    p.withUnsafeMutableBufferPointer { pp in m.withUnsafeMutableBufferPointer { mm in v.withUnsafeMutableBufferPointer { vv in
        adamWUpdate(param: pp.baseAddress!, grad: grad, m: mm.baseAddress!, v: vv.baseAddress!, count: 3,
                    step: AdamWStep(lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, t: 1))
    } } }
    #expect(abs(p[0] - (1 - 0.1 * (1 + 0.1 * 1))) < 1e-5)
    #expect(abs(p[1] - (-1 - 0.1 * (-1 + 0.1 * -1))) < 1e-5)
    #expect(abs(p[2] - (2 - 0.1 * (1 + 0.1 * 2))) < 1e-4)
}

/// AdamW's 16-lane loop gives the scalar update's bits on every element (lanes, tail, thread splits), over several
/// steps with moments carried; the scalar reference is written out here.
@Test func adamWLanesEqualTheScalarUpdate() {
    let count = 16 * 1100 + 7
    let saved = Parallel.threads
    defer { Parallel.threads = saved }
    for threads in [1, 3] {
        Parallel.threads = threads
        var p = randomArray(count, seed: 11), m = [Float](repeating: 0, count: count), v = m
        var rp = p, rm = m, rv = v
        for t in 1...3 {
            let g = randomArray(count, seed: 12 + UInt64(t), scale: 0.1)
            let s = AdamWStep(lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, t: t)
            p.withUnsafeMutableBufferPointer { pp in m.withUnsafeMutableBufferPointer { mm in v.withUnsafeMutableBufferPointer { vv in
                adamWUpdate(param: pp.baseAddress!, grad: g, m: mm.baseAddress!, v: vv.baseAddress!, count: count, step: s)
            } } }
            let c1 = 1 / (1 - Foundation.pow(s.beta1, Float(t))), c2 = 1 / (1 - Foundation.pow(s.beta2, Float(t)))
            for i in 0..<count {
                rm[i] = s.beta1 * rm[i] + (1 - s.beta1) * g[i]
                rv[i] = s.beta2 * rv[i] + (1 - s.beta2) * g[i] * g[i]
                rp[i] -= s.lr * ((rm[i] * c1) / ((rv[i] * c2).squareRoot() + s.eps) + s.weightDecay * rp[i])
            }
        }
        #expect(zip(p, rp).allSatisfy { $0.bitPattern == $1.bitPattern }, "parameters, \(threads) threads")
        #expect(zip(m, rm).allSatisfy { $0.bitPattern == $1.bitPattern } && zip(v, rv).allSatisfy { $0.bitPattern == $1.bitPattern })
    }
}

@Test func nanLogitPoisonsTheLoss() {
    var logits: [Float] = [1, .nan, 2, 0.5]
    let loss = logits.withUnsafeMutableBufferPointer { crossEntropyRow($0.baseAddress!, target: 0, v: 4, gradScale: nil) }
    #expect(loss.isNaN)
    #expect(fastExp(.nan).isNaN)
}

/// rowArgmax is the first index of the largest value (scalar reference), whatever lane or tail it falls in, with ties
/// planted before and after it, NaNs that never win, and a row of −∞ (index 0).
@Test func rowArgmaxIsTheFirstLargestIndex() {
    func reference(_ x: [Float]) -> Int {
        var best = 0, m = -Float.infinity
        for (j, e) in x.enumerated() where e > m { m = e; best = j }
        return best
    }
    for v in [1, 15, 16, 17, 100, 1000] {
        for top in Set([0, v / 3, v - 1, min(v - 1, 15), min(v - 1, 16)]) {
            var x = randomArray(v, seed: UInt64(v * 31 + top))
            x[top] = 9
            if top + 5 < v { x[top + 5] = 9 }  // a later tie: the first still wins
            if top > 2 { x[top - 2] = .nan }
            #expect(rowArgmax(x, v) == top, "v \(v), largest at \(top)")
            #expect(reference(x) == top)
        }
    }
    #expect(rowArgmax([Float](repeating: -.infinity, count: 40), 40) == 0)
}

/// CKDKernels' AVX-512 e^x row loops (used by expRow and expShiftSum where the CPU has AVX-512) give every element
/// exactly ``simdExp``'s lane, and the same 16 accumulator lanes, on ordinary, clamped, tiny and special inputs.
@Test(.enabled(if: kd_cpu_has_avx512() == 1, "this CPU has no AVX-512 (expRow uses the Swift lanes)"))
func avx512ExpRowsAreTheSwiftLanesBitForBit() {
    var xs = randomArray(4096, seed: 90, scale: 30)
    let specials: [Float] = [0, -0, 1, -1, 88.72, 88.73, 89, 100, -87.3, -87.34, -87.4, -100, -104, .infinity, -.infinity, .nan,
                             -.nan, Float.leastNonzeroMagnitude, -Float.leastNormalMagnitude, 1e-30, Float.greatestFiniteMagnitude,
                             -Float.greatestFiniteMagnitude, 0.5 * 0.693_147_2, -0.5 * 0.693_147_2, 20.5, -20.5]
    for (i, s) in specials.enumerated() { xs[i * 7] = s }
    var swiftLanes = [Float](repeating: 0, count: xs.count), kernel = [Float](repeating: 0, count: xs.count)
    for i in stride(from: 0, to: xs.count, by: 16) {
        let e = simdExp(V16(xs[i..<(i + 16)]))
        for l in 0..<16 { swiftLanes[i + l] = e[l] }
    }
    kd_exp_avx512(&kernel, xs, xs.count)
    for i in xs.indices { #expect(kernel[i].bitPattern == swiftLanes[i].bitPattern, "e^\(xs[i]): \(kernel[i]) vs \(swiftLanes[i])") }
    // the shifted loop with its lane sums (finite inputs: a NaN lane would make every comparison of sums fail)
    let finite = xs.map { $0.isFinite ? $0 : 1 }, shift: Float = 3.25
    var acc = V16(repeating: 0), lanes = [Float](repeating: 0, count: 16)
    for i in stride(from: 0, to: finite.count, by: 16) {
        let e = simdExp(V16(finite[i..<(i + 16)]) - V16(repeating: shift))
        for l in 0..<16 { swiftLanes[i + l] = e[l] }
        acc += e
    }
    kd_exp_shift_avx512(&kernel, finite, finite.count, shift, &lanes)
    for i in finite.indices { #expect(kernel[i].bitPattern == swiftLanes[i].bitPattern) }
    for l in 0..<16 { #expect(lanes[l].bitPattern == acc[l].bitPattern) }
}

/// The AVX-512 SwiGLU lanes (swiGLUForward / swiGLUBackward where the CPU has AVX-512) are SwiGLU.swift's V16 lanes
/// bit for bit, on ordinary, saturating and special gates.
@Test(.enabled(if: kd_cpu_has_avx512() == 1, "this CPU has no AVX-512 (SwiGLU uses the Swift lanes)"))
func avx512SwiGLULanesAreTheSwiftLanesBitForBit() {
    let n = 1024
    var gate = randomArray(n, seed: 91, scale: 8)
    let specials: [Float] = [0, -0, 90, -90, 200, -200, .infinity, -.infinity, .nan, Float.leastNonzeroMagnitude, 1e-20, -1e-20]
    for (i, s) in specials.enumerated() { gate[i * 5] = s }
    let up = randomArray(n, seed: 92), dout = randomArray(n, seed: 93)
    let dgate0 = randomArray(n, seed: 94), dup0 = randomArray(n, seed: 95)
    var out = [Float](repeating: 0, count: n), dgate = dgate0, dup = dup0
    kd_swiglu_forward_avx512(&out, gate, up, n)
    kd_swiglu_backward_avx512(&dgate, &dup, dout, gate, up, n)
    // NaN lanes compare as NaN: which operand's NaN an instruction propagates (its sign) is the compiler's choice
    func bits(_ v: V16) -> [UInt32] { (0..<16).map { v[$0].isNaN ? 0x7FC0_0000 : v[$0].bitPattern } }
    func bits(_ a: ArraySlice<Float>) -> [UInt32] { a.map { $0.isNaN ? 0x7FC0_0000 : $0.bitPattern } }
    for i in stride(from: 0, to: n, by: 16) {
        let g = V16(gate[i..<(i + 16)]), u = V16(up[i..<(i + 16)]), d = V16(dout[i..<(i + 16)])
        let sg = 1 / (1 + simdExp(-g))
        let f = g * sg * u
        let dg = V16(dgate0[i..<(i + 16)]) + d * u * sg * (1 + g * (1 - sg))
        let du = V16(dup0[i..<(i + 16)]) + d * g * sg
        #expect(bits(out[i..<(i + 16)]) == bits(f), "forward lanes from \(i)")
        #expect(bits(dgate[i..<(i + 16)]) == bits(dg), "dgate lanes from \(i)")
        #expect(bits(dup[i..<(i + 16)]) == bits(du), "dup lanes from \(i)")
    }
}
