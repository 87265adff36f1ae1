// A weight matrix kept in its GGUF block format and multiplied panel by panel: a few hundred rows are dequantized
// into a small Float buffer, then sgemm'd, so a Q4 teacher stays close to its file size in memory.
import CBLAS
import CKDKernels
import Foundation
import Synchronization
import KDCore
import KDOps

/// A row-major [oc, c] matrix of GGML blocks (each row a whole number of blocks), not owned: `owner` keeps the
/// storage (usually a memory-mapped file) alive.
public final class QuantizedMatrix: LinearWeight {
    public let type: GGMLType
    public let oc: Int, c: Int
    public let data: UnsafeRawPointer
    let owner: AnyObject?
    /// Rows dequantized per panel: about 2 MiB of Floats.
    let panelRows: Int
    /// One panel buffer per matrix would cost hundreds of MiB for a whole model; forwards run one at a time, so
    /// all matrices share one buffer under a lock.
    static let scratch = Mutex(Slab(count: 0))

    public init(type: GGMLType, oc: Int, c: Int, data: UnsafeRawPointer, owner: AnyObject?) {
        precondition(c % type.blockSize == 0, "QuantizedMatrix: row length \(c) is not a multiple of the \(type) block size \(type.blockSize)")
        self.type = type
        self.oc = oc
        self.c = c
        self.data = data
        self.owner = owner
        panelRows = max(16, min(oc, (1 << 19) / c))
    }

    /// Bytes of one row.
    public var rowBytes: Int { type.byteCount(elements: c) }

    /// Dequantizes rows lo..<hi into out [hi − lo, c], in parallel over rows.
    public func dequantizeRows(_ lo: Int, _ hi: Int, into out: UnsafeMutablePointer<Float>) {
        let rb = rowBytes, c = self.c, type = self.type, data = self.data
        Parallel.forRanges(hi - lo, minPerThread: 8) { a, b in
            for r in a..<b { dequantize(type, src: data + (lo + r) * rb, out: out + r * c, count: c) }
        }
    }

    public func row(_ i: Int, into out: UnsafeMutablePointer<Float>) {
        dequantize(type, src: data + i * rowBytes, out: out, count: c)
    }

    public func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int, accumulate: Bool) {
        if takesInt8 {
            QuantizedMatrix.int8Multiply(m: n, a: inp, [Int8Product(weight: self, out: out, accumulate: accumulate)])
            return
        }
        if let kernel = BF16.panelKernel {
            forwardBF16(kernel, out: out, inp: inp, n: n, accumulate: accumulate)
            return
        }
        QuantizedMatrix.scratch.withLock { slab in
            if slab.count < panelRows * c { slab = Slab(count: panelRows * c) }
            let panel = slab.base
            var r0 = 0
            while r0 < oc {
                let rows = min(panelRows, oc - r0)
                dequantizeRows(r0, r0 + rows, into: panel)
                // out[:, r0 ..< r0+rows] (=/+=) inp · panelᵀ, written in place with ldc = oc
                gemm(transA: false, transB: true, m: n, n: rows, k: c, alpha: 1, a: inp, lda: c, b: panel, ldb: c,
                     beta: accumulate ? 1 : 0, c: out + r0, ldc: oc)
                r0 += rows
            }
        }
    }

    /// The bf16 panel kernel's forward: each thread dequantizes chunks of its rows of W straight into the kernel's bf16
    /// panels (Q4_0 / Q4_1 / Q8_0 with AVX-512; other types through a Float row buffer) and multiplies them while they
    /// are in its cache. Equal bit for bit to bf16GEMM on the dequantized matrix.
    func forwardBF16(_ kernel: BF16Kernel, out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int, accumulate: Bool) {
        bf16MultiplyPackingColumns(kernel, m: n, n: oc, k: c, a: inp, lda: c, beta: accumulate ? 1 : 0, c: out, ldc: oc,
                                   packColumns: columnPacker(kernel))
    }

    /// Rows j0 ..< j1 of W dequantized into the kernel's bf16 panels (directly for Q4_0 / Q4_1 / Q8_0 with AVX-512).
    func columnPacker(_ kernel: BF16Kernel) -> ColumnPacker {
        let rb = rowBytes, c = self.c, type = self.type, data = self.data
        let direct = kernel == .avx512 && QuantizedMatrix.packsDirectly
        return { j0, j1, packed, rows in
            if direct && kd_bf16_pack_b_ggml(Int32(type.rawValue), Int32(j1 - j0), Int32(c), data + j0 * rb, rb, packed) != 0 { return }
            for r in j0..<j1 { dequantize(type, src: data + r * rb, out: rows + (r - j0) * c, count: c) }
            kd_bf16_pack_b(Int32(j1 - j0), 0, Int32(j1 - j0), Int32(c), rows, c, 1, packed)
        }
    }

    /// out_w = inp · Wᵀ for several matrices of the same depth reading one input (a frozen model's q, k and v) in 8-bit
    /// products or with the task's bf16 panel kernel: the input is quantized or packed once for all of them; each product
    /// is ``forward``'s bit for bit. Returns false (nothing done) when neither runs. - Shapes: inp [n, c] · each out [n, oc]
    public static func forwardSharing(_ inp: UnsafePointer<Float>, n: Int, _ products: [(QuantizedMatrix, UnsafeMutablePointer<Float>)]) -> Bool {
        guard let c = products.first?.0.c, products.allSatisfy({ $0.0.c == c }) else { return false }
        if products.allSatisfy({ $0.0.takesInt8 }) {
            int8Multiply(m: n, a: inp, products.map { Int8Product(weight: $0.0, out: $0.1, accumulate: false) })
            return true
        }
        guard let kernel = BF16.panelKernel else { return false }
        bf16MultiplyPackingColumns(kernel, m: n, k: c, a: inp, lda: c, products.map { w, out in
            ColumnProduct(n: w.oc, beta: 0, c: out, ldc: w.oc, packColumns: w.columnPacker(kernel))
        })
        return true
    }

    /// h = SwiGLU(inp · Gᵀ, inp · Uᵀ) in one pass over chunks of the two matrices' rows (gate and up never written out):
    /// ``forward`` of each followed by ``swiGLUForward``, bit for bit. Returns false (nothing done) unless both take the
    /// 8-bit products or the task's kernel is the AVX512-BF16 one, with the row kernels on AVX-512. - Shapes: h [n, f] · inp [n, c]
    public static func swiGLUForwardFused(h: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int, gate: QuantizedMatrix,
                                          up: QuantizedMatrix) -> Bool {
        guard gate.oc == up.oc, gate.c == up.c else { return false }
        if gate.takesInt8 && up.takesInt8 && RowKernels.avx512 {
            int8SwiGLU(h: h, inp: inp, n: n, gate: gate, up: up)
            return true
        }
        guard let kernel = BF16.panelKernel else { return false }
        return bf16SwiGLUPackingColumns(kernel, m: n, f: gate.oc, k: gate.c, a: inp, lda: gate.c, h: h, ldh: gate.oc,
                                        gate: gate.columnPacker(kernel), up: up.columnPacker(kernel))
    }

    /// Whether a Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / Q4_K / Q5_K matrix may multiply in 8-bit integers on a CPU with
    /// AVX512-VNNI: activations quantized per block of 32 as llama.cpp does, `kd_gemm_q8_avx512vnni` (CKDKernels/q8.c).
    /// By default only where the bf16 kernel is the AVX512-BF16 one (`train.precision: bf16` on such a CPU); with
    /// ``int8WithF32`` in f32 runs too. `teacher.products: float` or `DISTILL_TEACHER_INT8=0` keeps the panels (to measure
    /// the difference in one binary); tests set it either way.
    @TaskLocal public static var int8Products: Bool = int8Setting != "0"

    /// Whether the 8-bit products also run where matmuls are f32 (no bf16 kernel): `teacher.products: int8` or
    /// `DISTILL_TEACHER_INT8=all`. Off by default, so that an f32 run's teacher is the f32 dequantized matrix on every CPU.
    @TaskLocal public static var int8WithF32: Bool = int8Setting == "all"

    private static let int8Setting = getenv("DISTILL_TEACHER_INT8").map { String(cString: $0) } ?? "1"
    /// Whether this CPU runs the 8-bit products (AVX-512 F/BW and VNNI).
    public static let cpuHasInt8Products = kd_cpu_has_avx512vnni() == 1

    /// Whether 8-bit products run now (the CPU, the switches and the task's kernel), whatever the type.
    static var int8Now: Bool {
        cpuHasInt8Products && int8Products && (BF16.panelKernel == .avx512 || (int8WithF32 && BF16.panelKernel == nil))
    }

    /// What the train log says when a quantized teacher's matrices multiply in 8-bit integers now; nil when they do not.
    public static var int8Label: String? {
        int8Now ? "quantized teachers' Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K blocks × 8-bit activations (VNNI)" : nil
    }

    /// Whether a matrix of `type` multiplies in 8-bit integers now.
    public static func takesInt8(_ type: GGMLType) -> Bool { int8Now && kd_q8_supported(Int32(type.rawValue)) == 1 }

    /// Whether this matrix's products take the 8-bit path now.
    var takesInt8: Bool { QuantizedMatrix.takesInt8(type) }

    /// One product of ``int8Multiply``: out [m, weight.oc] = A · Wᵀ (+ out when accumulating).
    struct Int8Product {
        let weight: QuantizedMatrix, out: UnsafeMutablePointer<Float>, accumulate: Bool
    }

    /// Columns per chunk a thread packs and multiplies while it is in its cache (256 × 576 deep: 180 KiB of panels).
    static let int8Chunk = 256

    /// The 8-bit products of one input A [m, k]: A quantized once (over the threads), then each thread packs its chunks
    /// of each weight's rows (kd_q8_pack_ggml) and multiplies them by all of A. Each element's sum is the same whatever
    /// the split. - Shapes: a [m, k]
    static func int8Multiply(m: Int, a: UnsafePointer<Float>, _ products: [Int8Product]) {
        guard m > 0, let k = products.first?.weight.c, let widest = products.map(\.weight.oc).max() else { return }
        withInt8Operands(m: m, k: k, a: a, widest: widest, tiles: 0) { qa, da, sa, panels, _ in
            for p in products {
                let w = p.weight, n = w.oc, rb = w.rowBytes, type = Int32(w.type.rawValue)
                let threads = min(Parallel.threads, (n + 31) / 32)
                Parallel.forIndexedRanges((n + 31) / 32, over: threads) { t, t0, t1 in
                    let buffer = panels(t)
                    var j0 = t0 * 32
                    let end = min(n, t1 * 32)
                    while j0 < end {
                        let j1 = min(end, j0 + int8Chunk)
                        _ = kd_q8_pack_ggml(type, Int32(j1 - j0), Int32(k), w.data + j0 * rb, rb, buffer)
                        kd_gemm_q8_avx512vnni(Int32(m), Int32(j1 - j0), Int32(k), qa, da, sa, buffer, p.out + j0, n, p.accumulate ? 1 : 0)
                        j0 = j1
                    }
                }
            }
        }
    }

    /// h = SwiGLU(inp · Gᵀ, inp · Uᵀ) through the 8-bit products, a chunk of gate and up columns at a time in the thread's
    /// scratch (never the whole [n, f] of either). - Shapes: h [n, f] · inp [n, c]
    static func int8SwiGLU(h: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n m: Int, gate: QuantizedMatrix, up: QuantizedMatrix) {
        let f = gate.oc, k = gate.c
        guard m > 0, f > 0 else { return }
        withInt8Operands(m: m, k: k, a: inp, widest: f, tiles: 2) { qa, da, sa, panels, tiles in
            let threads = min(Parallel.threads, (f + 31) / 32)
            Parallel.forIndexedRanges((f + 31) / 32, over: threads) { t, t0, t1 in
                let buffer = panels(t), g = tiles(t, 0), u = tiles(t, 1)
                var j0 = t0 * 32
                let end = min(f, t1 * 32)
                while j0 < end {
                    let j1 = min(end, j0 + int8Chunk), cols = j1 - j0
                    _ = kd_q8_pack_ggml(Int32(gate.type.rawValue), Int32(cols), Int32(k), gate.data + j0 * gate.rowBytes, gate.rowBytes, buffer)
                    kd_gemm_q8_avx512vnni(Int32(m), Int32(cols), Int32(k), qa, da, sa, buffer, g, cols, 0)
                    _ = kd_q8_pack_ggml(Int32(up.type.rawValue), Int32(cols), Int32(k), up.data + j0 * up.rowBytes, up.rowBytes, buffer)
                    kd_gemm_q8_avx512vnni(Int32(m), Int32(cols), Int32(k), qa, da, sa, buffer, u, cols, 0)
                    let vec = cols & ~15
                    for i in 0..<m {
                        let hr = h + i * f + j0, gr = g + i * cols, ur = u + i * cols
                        if vec > 0 { kd_swiglu_forward_avx512(hr, gr, ur, vec) }
                        for j in vec..<cols { hr[j] = gr[j] * (1 / (1 + fastExp(-gr[j]))) * ur[j] }  // the lanes' g·σ(g)·up
                    }
                    j0 = j1
                }
            }
        }
    }

    /// The operands of the 8-bit products under their lock: A [m, k] quantized (over the threads) into qa, da and sa, and
    /// per thread a chunk's panels and `tiles` Float tiles of m × int8Chunk (thread t's tile i at `tile(t, i)`).
    private static func withInt8Operands(
        m: Int, k: Int, a: UnsafePointer<Float>, widest: Int, tiles: Int,
        _ body: (UnsafePointer<Int8>, UnsafePointer<Float>, UnsafePointer<Float>, (Int) -> UnsafeMutablePointer<UInt8>,
                 (Int, Int) -> UnsafeMutablePointer<Float>) -> Void
    ) {
        precondition(k % 32 == 0, "int8 products: depth \(k) is not a multiple of 32")
        let threads = min(Parallel.threads, (widest + 31) / 32), nb = k / 32
        // in Floats, each part rounded up to 64 bytes: qa, da, sa, then per thread its panels and tiles
        func line(_ floats: Int) -> Int { (floats + 15) / 16 * 16 }
        let qaFloats = line((m * k + 3) / 4), scaleFloats = line(m * nb), panelFloats = line((kd_q8_panel_bytes(Int32(int8Chunk), Int32(k)) + 3) / 4)
        let tileFloats = line(m * int8Chunk), perThread = panelFloats + tiles * tileFloats
        StepProfile.op(.gemm) { int8Scratch.withLock { slab in
            let need = qaFloats + 2 * scaleFloats + threads * perThread
            if slab.count < need { slab = Slab(count: need) }
            let base = slab.base
            let qa = UnsafeMutableRawPointer(base).assumingMemoryBound(to: Int8.self), da = base + qaFloats, sa = da + scaleFloats
            let quantize = kd_q8_quantize_rows_avx512
            Parallel.forRanges(m, minPerThread: 16) { i0, i1 in
                quantize(Int32(i1 - i0), Int32(k), a + i0 * k, k, qa + i0 * k, da + i0 * nb, sa + i0 * nb)
            }
            let threadBase = sa + scaleFloats
            body(UnsafePointer(qa), UnsafePointer(da), UnsafePointer(sa),
                 { t in UnsafeMutableRawPointer(threadBase + t * perThread).assumingMemoryBound(to: UInt8.self) },
                 { t, i in threadBase + t * perThread + panelFloats + i * tileFloats })
        } }
    }

    /// Whether ``forwardBF16`` may dequantize Q4_0 / Q4_1 / Q8_0 straight into bf16 panels (tests turn it off to compare
    /// against the Float route).
    @TaskLocal public static var packsDirectly = true
}

/// The buffers of the 8-bit products (frozen models' forwards run one at a time).
private let int8Scratch = Mutex(Slab(count: 0))
