// Packed matrices multiply like their dequantized Float copies.
import KDCore
@testable import KDOps
import KDQuant
import KDTestSupport
import Testing

/// Random blocks of `type` for an [oc, c] matrix, with finite half-precision scales (at offset 0, and 2 for the
/// types with a minimum; at the block end for Q6_K).
func randomBlocks(_ type: GGMLType, oc: Int, c: Int, seed: UInt64 = 77) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: type.byteCount(elements: oc * c))
    let rng = randomArray(bytes.count, seed: seed)
    for i in 0..<bytes.count { bytes[i] = UInt8(truncatingIfNeeded: Int(abs(rng[i]) * 1000)) }
    let scaleOffsets: [Int] = type == .q6_K ? [208] : type == .q4_K || type == .q5_K || type == .q4_1 || type == .q5_1 ? [0, 2] : [0]
    for b in 0..<(bytes.count / type.typeSize) {
        for off in scaleOffsets {
            let h = Float16(0.01 * Float(b % 7 + 1)).bitPattern
            bytes[b * type.typeSize + off] = UInt8(h & 0xFF)
            bytes[b * type.typeSize + off + 1] = UInt8(h >> 8)
        }
    }
    return bytes
}

/// Random [w, c] matrices of `type` (randomBlocks, seeds seed, seed + 1, …) in 64-byte-aligned memory each matrix owns.
func randomMatrices(_ type: GGMLType, widths: [Int], c: Int, seed: UInt64) -> [QuantizedMatrix] {
    widths.enumerated().map { i, w in
        let bytes = randomBlocks(type, oc: w, c: c, seed: seed + UInt64(i))
        let owned = OwnedTestBytes(bytes)
        return QuantizedMatrix(type: type, oc: w, c: c, data: UnsafeRawPointer(owned.base), owner: owned)
    }
}

/// Bytes copied to 64-byte-aligned memory, freed with the last matrix reading them.
final class OwnedTestBytes {
    let base: UnsafeMutableRawPointer
    init(_ bytes: [UInt8]) {
        base = .allocate(byteCount: max(1, bytes.count), alignment: 64)
        bytes.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
    }
    deinit { base.deallocate() }
}

@Test(arguments: [GGMLType.q8_0, .q4_1, .q4_K, .q6_K, .iq4_nl, .iq4_xs])
func packedMatmulEqualsDequantizedMatmul(type: GGMLType) {
    let oc = 37, c = 256, n = 5
    let bytes = randomBlocks(type, oc: oc, c: c)
    let inp = randomArray(n * c, seed: 78)
    bytes.withUnsafeBytes { raw in
        let q = QuantizedMatrix(type: type, oc: oc, c: c, data: raw.baseAddress!, owner: nil)
        var dense = [Float](repeating: 0, count: oc * c)
        dense.withUnsafeMutableBufferPointer { q.dequantizeRows(0, oc, into: $0.baseAddress!) }
        var a = [Float](repeating: 1, count: n * oc), b = a
        a.withUnsafeMutableBufferPointer { q.forward(out: $0.baseAddress!, inp: inp, n: n, accumulate: true) }
        b.withUnsafeMutableBufferPointer { matmulForward(out: $0.baseAddress!, inp: inp, weight: dense, n: n, c: c, oc: oc, accumulate: true) }
        #expect(maxRelError(a, b) < 1e-6)
        var row = [Float](repeating: 0, count: c)
        row.withUnsafeMutableBufferPointer { q.row(5, into: $0.baseAddress!) }
        #expect(row == Array(dense[(5 * c)..<(6 * c)]))
    }
}

/// In bf16, a quantized matrix's rows are dequantized straight into the kernel's panels chunk by chunk on each thread
/// (Q4_0 / Q4_1 / Q8_0 with AVX-512, the others — k-quants, IQ4_NL, IQ4_XS — through Floats): the product must be bf16GEMM's on the dequantized
/// matrix bit for bit, for ragged row counts (37, 48 = 16 mod 32, 300 > one chunk), a depth that ends in a partial
/// 256-deep block (576; 512 for k-quants), 1–3 threads, both routes, accumulating or not.
@Test(arguments: [GGMLType.q8_0, .q4_0, .q4_1, .q5_0, .q4_K, .q6_K, .iq4_nl, .iq4_xs])
func quantizedBF16ForwardEqualsKernelOnDequantized(type: GGMLType) {
    // the bf16 panels (the 8-bit products are their own test, QuantizedInt8Tests)
    QuantizedMatrix.$int8Products.withValue(false) {
        let kernels: [BF16Kernel] = BF16.cpuHasAVX512BF16 ? [.avx512, .emulated] : [.emulated]
        for (oc, deep, n) in [(37, 256, 5), (48, 576, 19), (300, 576, 130)] {
            let c = type.blockSize == 256 ? deep / 256 * 256 : deep  // k-quant rows are whole 256-element blocks
            let bytes = randomBlocks(type, oc: oc, c: c, seed: UInt64(oc))
            let inp = randomArray(n * c, seed: 79)
            let start = randomArray(n * oc, seed: 80)
            bytes.withUnsafeBytes { raw in
                let q = QuantizedMatrix(type: type, oc: oc, c: c, data: raw.baseAddress!, owner: nil)
                var dense = [Float](repeating: 0, count: oc * c)
                dense.withUnsafeMutableBufferPointer { q.dequantizeRows(0, oc, into: $0.baseAddress!) }
                for kernel in kernels where kernel == .avx512 || n < 100 {
                    for accumulate in [false, true] {
                        var want = start
                        bf16GEMM(kernel, threads: 1, transA: false, transB: true, m: n, n: oc, k: c, alpha: 1, a: inp, lda: c, b: dense,
                                 ldb: c, beta: accumulate ? 1 : 0, c: &want, ldc: oc)
                        for threads in [1, 2, 3] {
                            for direct in [true, false] {
                                var got = start
                                let saved = Parallel.threads
                                Parallel.threads = threads
                                defer { Parallel.threads = saved }
                                BF16.$kernel.withValue(kernel) {
                                    QuantizedMatrix.$packsDirectly.withValue(direct) {
                                        got.withUnsafeMutableBufferPointer { q.forward(out: $0.baseAddress!, inp: inp, n: n, accumulate: accumulate) }
                                    }
                                }
                                let differ = zip(got, want).filter { $0.bitPattern != $1.bitPattern }.count
                                #expect(differ == 0, "\(type) \(oc)×\(c), \(n) rows, \(kernel), \(threads) threads, direct \(direct), accumulate \(accumulate)")
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A frozen model's q, k, v (one input packed once for three quantized matrices) and its gate, up and SwiGLU in one pass
/// per chunk of rows (gate and up never written out) are each matrix's own bf16 forward — and ``swiGLUForward`` of
/// gate and up — bit for bit: ragged row counts (48 = 16 mod 32, 300 > one chunk), a partial depth block (576), 130
/// input rows crossing nothing and 400 crossing the fused pass's 384-row blocks, 1–3 threads. The fused pass runs only
/// with the AVX512-BF16 kernel and AVX-512 row kernels, so that half is skipped elsewhere.
@Test(arguments: [GGMLType.q4_1, .q8_0, .q4_K])
func quantizedProjectionsSharingTheirInputAreEachAlone(type: GGMLType) {
    // the bf16 panels (the 8-bit products are their own test, QuantizedInt8Tests)
    QuantizedMatrix.$int8Products.withValue(false) {
        let kernels: [BF16Kernel] = BF16.cpuHasAVX512BF16 ? [.avx512, .emulated] : [.emulated]
        let c = type.blockSize == 256 ? 512 : 576
        for (widths, n) in [([48, 300, 37], 130), ([64, 64, 64], 400)] {
            let ms = randomMatrices(type, widths: widths, c: c, seed: 90)
            let inp = randomArray(n * c, seed: 93)
            for kernel in kernels where kernel == .avx512 || n < 200 {
                let want: [[Float]] = ms.map { m in
                    var out = [Float](repeating: 0, count: n * m.oc)
                    BF16.$kernel.withValue(kernel) { out.withUnsafeMutableBufferPointer { m.forward(out: $0.baseAddress!, inp: inp, n: n, accumulate: false) } }
                    return out
                }
                var swiglu: [Float]? = nil
                if widths[0] == widths[1] {
                    var h = [Float](repeating: 0, count: n * widths[0])
                    swiGLUForward(out: &h, gate: want[0], up: want[1], n: n, f: widths[0])
                    swiglu = h
                }
                for threads in [1, 2, 3] {
                    let saved = Parallel.threads
                    Parallel.threads = threads
                    defer { Parallel.threads = saved }
                    let outs = ms.map { UnsafeMutablePointer<Float>.allocate(capacity: n * $0.oc) }
                    defer { outs.forEach { $0.deallocate() } }
                    for (o, m) in zip(outs, ms) { o.initialize(repeating: .nan, count: n * m.oc) }
                    let ran = BF16.$kernel.withValue(kernel) { QuantizedMatrix.forwardSharing(inp, n: n, Array(zip(ms, outs))) }
                    #expect(ran)
                    for (i, (o, m)) in zip(outs, ms).enumerated() {
                        let differ = zip(UnsafeBufferPointer(start: o, count: n * m.oc), want[i]).filter { $0.bitPattern != $1.bitPattern }.count
                        #expect(differ == 0, "\(type) matrix \(i) (\(m.oc)×\(c)), \(n) rows, \(kernel), \(threads) threads: \(differ) differ")
                    }
                    guard let swiglu else { continue }
                    var h = [Float](repeating: .nan, count: n * widths[0])
                    let fused = BF16.$kernel.withValue(kernel) { QuantizedMatrix.swiGLUForwardFused(h: &h, inp: inp, n: n, gate: ms[0], up: ms[1]) }
                    #expect(fused == (kernel == .avx512 && RowKernels.avx512), "\(kernel): the fused pass runs exactly where it can")
                    if fused {
                        let differ = zip(h, swiglu).filter { $0.bitPattern != $1.bitPattern }.count
                        #expect(differ == 0, "\(type) SwiGLU, \(n) rows, \(threads) threads: \(differ) of \(h.count) differ")
                    }
                }
            }
        }
    }
}
