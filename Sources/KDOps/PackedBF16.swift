// Matrices packed to bf16 once, in the layout the bf16 kernel reads, and multiplied many times: a frozen teacher's
// weights (packed at load, replacing their f32 copy) and a student's LM head (packed once per step, in both of the
// layouts its forward and its input gradient read, instead of once per 256-row chunk).
// Dims: a packed matrix is B(j, p), j < n columns, p < k deep; C [m, n] = alpha · op(A) [m, k] · Bᵀ + beta · C.
import CBLAS
import CKDKernels
import Glibc
import KDCore
import Synchronization

/// B(j, p) of some f32 matrix, rounded to bf16 (nearest even) and stored in the bf16 kernel's panels.
public final class PackedBF16 {
    /// Columns (j) and depth (p).
    public let n: Int, k: Int
    let storage: UnsafeMutablePointer<UInt16>
    let count: Int

    /// Room for an n × k matrix; ``pack(_:rowStride:depthStride:)`` fills it.
    public init(n: Int, k: Int) {
        precondition(n > 0 && k > 0 && n <= Int(Int32.max) && k <= Int(Int32.max), "PackedBF16: \(n) × \(k)")
        self.n = n
        self.k = k
        count = kd_bf16_packed_count(Int32(n), Int32(k))
        storage = .allocate(capacity: count)
        adviseHugePages(storage, bytes: count * 2)
    }

    /// Packs B(j, p) = b[j·rowStride + p·depthStride] over the threads (disjoint 32-column ranges).
    public convenience init(_ b: UnsafePointer<Float>, n: Int, k: Int, rowStride: Int, depthStride: Int) {
        self.init(n: n, k: k)
        pack(b, rowStride: rowStride, depthStride: depthStride)
    }

    deinit { storage.deallocate() }

    /// Bytes held.
    public var bytes: Int { count * 2 }

    /// Re-packs from b (same shape): B(j, p) = b[j·rowStride + p·depthStride].
    public func pack(_ b: UnsafePointer<Float>, rowStride: Int, depthStride: Int) {
        let n = self.n, k = self.k, out = storage
        Parallel.forRanges((n + 31) / 32, minPerThread: 16) { t0, t1 in
            kd_bf16_pack_b(Int32(n), Int32(t0 * 32), Int32(min(n, t1 * 32)), Int32(k), b, rowStride, depthStride, out)
        }
    }

    /// Columns j0 ..< j1 as f32 rows: out[(j − j0)·ldo + p] = B(j, p) (exact: bf16 widens to f32 exactly).
    public func unpack(columns j0: Int, _ j1: Int, into out: UnsafeMutablePointer<Float>, ldo: Int) {
        kd_bf16_unpack_b(Int32(n), Int32(j0), Int32(j1), Int32(k), storage, out, ldo)
    }

    /// C = alpha · op(A) · Bᵀ + beta · C (beta == 0 never reads C), with the task's bf16 kernel; split over the threads
    /// by rows when m ≥ n or A is the larger operand (k > n: every thread would pack all of A in a column split, while
    /// the packed B is shared as it is), else by 32-column tiles. The result is ``bf16GEMM``'s on the unpacked matrix
    /// bit for bit (a split never changes an element's sum). Without a panel kernel (f32, or `rounded`), the columns are
    /// unpacked in panels and multiplied through ``gemm``: the same bf16 weights, in the task's arithmetic.
    /// - Shapes: A [m, k] (`transA`: [k, m]) with row stride lda · C [m, n] with row stride ldc
    public func multiply(transA: Bool = false, m: Int, alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, beta: Float,
                         c: UnsafeMutablePointer<Float>, ldc: Int) {
        guard m > 0 else { return }
        let n = self.n, k = self.k, packed = UnsafePointer(storage)
        StepProfile.op(.gemm) {
            guard let kernel = BF16.panelKernel else {
                multiplyUnpacked(transA: transA, m: m, alpha: alpha, a: a, lda: lda, beta: beta, c: c, ldc: ldc)
                return
            }
            let run = BF16.entries(kernel).prepacked
            let (ars, acs) = transA ? (1, lda) : (lda, 1)
            forTiles(m: m, n: n, byRows: m >= n || k > n, threads: Parallel.threads) { i0, i1, j0, j1 in
                run(Int32(i1 - i0), Int32(j1 - j0), Int32(k), alpha, a + i0 * ars, ars, acs, nil, nil, 0, 0, packed, Int32(n), Int32(j0),
                    beta, c + i0 * ldc + j0, ldc)
            }
        }
    }

    func multiplyUnpacked(transA: Bool, m: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int, beta: Float,
                          c: UnsafeMutablePointer<Float>, ldc: Int) {
        let panelColumns = max(32, min(n, (1 << 19) / k)), panel = UnsafeMutablePointer<Float>.allocate(capacity: panelColumns * k)
        defer { panel.deallocate() }
        var j0 = 0
        while j0 < n {
            let cols = min(panelColumns, n - j0)
            unpack(columns: j0, j0 + cols, into: panel, ldo: k)
            gemm(transA: transA, transB: true, m: m, n: cols, k: k, alpha: alpha, a: a, lda: lda, b: panel, ldb: k,
                 beta: beta, c: c + j0, ldc: ldc)
            j0 += cols
        }
    }
}

/// Packs columns j0 ..< j1 of a B that is not kept packed into `out` (kd_bf16_pack_b's layout of a (j1 − j0)-column
/// matrix), with `scratch` holding (j1 − j0) · k Floats.
public typealias ColumnPacker = (_ j0: Int, _ j1: Int, _ out: UnsafeMutablePointer<UInt16>, _ scratch: UnsafeMutablePointer<Float>) -> Void

/// One product of ``bf16MultiplyPackingColumns(_:m:k:a:lda:chunk:_:)``: C [m, n] (row stride ldc) = A · Bᵀ + beta · C.
public struct ColumnProduct {
    public let n: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, packColumns: ColumnPacker
    public init(n: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, packColumns: @escaping ColumnPacker) {
        self.n = n; self.beta = beta; self.c = c; self.ldc = ldc; self.packColumns = packColumns
    }
}

/// C [m, n] = A [m, k] · Bᵀ + beta · C with the bf16 panel kernel `kernel`, for a B that is not kept packed (a quantized
/// teacher's matrix: a bf16 copy would double a Q8_0 file and quadruple a Q4 one): A is packed once, then each thread
/// takes its 32-column tiles in chunks of `chunk` columns, has `packColumns(j0, j1, out, scratch)` pack columns j0 ..< j1
/// into `out` (kd_bf16_pack_b's layout of a (j1 − j0)-column matrix; `scratch` holds (j1 − j0) · k Floats), and
/// multiplies them while they are in its cache. The result is ``bf16GEMM``'s with B given as f32 values that pack to the
/// same bf16, bit for bit (neither split nor chunking changes an element's sum).
public func bf16MultiplyPackingColumns(
    _ kernel: BF16Kernel, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, beta: Float, c: UnsafeMutablePointer<Float>,
    ldc: Int, chunk: Int = 256, packColumns: @escaping ColumnPacker
) {
    bf16MultiplyPackingColumns(kernel, m: m, k: k, a: a, lda: lda, chunk: chunk, [ColumnProduct(n: n, beta: beta, c: c, ldc: ldc, packColumns: packColumns)])
}

/// Several such products of one A (a frozen model's q, k and v): A is packed once for all of them.
public func bf16MultiplyPackingColumns(_ kernel: BF16Kernel, m: Int, k: Int, a: UnsafePointer<Float>, lda: Int, chunk: Int = 256,
                                       _ products: [ColumnProduct]) {
    precondition(kernel != .rounded && chunk % 32 == 0, "bf16MultiplyPackingColumns: the panel kernels, chunks of 32 columns")
    guard m > 0, let widest = products.map(\.n).max(), widest > 0 else { return }
    let run = BF16.entries(kernel).prepacked
    withColumnChunks(m: m, k: k, a: a, lda: lda, widest: widest, chunk: chunk, packs: 1) { apacked, chunk, buffers in
        for p in products where p.n > 0 {
            let threads = min(Parallel.threads, (p.n + 31) / 32), chunk = min(chunk, (p.n + 31) / 32 * 32)
            Parallel.forIndexedRanges((p.n + 31) / 32, over: threads) { t, t0, t1 in
                let (out, scratch) = buffers(t, 0)
                var j0 = t0 * 32
                let end = min(p.n, t1 * 32)
                while j0 < end {
                    let j1 = min(end, j0 + chunk)
                    p.packColumns(j0, j1, out, scratch)
                    run(Int32(m), Int32(j1 - j0), Int32(k), 1, a, lda, 1, apacked, nil, 0, 0, out, Int32(j1 - j0), 0, p.beta, p.c + j0, p.ldc)
                    j0 = j1
                }
            }
        }
    }
}

/// h [m, f] = SwiGLU(A · Gᵀ, A · Uᵀ) for two [f, k] matrices that are not kept packed: A packed once, each thread packs a
/// chunk of G's and of U's columns and runs `kd_gemm_bf16_swiglu_avx512` on them, so gate and up are never written
/// out. Bit for bit ``bf16MultiplyPackingColumns(_:m:n:k:a:lda:beta:c:ldc:chunk:packColumns:)`` of each (beta 0)
/// followed by ``swiGLUForward``. Returns false (nothing done) unless the kernel is the AVX512-BF16 one and the row
/// kernels run on AVX-512.
public func bf16SwiGLUPackingColumns(_ kernel: BF16Kernel, m: Int, f: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                                     h: UnsafeMutablePointer<Float>, ldh: Int, chunk: Int = 256,
                                     gate: @escaping ColumnPacker, up: @escaping ColumnPacker) -> Bool {
    guard kernel == .avx512, RowKernels.avx512, !fusedSwiGLUOff, m > 0, f > 0, chunk % 32 == 0 else { return false }
    guard let swiglu = BF16.entries(kernel).swiglu else { return false }
    withColumnChunks(m: m, k: k, a: a, lda: lda, widest: f, chunk: chunk, packs: 2) { apacked, chunk, buffers in
        let threads = min(Parallel.threads, (f + 31) / 32), chunk = min(chunk, (f + 31) / 32 * 32)
        Parallel.forIndexedRanges((f + 31) / 32, over: threads) { t, t0, t1 in
            let (g, scratch) = buffers(t, 0), (u, _) = buffers(t, 1)
            var j0 = t0 * 32
            let end = min(f, t1 * 32)
            while j0 < end {
                let j1 = min(end, j0 + chunk)
                gate(j0, j1, g, scratch)
                up(j0, j1, u, scratch)
                swiglu(Int32(m), Int32(j1 - j0), Int32(k), a, lda, apacked, g, u, h + j0, ldh)
                j0 = j1
            }
        }
    }
    return true
}

/// The buffers of the column-chunk products, under their lock: A [m, k] packed (over the threads), and per thread
/// `packs` packed chunks of `chunk` columns plus one chunk's Float scratch; `body(apacked, chunk, buffers)` where
/// buffers(t, i) is thread t's i-th packed chunk and its scratch.
private func withColumnChunks(
    m: Int, k: Int, a: UnsafePointer<Float>, lda: Int, widest: Int, chunk: Int, packs: Int,
    _ body: (UnsafePointer<UInt16>, Int, (Int, Int) -> (UnsafeMutablePointer<UInt16>, UnsafeMutablePointer<Float>)) -> Void
) {
    let threads = min(Parallel.threads, (widest + 31) / 32), chunk = min(chunk, (widest + 31) / 32 * 32)
    let aCount = kd_bf16_packed_a_count(Int32(m), Int32(k)), bCount = kd_bf16_packed_count(Int32(chunk), Int32(k))
    // in Floats: packed A, then per thread its packed chunks and its scratch
    let aFloats = (aCount + 1) / 2, bFloats = (bCount + 1) / 2, perThread = packs * bFloats + chunk * k
    StepProfile.op(.gemm) { chunkScratch.withLock { slab in
        let need = aFloats + threads * perThread
        if slab.count < need { slab = Slab(count: need) }
        let base = slab.base, apacked = UnsafeMutableRawPointer(base).assumingMemoryBound(to: UInt16.self)
        Parallel.forRanges((m + 7) / 8, minPerThread: 4) { t0, t1 in
            kd_bf16_pack_a(Int32(m), Int32(t0 * 8), Int32(min(m, t1 * 8)), Int32(k), a, lda, 1, apacked)
        }
        body(UnsafePointer(apacked), chunk) { t, i in
            let mine = base + aFloats + t * perThread
            return (UnsafeMutableRawPointer(mine + i * bFloats).assumingMemoryBound(to: UInt16.self), mine + packs * bFloats)
        }
    } }
}

/// The buffers of ``bf16MultiplyPackingColumns``: its callers' forwards run one at a time (a frozen teacher's), so one
/// set serves every matrix.
private let chunkScratch = Mutex(Slab(count: 0))

/// A [oc, c] weight packed to bf16 for out = inp · Wᵀ (B(j, p) = W[j, p]): a frozen teacher's matrix.
public final class BF16Weight: LinearWeight {
    public let packed: PackedBF16
    public var oc: Int { packed.n }
    public var c: Int { packed.k }

    /// Packs the row-major [oc, c] matrix at w.
    public init(_ w: UnsafePointer<Float>, oc: Int, c: Int) {
        packed = PackedBF16(w, n: oc, k: c, rowStride: c, depthStride: 1)
    }

    public func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int, accumulate: Bool) {
        packed.multiply(m: n, a: inp, lda: c, beta: accumulate ? 1 : 0, c: out, ldc: oc)
    }

    public func row(_ i: Int, into out: UnsafeMutablePointer<Float>) { packed.unpack(columns: i, i + 1, into: out, ldo: c) }
}

/// `DISTILL_FUSED_SWIGLU=0` runs a frozen model's gate, up and SwiGLU as three steps (to measure the difference in one
/// binary); the results are the same bit for bit.
let fusedSwiGLUOff = getenv("DISTILL_FUSED_SWIGLU").map { String(cString: $0) == "0" } ?? false

/// h = SwiGLU(inp · Gᵀ, inp · Uᵀ) of two packed [f, c] weights in one pass over 32-column panels, the gate and up sums
/// kept in cache instead of written out and read back: bit for bit ``PackedBF16/multiply(transA:m:alpha:a:lda:beta:c:ldc:)``
/// of each followed by ``swiGLUForward``. Runs when the task's kernel is the AVX512-BF16 one and the row kernels are on
/// AVX-512 (returns false otherwise, and the caller takes the three steps).
/// - Shapes: h [n, f] · inp [n, c]
public func bf16SwiGLUForward(h: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int, gate: PackedBF16,
                              up: PackedBF16) -> Bool {
    guard BF16.panelKernel == .avx512, RowKernels.avx512, !fusedSwiGLUOff, gate.n == up.n, gate.k == up.k, n > 0 else { return false }
    let f = gate.n, c = gate.k, g = UnsafePointer(gate.storage), u = UnsafePointer(up.storage)
    guard let swiglu = BF16.entries(.avx512).swiglu else { return false }
    StepProfile.op(.gemm) {
        Parallel.forRanges((n + 7) / 8) { t0, t1 in
            let i0 = t0 * 8, i1 = min(n, t1 * 8)
            swiglu(Int32(i1 - i0), Int32(f), Int32(c), inp + i0 * c, c, nil, g, u, h + i0 * f, f)
        }
    }
    return true
}

/// out_w = inp · Wᵀ for several packed weights of the same depth read from one input (a frozen model's q, k and v):
/// each thread packs its rows of `inp` once and hands them to the kernel for every weight, instead of every GEMM
/// packing them again. Bit for bit ``PackedBF16/multiply(transA:m:alpha:a:lda:beta:c:ldc:)`` of each (beta 0).
/// Returns false (nothing done) without a panel kernel. - Shapes: inp [n, c] · each out [n, w.n]
public func bf16MultiplySharingInput(n: Int, inp: UnsafePointer<Float>, _ products: [(weight: PackedBF16, out: UnsafeMutablePointer<Float>)]) -> Bool {
    guard let kernel = BF16.panelKernel, n > 0, let k = products.first?.weight.k, products.allSatisfy({ $0.weight.k == k }) else { return false }
    let run = BF16.entries(kernel).prepacked
    let tiles = (n + 7) / 8, threads = min(Parallel.threads, tiles), perThread = (kd_bf16_packed_a_count(Int32((tiles + threads - 1) / threads * 8), Int32(k)) + 1) / 2
    StepProfile.op(.gemm) { sharedInputScratch.withLock { slab in
        if slab.count < threads * perThread { slab = Slab(count: threads * perThread) }
        let base = slab.base
        Parallel.forIndexedRanges(tiles, over: threads) { index, t0, t1 in
            let i0 = t0 * 8, rows = min(n, t1 * 8) - i0
            guard rows > 0 else { return }
            let apacked = UnsafeMutableRawPointer(base + index * perThread).assumingMemoryBound(to: UInt16.self)
            kd_bf16_pack_a(Int32(rows), 0, Int32(rows), Int32(k), inp + i0 * k, k, 1, apacked)
            for (w, out) in products {
                run(Int32(rows), Int32(w.n), Int32(k), 1, inp + i0 * k, k, 1, apacked, nil, 0, 0, w.storage, Int32(w.n), 0, 0,
                    out + i0 * w.n, w.n)
            }
        }
    } }
    return true
}

/// The packed input rows of ``bf16MultiplySharingInput``'s threads (frozen models' forwards run one at a time).
private let sharedInputScratch = Mutex(Slab(count: 0))
