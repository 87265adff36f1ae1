// bf16 matmuls: which kernel runs them, and the GEMM every linear layer goes through. f32 stays OpenBLAS sgemm (on
// one OpenBLAS thread per slice, our threads over the slices); bf16 rounds the operands to bf16 (nearest even) and accumulates in f32.
// Dims: row-major as cblas_sgemm: op(A) [m, k] · op(B) [k, n] → C [m, n].
import CBLAS
import CKDKernels
import Foundation
import KDCore

/// The kernel of a bf16 matmul.
public enum BF16Kernel: String, Sendable, CaseIterable {
    /// The blocked vdpbf16ps kernel (CPUs with AVX512-BF16).
    case avx512
    /// The same kernel source on a portable emulation of its instructions: slow, for checking the kernel anywhere.
    case emulated
    /// Operands rounded to bf16 (copies), then f32 sgemm: bf16's numbers, a little slower than f32 (products of bf16
    /// values are exact in f32, so only the order of the f32 sums differs from the kernel's).
    case rounded
}

/// How the AVX512-BF16 kernel (`BF16Kernel.avx512`) forms its products: the same bits either way (CKDKernels/bf16.c),
/// at the rate the CPU gives each.
public enum BF16Products: String, Sendable, CaseIterable {
    /// vdpbf16ps: 32 bf16 products a lane pair at a time (AMD's Zen 4 and Zen 5 issue it as fast as an f32 FMA).
    case vdpbf16ps
    /// The bf16 values widened to f32 and multiplied by FMAs, with vdpbf16ps's order and denormal handling: on
    /// Intel's Emerald Rapids (measured; Sapphire Rapids has the same core) vdpbf16ps issues once per two cycles: half
    /// the products of two FMAs a cycle.
    case fma
}

public enum BF16 {
    /// Whether this CPU (and OS) runs AVX512-BF16.
    public static let cpuHasAVX512BF16 = kd_cpu_has_avx512bf16() != 0

    /// The faster products on this CPU (fma on Intel's, vdpbf16ps elsewhere), or `DISTILL_BF16_PRODUCTS` when it names
    /// one (``resolve(bf16:environment:setting:fallback:)`` rejects any other value before a run starts).
    public static let defaultProducts: BF16Products = {
        if let v = getenv("DISTILL_BF16_PRODUCTS"), let p = BF16Products(rawValue: String(cString: v)) { return p }
        return kd_bf16_fma_is_faster() != 0 ? .fma : .vdpbf16ps
    }()

    /// A task's choice of products over the default (tests run both); read on the calling task, before any split.
    @TaskLocal public static var productsOverride: BF16Products?

    /// The products this task's AVX512-BF16 kernel forms.
    public static var products: BF16Products { productsOverride ?? defaultProducts }

    /// The products this task's matmuls form: ``products`` with the AVX512-BF16 kernel, nil with any other (or f32).
    public static var activeProducts: BF16Products? { kernel == .avx512 ? products : nil }

    /// The C entry points of `kernel` (a panel kernel) in this task's products; read before work is split over threads.
    static func entries(_ kernel: BF16Kernel) -> BF16Entries {
        switch (kernel, products) {
        case (.rounded, _):
            preconditionFailure("BF16.entries: the rounded kernel multiplies rounded f32 copies through sgemm, not panels")
        case (.emulated, _):
            return BF16Entries(gemm: kd_gemm_bf16_emulated, prepacked: kd_gemm_bf16_prepacked_emulated,
                               scores: kd_attention_scores_emulated, pv: kd_attention_pv_emulated, swiglu: nil)
        case (.avx512, .vdpbf16ps):
            return BF16Entries(gemm: kd_gemm_bf16_avx512, prepacked: kd_gemm_bf16_prepacked_avx512,
                               scores: kd_attention_scores_avx512, pv: kd_attention_pv_avx512, swiglu: kd_gemm_bf16_swiglu_avx512)
        case (.avx512, .fma):
            return BF16Entries(gemm: kd_gemm_bf16_fma, prepacked: kd_gemm_bf16_prepacked_fma,
                               scores: kd_attention_scores_fma, pv: kd_attention_pv_fma, swiglu: kd_gemm_bf16_swiglu_fma)
        }
    }

    /// The kernel bf16 matmuls use in this task; nil = f32. Set around a run with `BF16.$kernel.withValue`.
    @TaskLocal public static var kernel: BF16Kernel?

    /// The task's kernel when it reads the kernel's bf16 panels (`avx512`, `emulated`): matrices worth packing ahead
    /// (``PackedBF16``). nil in f32 and with `rounded`, which multiply f32 copies.
    public static var panelKernel: BF16Kernel? { kernel == .rounded ? nil : kernel }

    /// This task's precision as logs and records name it: "f32", or "bf16-" and the kernel ("bf16-avx512", …).
    public static var label: String { label(kernel) }
    public static func label(_ kernel: BF16Kernel?) -> String { kernel.map { "bf16-\($0)" } ?? "f32" }

    /// The kernel for a run that asks for bf16 matmuls (`bf16`; false = f32), and the warning to print when bf16 falls
    /// back to f32.
    /// `DISTILL_BF16_KERNEL` (environment) picks it: unset or `avx512` = the AVX512-BF16 kernel where the CPU has it;
    /// `off` = f32 (forces the fallback); `rounded` / `emulated` = bf16's numbers on any CPU (checking, not speed).
    /// The warning names `setting` (where bf16 was asked for) and says `fallback` (what happens instead).
    public static func resolve(bf16: Bool, environment: [String: String], setting: String = "train.precision",
                               fallback: String = "computing in f32") throws -> (kernel: BF16Kernel?, warning: String?) {
        guard bf16 else { return (nil, nil) }
        if let p = environment["DISTILL_BF16_PRODUCTS"], BF16Products(rawValue: p) == nil {
            throw KDError.invalidInput(what: "DISTILL_BF16_PRODUCTS", expected: "vdpbf16ps or fma", found: "'\(p)'")
        }
        let choice = environment["DISTILL_BF16_KERNEL"] ?? "avx512"
        switch choice {
        case "off":
            return (nil, "warning: \(setting) bf16: DISTILL_BF16_KERNEL=off, \(fallback)")
        case "avx512":
            if cpuHasAVX512BF16 { return (.avx512, nil) }
            return (nil, "warning: \(setting) bf16 needs a CPU with AVX512-BF16 (vdpbf16ps); this one has none, \(fallback)")
        default:
            guard let k = BF16Kernel(rawValue: choice) else {
                throw KDError.invalidInput(what: "DISTILL_BF16_KERNEL", expected: "avx512, rounded, emulated or off", found: "'\(choice)'")
            }
            return (k, nil)
        }
    }
}

/// C = alpha · op(A) · op(B) + beta · C, row-major, in the task's precision (``BF16/kernel``; f32 = cblas_sgemm).
/// beta == 0 never reads C.
public func gemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    StepProfile.op(.gemm) {
        guard let kernel = BF16.kernel else {
            return sgemm(threads: Parallel.threads, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                         b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        }
        bf16GEMM(kernel, threads: Parallel.threads, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                 b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }
}

/// OpenBLAS held to one thread, once per process: the f32 products split over our threads themselves (``sgemm``), so
/// no second pool of threads shares the cores with ours — OpenBLAS's workers spin for about 0.1 s after each call they
/// join, taking a core from whatever our threads do next (norms, softmax, attention).
let blasOnOneThread: Void = openblas_set_num_threads(1)

/// f32 C = alpha · op(A) · op(B) + beta · C through OpenBLAS sgemm, split over `threads` of ours as the bf16 kernels
/// split (``forTiles``: the larger of m and n, so each thread packs its share of that operand and all of the smaller
/// one), each slice one single-threaded sgemm. Products under 4M multiply-adds a thread stay one call. OpenBLAS splits
/// no sum over threads either, so an element is the same sum on any count of threads.
func sgemm(
    threads: Int, transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    _ = blasOnOneThread
    guard m > 0, n > 0 else { return }
    let ta = transA ? CblasTrans : CblasNoTrans, tb = transB ? CblasTrans : CblasNoTrans
    let slices = min(threads, max(1, Int(Double(m) * Double(n) * Double(k) / 4e6)))  // 1: one call on this thread
    // row i of op(A) starts at a + i·ars; column j of op(B) at b + j·bcs
    let ars = transA ? 1 : lda, bcs = transB ? ldb : 1
    forTiles(m: m, n: n, byRows: m >= n, threads: slices) { i0, i1, j0, j1 in
        cblas_sgemm(CblasRowMajor, ta, tb, Int32(i1 - i0), Int32(j1 - j0), Int32(k), alpha, a + i0 * ars, Int32(lda), b + j0 * bcs,
                    Int32(ldb), beta, c + i0 * ldc + j0, Int32(ldc))
    }
}

/// The C functions behind a panel kernel (``BF16/entries(_:)``); `swiglu` only for the AVX512-BF16 one.
struct BF16Entries {
    typealias GEMM = @convention(c) (Int32, Int32, Int32, Float, UnsafePointer<Float>?, Int, Int, UnsafePointer<Float>?, Int, Int, Float,
                                     UnsafeMutablePointer<Float>?, Int) -> Void
    typealias Prepacked = @convention(c) (Int32, Int32, Int32, Float, UnsafePointer<Float>?, Int, Int, UnsafePointer<UInt16>?,
                                          UnsafePointer<Float>?, Int, Int, UnsafePointer<UInt16>?, Int32, Int32, Float,
                                          UnsafeMutablePointer<Float>?, Int) -> Void
    typealias Scores = @convention(c) (Int32, Int32, Int32, Int32, Float, UnsafePointer<Float>?, Int, UnsafePointer<UInt16>?,
                                       UnsafeMutablePointer<Float>?, Int) -> Void
    typealias PV = @convention(c) (Int32, Int32, Int32, Int32, UnsafePointer<Float>?, Int, UnsafePointer<UInt16>?,
                                   UnsafeMutablePointer<Float>?, Int) -> Void
    typealias SwiGLU = @convention(c) (Int32, Int32, Int32, UnsafePointer<Float>?, Int, UnsafePointer<UInt16>?, UnsafePointer<UInt16>?,
                                       UnsafePointer<UInt16>?, UnsafeMutablePointer<Float>?, Int) -> Void
    let gemm: GEMM
    let prepacked: Prepacked
    let scores: Scores
    let pv: PV
    let swiglu: SwiGLU?
}

/// ``gemm`` with bf16 operands through `kernel`, split over `threads`: the kernels split the larger of m and n (in
/// 8-row or 32-column tiles), so each thread packs its share of that operand and all of the other, smaller one.
public func bf16GEMM(
    _ kernel: BF16Kernel, threads: Int, transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    guard m > 0, n > 0 else { return }
    switch kernel {
    case .rounded:
        // round copies of the operands (their whole stored span), then sgemm
        let aSpan = ((transA ? k : m) - 1) * lda + (transA ? m : k), bSpan = ((transB ? n : k) - 1) * ldb + (transB ? k : n)
        let ra = UnsafeMutablePointer<Float>.allocate(capacity: aSpan), rb = UnsafeMutablePointer<Float>.allocate(capacity: bSpan)
        defer { ra.deallocate(); rb.deallocate() }
        kd_bf16_round_f32(a, ra, aSpan)
        kd_bf16_round_f32(b, rb, bSpan)
        sgemm(threads: threads, transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: ra, lda: lda, b: rb, ldb: ldb,
              beta: beta, c: c, ldc: ldc)
    case .avx512, .emulated:
        // A(i, p) = a[i·ars + p·acs], B(j, p) = b[j·brs + p·bcs]
        let (ars, acs) = transA ? (1, lda) : (lda, 1)
        let (brs, bcs) = transB ? (ldb, 1) : (1, ldb)
        let run = BF16.entries(kernel).gemm
        forTiles(m: m, n: n, byRows: m >= n, threads: threads) { i0, i1, j0, j1 in
            run(Int32(i1 - i0), Int32(j1 - j0), Int32(k), alpha, a + i0 * ars, ars, acs, b + j0 * brs, brs, bcs, beta, c + i0 * ldc + j0, ldc)
        }
    }
}

/// Splits C [m, n] over `threads` as the bf16 kernels take it (and f32's ``sgemm``): rows in 8-row tiles (`byRows`),
/// else columns in 32-column tiles; `body(i0, i1, j0, j1)` gets one thread's block. Every element is summed by one thread in the same
/// order whichever split, so the result does not depend on it.
@inline(__always)
func forTiles(m: Int, n: Int, byRows: Bool, threads: Int, _ body: (Int, Int, Int, Int) -> Void) {
    if byRows {
        Parallel.forRanges((m + 7) / 8, over: threads) { t0, t1 in body(t0 * 8, min(m, t1 * 8), 0, n) }
    } else {
        Parallel.forRanges((n + 31) / 32, over: threads) { t0, t1 in body(0, m, t0 * 32, min(n, t1 * 32)) }
    }
}
