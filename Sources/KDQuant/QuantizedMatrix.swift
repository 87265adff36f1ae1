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

    /// out_w = inp · Wᵀ for several matrices of the same depth reading one input (a frozen model's q, k and v) with the
    /// task's bf16 panel kernel: the input is packed once for all of them; each product is ``forward``'s bit for bit.
    /// Returns false (nothing done) without a panel kernel. - Shapes: inp [n, c] · each out [n, oc]
    public static func forwardBF16(sharing inp: UnsafePointer<Float>, n: Int, _ products: [(QuantizedMatrix, UnsafeMutablePointer<Float>)]) -> Bool {
        guard let kernel = BF16.panelKernel, let c = products.first?.0.c, products.allSatisfy({ $0.0.c == c }) else { return false }
        bf16MultiplyPackingColumns(kernel, m: n, k: c, a: inp, lda: c, products.map { w, out in
            ColumnProduct(n: w.oc, beta: 0, c: out, ldc: w.oc, packColumns: w.columnPacker(kernel))
        })
        return true
    }

    /// h = SwiGLU(inp · Gᵀ, inp · Uᵀ) in one pass over chunks of the two matrices' rows (gate and up never written out):
    /// ``forward`` of each followed by ``swiGLUForward``, bit for bit. Returns false (nothing done) unless the task's
    /// kernel is the AVX512-BF16 one with the row kernels on AVX-512. - Shapes: h [n, f] · inp [n, c]
    public static func swiGLUForwardBF16(h: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int, gate: QuantizedMatrix,
                                         up: QuantizedMatrix) -> Bool {
        guard let kernel = BF16.panelKernel, gate.oc == up.oc, gate.c == up.c else { return false }
        return bf16SwiGLUPackingColumns(kernel, m: n, f: gate.oc, k: gate.c, a: inp, lda: gate.c, h: h, ldh: gate.oc,
                                        gate: gate.columnPacker(kernel), up: up.columnPacker(kernel))
    }

    /// Whether ``forwardBF16`` may dequantize Q4_0 / Q4_1 / Q8_0 straight into bf16 panels (tests turn it off to compare
    /// against the Float route).
    @TaskLocal public static var packsDirectly = true
}
