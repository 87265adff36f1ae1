// A frozen quantized matrix multiplied in 8-bit integers (CKDKernels/q8.c): activations quantized per block of 32 as
// llama.cpp does, the GGUF blocks read as unsigned integers with a scale and an offset. The reference is the same sum
// in Double: the dequantized matrix (KDQuant's ggml-exact dequantize) times the dequantized activations.
import CKDKernels
import Foundation
import KDCore
@testable import KDOps
@testable import KDQuant
import KDTestSupport
import Testing

let int8Capable = kd_cpu_has_avx512vnni() == 1 && BF16.cpuHasAVX512BF16

/// Activations quantized per block of 32 by the portable loop: qa, da, sa.
func quantizedRows(_ a: [Float], m: Int, k: Int) -> (qa: [Int8], da: [Float], sa: [Float]) {
    var qa = [Int8](repeating: 0, count: m * k), da = [Float](repeating: 0, count: m * k / 32), sa = da
    kd_q8_quantize_rows_ref(Int32(m), Int32(k), a, k, &qa, &da, &sa)
    return (qa, da, sa)
}

/// The AVX-512 quantization of activations is the portable loop's bit for bit: ordinary rows, a block of zeros, ties
/// (x·(1/d) exactly half-way between integers), huge and tiny blocks, negative zero.
@Test(.enabled(if: kd_cpu_has_avx512vnni() == 1, "this CPU has no AVX512-VNNI"))
func int8ActivationQuantizationIsThePortableLoop() {
    let m = 7, k = 160
    var a = randomArray(m * k, seed: 201, scale: 3)
    for t in 0..<32 { a[32 + t] = 0 }                                           // row 0, block 1: all zero (d = 0)
    for t in 0..<32 { a[k + t] = Float(t - 16) * 0.5 + (t == 0 ? 63.5 : 0) }  // ties at ±x.5 steps
    for t in 0..<32 { a[2 * k + 64 + t] = Float(t) * 1e30 }
    for t in 0..<32 { a[3 * k + 96 + t] = Float(t) * 1e-38 }
    a[4 * k + 5] = -0.0
    let ref = quantizedRows(a, m: m, k: k)
    var qa = [Int8](repeating: 0, count: m * k), da = [Float](repeating: 0, count: m * k / 32), sa = da
    kd_q8_quantize_rows_avx512(Int32(m), Int32(k), a, k, &qa, &da, &sa)
    #expect(qa == ref.qa)
    #expect(da.map(\.bitPattern) == ref.da.map(\.bitPattern))
    #expect(sa.map(\.bitPattern) == ref.sa.map(\.bitPattern))
    #expect(ref.da[1] == 0 && ref.qa[32..<64].allSatisfy { $0 == 0 })
    // |q| ≤ 127 with the block's largest magnitude at ±127; a block whose scale is subnormal (1/d overflows) is zeros
    #expect(ref.qa[(3 * k + 96)..<(3 * k + 128)].allSatisfy { $0 == 0 })
    for i in 0..<m { for b in 0..<(k / 32) where ref.da[i * k / 32 + b] >= Float.leastNormalMagnitude {
        let q = ref.qa[(i * k + b * 32)..<(i * k + b * 32 + 32)].map { abs(Int($0)) }
        #expect(q.max() == 127)
    } }
}

/// Each supported type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1; Q4_K and Q5_K by sub-blocks of 32, rows of 512) through
/// QuantizedMatrix's forward in bf16 with the 8-bit path on:
/// equal to Σ_k w·x̂ in Double (w dequantized by KDQuant, x̂ = da·qa) within f32 accumulation error, for ragged shapes
/// (70 columns = 6 past a panel, 300 > one 256-column chunk; 11 rows = 3 past the 4-row tile), accumulating or not,
/// 1–3 threads with the same bits; and within int8's rounding of the exact f32 product.
@Test(.enabled(if: int8Capable, "this CPU has no AVX512-VNNI and AVX512-BF16"), arguments: [GGMLType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q5_K])
func int8ProductIsTheDequantizedMatrixTimesTheQuantizedActivations(type: GGMLType) {
    for (oc, deep, n) in [(70, 96, 11), (300, 576, 9)] {
        let c = type.blockSize == 256 ? (deep + 255) / 256 * 256 : deep
        let bytes = randomBlocks(type, oc: oc, c: c, seed: UInt64(oc + c))
        let inp = randomArray(n * c, seed: 202, scale: 2)
        let start = randomArray(n * oc, seed: 203)
        let (qa, da, _) = quantizedRows(inp, m: n, k: c)
        bytes.withUnsafeBytes { raw in
            let q = QuantizedMatrix(type: type, oc: oc, c: c, data: raw.baseAddress!, owner: nil)
            var w = [Float](repeating: 0, count: oc * c)
            w.withUnsafeMutableBufferPointer { q.dequantizeRows(0, oc, into: $0.baseAddress!) }
            var exact = [Double](repeating: 0, count: n * oc), scale = exact, f32 = exact
            for i in 0..<n { for j in 0..<oc {
                var s = 0.0, mag = 0.0, e = 0.0
                for p in 0..<c {
                    let x = Double(da[i * c / 32 + p / 32]) * Double(qa[i * c + p]), wv = Double(w[j * c + p])
                    s += wv * x
                    mag += abs(wv * x)
                    e += wv * Double(inp[i * c + p])
                }
                exact[i * oc + j] = s; scale[i * oc + j] = mag; f32[i * oc + j] = e
            } }
            var first: [Float]? = nil
            for accumulate in [false, true] {
                for threads in [1, 2, 3] {
                    var got = start
                    let saved = Parallel.threads
                    Parallel.threads = threads
                    defer { Parallel.threads = saved }
                    BF16.$kernel.withValue(.avx512) { QuantizedMatrix.$int8Products.withValue(true) {
                        got.withUnsafeMutableBufferPointer { q.forward(out: $0.baseAddress!, inp: inp, n: n, accumulate: accumulate) }
                    } }
                    var worst = 0.0, worstInt8 = 0.0, norm = 0.0
                    for e in 0..<(n * oc) {
                        let want = exact[e] + (accumulate ? Double(start[e]) : 0)
                        worst = max(worst, abs(Double(got[e]) - want) / (scale[e] + abs(Double(start[e])) + 1e-30))
                        worstInt8 = max(worstInt8, abs(Double(got[e]) - f32[e] - (accumulate ? Double(start[e]) : 0)))
                        norm = max(norm, abs(f32[e]))
                    }
                    #expect(worst < 4e-6, "\(type) \(oc)×\(c), \(n) rows, \(threads) threads, accumulate \(accumulate): \(worst)")
                    // the exact product of the unquantized activations: int8's rounding (half a step of amax/127 per x)
                    #expect(worstInt8 < 0.02 * norm, "\(type): \(worstInt8) against the f32 product (largest \(norm))")
                    if accumulate { continue }
                    if let first { #expect(first.map(\.bitPattern) == got.map(\.bitPattern), "\(type): \(threads) threads change bits") }
                    else { first = got }
                }
            }
        }
    }
}

/// The projections sharing one input (q, k, v) and the gate/up/SwiGLU pass take the 8-bit path too: each equals the
/// matrix's own 8-bit forward bit for bit, and SwiGLU's of those, bit for bit (70 wide: a tail past the 16-lane loop);
/// types that have no 8-bit path (Q6_K: sub-blocks of 16) keep the bf16 panels.
@Test(.enabled(if: int8Capable && RowKernels.avx512, "this CPU has no AVX512-VNNI and AVX512-BF16"), arguments: [GGMLType.q4_1, .q8_0])
func int8ProjectionsAndSwiGLUAreEachMatrixsOwnProduct(type: GGMLType) {
    let c = 576
    for (widths, n) in [([48, 300, 37], 130), ([70, 70, 64], 33)] {
        let ms = randomMatrices(type, widths: widths, c: c, seed: 210)
        let inp = randomArray(n * c, seed: 213)
        BF16.$kernel.withValue(.avx512) { QuantizedMatrix.$int8Products.withValue(true) {
            let want: [[Float]] = ms.map { m in
                var out = [Float](repeating: 0, count: n * m.oc)
                out.withUnsafeMutableBufferPointer { m.forward(out: $0.baseAddress!, inp: inp, n: n, accumulate: false) }
                return out
            }
            let outs = ms.map { UnsafeMutablePointer<Float>.allocate(capacity: n * $0.oc) }
            defer { outs.forEach { $0.deallocate() } }
            #expect(QuantizedMatrix.forwardSharing(inp, n: n, Array(zip(ms, outs))))
            for (i, (o, m)) in zip(outs, ms).enumerated() {
                #expect(Array(UnsafeBufferPointer(start: o, count: n * m.oc)).map(\.bitPattern) == want[i].map(\.bitPattern), "matrix \(i)")
            }
            guard widths[0] == widths[1] else { return }
            var swiglu = [Float](repeating: 0, count: n * widths[0]), h = [Float](repeating: .nan, count: n * widths[0])
            swiGLUForward(out: &swiglu, gate: want[0], up: want[1], n: n, f: widths[0])
            #expect(QuantizedMatrix.swiGLUForwardFused(h: &h, inp: inp, n: n, gate: ms[0], up: ms[1]))
            let differ = zip(h, swiglu).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differ == 0, "SwiGLU: \(differ) of \(h.count) differ")
        } }
    }
    // a type without an 8-bit path keeps the bf16 panels: the same bits with the switch on or off
    let k6 = randomBlocks(.q6_K, oc: 40, c: 512, seed: 220), inp = randomArray(3 * 512, seed: 221)
    k6.withUnsafeBytes { raw in
        let q = QuantizedMatrix(type: .q6_K, oc: 40, c: 512, data: raw.baseAddress!, owner: nil)
        let outs: [[Float]] = [true, false].map { on in
            var out = [Float](repeating: 0, count: 3 * 40)
            BF16.$kernel.withValue(.avx512) { QuantizedMatrix.$int8Products.withValue(on) {
                out.withUnsafeMutableBufferPointer { q.forward(out: $0.baseAddress!, inp: inp, n: 3, accumulate: false) }
            } }
            return out
        }
        #expect(outs[0].map(\.bitPattern) == outs[1].map(\.bitPattern))
    }
}

/// `teacher.products: int8` in an f32 run (no bf16 kernel): a matrix's forward, the shared-input projections and the
/// SwiGLU pass are the bf16 run's 8-bit products bit for bit (the 8-bit path reads no bf16 kernel); without the switch an
/// f32 run keeps the dequantized matrix through sgemm (within f32 rounding of the Double product, so not the 8-bit bits).
@Test(.enabled(if: kd_cpu_has_avx512vnni() == 1 && RowKernels.avx512, "this CPU has no AVX512-VNNI"))
func int8ProductsInF32RunsAreTheBF16RunsProducts() {
    let c = 576, n = 41, widths = [70, 70, 48]
    let ms = randomMatrices(.q4_1, widths: widths, c: c, seed: 230)
    let inp = randomArray(n * c, seed: 231)
    func run(_ kernel: BF16Kernel?, f32Switch: Bool) -> (alone: [[Float]], shared: [[Float]]?, swiglu: [Float]?) {
        BF16.$kernel.withValue(kernel) { QuantizedMatrix.$int8Products.withValue(true) { QuantizedMatrix.$int8WithF32.withValue(f32Switch) {
            let alone: [[Float]] = ms.map { m in
                var out = [Float](repeating: 0, count: n * m.oc)
                out.withUnsafeMutableBufferPointer { m.forward(out: $0.baseAddress!, inp: inp, n: n, accumulate: false) }
                return out
            }
            var shared: [[Float]] = ms.map { [Float](repeating: .nan, count: n * $0.oc) }
            let outs = ms.map { UnsafeMutablePointer<Float>.allocate(capacity: n * $0.oc) }
            defer { outs.forEach { $0.deallocate() } }
            let sharedRan = QuantizedMatrix.forwardSharing(inp, n: n, Array(zip(ms, outs)))
            for (i, o) in outs.enumerated() { shared[i] = Array(UnsafeBufferPointer(start: o, count: n * ms[i].oc)) }
            var h = [Float](repeating: .nan, count: n * widths[0])
            let fused = QuantizedMatrix.swiGLUForwardFused(h: &h, inp: inp, n: n, gate: ms[0], up: ms[1])
            return (alone, sharedRan ? shared : nil, fused ? h : nil)
        } } }
    }
    let f32Int8 = run(nil, f32Switch: true)
    #expect(f32Int8.shared != nil && f32Int8.swiglu != nil, "the shared-input and SwiGLU passes run in f32 with the switch")
    if BF16.cpuHasAVX512BF16 {
        let bf16 = run(.avx512, f32Switch: false)
        for i in 0..<ms.count {
            #expect(f32Int8.alone[i].map(\.bitPattern) == bf16.alone[i].map(\.bitPattern), "matrix \(i)")
            #expect(f32Int8.shared?[i].map(\.bitPattern) == bf16.shared?[i].map(\.bitPattern), "shared matrix \(i)")
        }
        #expect(f32Int8.swiglu?.map(\.bitPattern) == bf16.swiglu?.map(\.bitPattern))
    }
    var want = [Float](repeating: 0, count: n * widths[0])
    swiGLUForward(out: &want, gate: f32Int8.alone[0], up: f32Int8.alone[1], n: n, f: widths[0])
    #expect(f32Int8.swiglu?.map(\.bitPattern) == want.map(\.bitPattern), "the fused pass is SwiGLU of the two products")
    // without the switch: the f32 route (dequantized rows through sgemm), and the passes decline
    let f32 = run(nil, f32Switch: false)
    #expect(f32.shared == nil && f32.swiglu == nil)
    for (i, m) in ms.enumerated() {
        var dense = [Float](repeating: 0, count: m.oc * c)
        dense.withUnsafeMutableBufferPointer { m.dequantizeRows(0, m.oc, into: $0.baseAddress!) }
        var worst = 0.0, worstInt8 = 0.0
        for r in 0..<n {
            for j in 0..<m.oc {
                var s = 0.0
                for t in 0..<c { s += Double(inp[r * c + t]) * Double(dense[j * c + t]) }
                worst = max(worst, abs(Double(f32.alone[i][r * m.oc + j]) - s))
                worstInt8 = max(worstInt8, abs(Double(f32Int8.alone[i][r * m.oc + j]) - s))
            }
        }
        #expect(worst < 1e-4, "matrix \(i): f32 route off the Double product by \(worst)")
        #expect(worstInt8 > 10 * worst, "matrix \(i): the 8-bit products (off by \(worstInt8)) are not the f32 route")
    }
}
