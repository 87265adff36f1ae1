// IQ4_NL: blocks of 32 weights, each a 4-bit index into 16 non-uniform levels (iq4Levels, denser near zero) times the
// block's F16 scale — Q4_0's 4.5 bits a weight with a grid shaped like the weights. Quantized bit for bit as ggml's
// quantize_iq4_nl does (what llama_model_quantize writes for IQ4_NL): weights x² (with an importance matrix qw, as
// llama-quantize --imatrix: qw · √(σ² + x²), σ² = 2/32 · Σ x² over the block), a first
// scale from the value of largest magnitude, then 15 trial scales (−7…7 around −127 / that value), each scored by
// the weighted least-squares fit (Σ w·q·x)² / Σ w·q²; the best fit's scale is stored as F16 and the indices are picked
// again against it (in F32, as ggml does). Its blocks divide every row a llama.cpp model has, so it needs no fallback.
// The reference here runs one block at a time with ggml's binary search; the fast path (CKDKernels/kquant.c,
// kd_iq4nl_16) runs 16 blocks on SIMD lanes and is tested against it.
import CKDKernels

enum IQ4NL {
    /// ggml's best_index_int8 on the 16 levels: the nearest level's index, the upper one at a tie.
    static func bestIndex(_ x: Float) -> Int {
        if x <= iq4Levels[0] { return 0 }
        if x >= iq4Levels[15] { return 15 }
        var ml = 0, mu = 15
        while mu - ml > 1 {
            let mav = (ml + mu) / 2
            if x < iq4Levels[mav] { mu = mav } else { ml = mav }
        }
        return x - iq4Levels[mu - 1] < iq4Levels[mu] - x ? mu - 1 : mu
    }

    /// One block of 32 as ggml quantizes it, one operation at a time: the scale (F32, before F16) and the indices.
    /// `qw`: the block's 32 columns of an importance matrix (each element then weighs qw · √(σ² + x²), σ² = 2/32 · Σ x²).
    static func referenceBlock(_ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<UInt8>, qw: UnsafePointer<Float>? = nil) -> Float {
        var weight = [Float](repeating: 0, count: 32)
        if let qw {
            var sigma2: Float = 0
            for j in 0..<32 { sigma2 += x[j] * x[j] }
            sigma2 *= 2 / 32
            for j in 0..<32 { weight[j] = qw[j] * (sigma2 + x[j] * x[j]).squareRoot() }
        } else {
            for j in 0..<32 { weight[j] = x[j] * x[j] }
        }
        let (mx, amax) = signedLargest(x, 32)
        var scale: Float = 0
        if !(amax < groupMaxEps) {
            func sums(_ id: Float) -> (qx: Float, q2: Float) {
                var sumqx: Float = 0, sumq2: Float = 0
                for j in 0..<32 {
                    let q = iq4Levels[bestIndex(id * x[j])], w = weight[j]
                    sumqx += w * q * x[j]
                    sumq2 += w * q * q
                }
                return (sumqx, sumq2)
            }
            let d0 = -mx / iq4Levels[0]
            var (sumqx, sumq2) = sums(1 / d0)
            var d = sumq2 > 0 ? sumqx / sumq2 : 0
            var best = d * sumqx
            for itry in -7...7 {
                (sumqx, sumq2) = sums(Float(itry - 127) / mx)
                if sumq2 > 0 && sumqx * sumqx > best * sumq2 {
                    d = sumqx / sumq2
                    best = d * sumqx
                }
            }
            scale = d
        }
        let id: Float = scale != 0 ? 1 / scale : 0
        for j in 0..<32 { L[j] = UInt8(bestIndex(id * x[j])) }
        return scale
    }

    /// Writes one block's bytes: the F16 scale, then index j in the low nibble of byte j and index j + 16 in its high one.
    static func pack(scale: Float, _ L: UnsafePointer<UInt8>, _ y: UnsafeMutableRawPointer) {
        y.storeBytes(of: Float16(scale).bitPattern, as: UInt16.self)
        for j in 0..<16 { y.storeBytes(of: L[j] | (L[j + 16] << 4), toByteOffset: 2 + j, as: UInt8.self) }
    }

    /// Importances for the lane kernel (``Importance/gather(first:n:into:)``); nil without one.
    static func gather(_ importance: Importance?, first b0: Int, n: Int, into qw: UnsafeMutablePointer<Float>) -> UnsafePointer<Float>? {
        guard let importance else { return nil }
        importance.gather(first: b0, n: n, into: qw)
        return UnsafePointer(qw)
    }

    /// Quantizes nb blocks of 32 at `x` into `y` (18 bytes each), 16 blocks to a kd_iq4nl_16 call; `lanes: false`
    /// runs the reference one block at a time, `portable` the lane kernel without AVX-512's lookups.
    static func quantize(_ x: UnsafePointer<Float>, blocks nb: Int, _ y: UnsafeMutableRawPointer, importance: Importance? = nil,
                         lanes: Bool = true, portable: Bool = false) {
        var scales = [Float](repeating: 0, count: 16), L = [UInt8](repeating: 0, count: 16 * 32), qw = [Float](repeating: 0, count: 16 * 32)
        for b0 in stride(from: 0, to: nb, by: 16) {
            let n = min(16, nb - b0)
            qw.withUnsafeMutableBufferPointer { q in
                let w = gather(importance, first: b0, n: n, into: q.baseAddress!)
                if lanes {
                    kd_iq4nl_16(x + b0 * 32, Int32(n), w, &scales, &L, portable ? 1 : 0)
                } else {
                    L.withUnsafeMutableBufferPointer {
                        for b in 0..<n { scales[b] = referenceBlock(x + (b0 + b) * 32, $0.baseAddress! + b * 32, qw: w.map { $0 + b * 32 }) }
                    }
                }
            }
            L.withUnsafeBufferPointer { for b in 0..<n { pack(scale: scales[b], $0.baseAddress! + b * 32, y + (b0 + b) * 18) } }
        }
    }

    /// dequantize(quantize(x)) for nb blocks and, where `mask` is given, 1 where the gradient passes and 0 where an
    /// element lay beyond its block's grid (index 0 or 15, the weight outside the value it reads back as). out may be x.
    static func fakeQuantize(_ x: UnsafePointer<Float>, blocks nb: Int, out: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<Float>?,
                             importance: Importance? = nil) {
        var scales = [Float](repeating: 0, count: 16), d = scales, L = [UInt8](repeating: 0, count: 16 * 32), qw = [Float](repeating: 0, count: 16 * 32)
        for b0 in stride(from: 0, to: nb, by: 16) {
            let n = min(16, nb - b0)
            qw.withUnsafeMutableBufferPointer { q in
                kd_iq4nl_16(x + b0 * 32, Int32(n), gather(importance, first: b0, n: n, into: q.baseAddress!), &scales, &L, 0)
            }
            for b in 0..<n { d[b] = Float(Float16(scales[b])) }
            kd_iq4nl_dequant_16(x + b0 * 32, Int32(n), d, L, out + b0 * 32, mask.map { $0 + b0 * 32 })
        }
    }
}

/// IQ4_NL quantized one block at a time by the scalar reference (ggml's binary search, one operation at a time): what
/// `quantize(.iq4_nl, …)`, which runs 16 blocks on SIMD lanes, is checked against. - Precondition: count a multiple of 32.
public func quantizeIQ4NLOneBlockAtATime(src: UnsafePointer<Float>, count: Int, out: UnsafeMutableRawPointer, importance: Importance? = nil) {
    precondition(count % 32 == 0)
    IQ4NL.quantize(src, blocks: count / 32, out, importance: importance, lanes: false)
}

/// IQ4_NL on SIMD lanes without AVX-512's level lookups (what an AVX2 CPU runs), for the tests on machines that have them.
public func quantizeIQ4NLPortable(src: UnsafePointer<Float>, count: Int, out: UnsafeMutableRawPointer, importance: Importance? = nil) {
    precondition(count % 32 == 0)
    IQ4NL.quantize(src, blocks: count / 32, out, importance: importance, portable: true)
}
