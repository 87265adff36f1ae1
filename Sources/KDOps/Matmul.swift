// Linear layers through ``gemm`` (OpenBLAS sgemm in f32; bf16 operands where the task's precision says), weights in
// Hugging Face layout [oc, c]; port of llm.c matmul_forward/backward.
// Dims: n rows (= B·T), c input channels, oc output channels.
import CBLAS

/// out = inp · weightᵀ, or out += inp · weightᵀ when `accumulate` (used to add a projection onto the residual).
/// - Shapes: out [n, oc] · inp [n, c] · weight [oc, c]
public func matmulForward(
    out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
    n: Int, c: Int, oc: Int, accumulate: Bool = false
) {
    assert(n > 0 && c > 0 && oc > 0)
    gemm(transA: false, transB: true, m: n, n: oc, k: c, alpha: 1, a: inp, lda: c, b: weight, ldb: c,
         beta: accumulate ? 1 : 0, c: out, ldc: oc)
}

/// Backward of ``matmulForward``. Accumulates: dinp += dout · weight, dweight += doutᵀ · inp.
/// Pass `dinp: nil` when the input needs no gradient.
/// - Shapes: dinp [n, c] · dweight [oc, c] · dout [n, oc] · inp [n, c] · weight [oc, c]
public func matmulBackward(
    dinp: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>,
    dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
    n: Int, c: Int, oc: Int
) {
    if let dinp {
        gemm(transA: false, transB: false, m: n, n: c, k: oc, alpha: 1, a: dout, lda: oc, b: weight, ldb: c,
             beta: 1, c: dinp, ldc: c)
    }
    gemm(transA: true, transB: false, m: oc, n: c, k: n, alpha: 1, a: dout, lda: oc, b: inp, ldb: c,
         beta: 1, c: dweight, ldc: c)
}


/// out[r] += bias for every row (a projection's bias after its matmul).
/// - Shapes: out [n, oc] · bias [oc]
public func addBias(_ out: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, n: Int, oc: Int) {
    for r in 0..<n {
        let y = out + r * oc
        for j in 0..<oc { y[j] += bias[j] }
    }
}

/// Backward of ``addBias``: dbias += Σ_r dout[r] (in Double, so the sum does not depend on n's size).
/// - Shapes: dbias [oc] · dout [n, oc]
public func biasBackward(dbias: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, n: Int, oc: Int) {
    var acc = [Double](repeating: 0, count: oc)
    for r in 0..<n {
        let d = dout + r * oc
        for j in 0..<oc { acc[j] += Double(d[j]) }
    }
    for j in 0..<oc { dbias[j] += Float(acc[j]) }
}
