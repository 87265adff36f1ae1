// Q4_0, Q5_0, Q4_1 and Q5_1 weighted by an importance matrix, bit for bit as llama-quantize --imatrix writes them
// (ggml's quantize_row_q4_0_impl … q5_1_impl): each weight weighs qw · √(σ² + x²), σ² the mean square of its whole row
// (IQ4_NL's is its block's). Q4_0's and Q5_0's block scale is make_qx_quants's weighted least-squares fit over the
// levels −nmax…nmax−1 (nmax 8 / 16) at the best of 19 trial scales around −nmax / (the value of largest magnitude);
// Q4_1's and Q5_1's scale and minimum are make_qkx3_quants's weighted fit over the levels 0…15 / 31 at the best of 37
// trials. Without an importance matrix all four keep ggml's reference rule (Quantize.swift), as llama-quantize writes
// them without one. The search runs 16 blocks at a time on SIMD lanes (CKDKernels' kd_qx_weighted_16, bit for
// bit `referenceBlock`, which stays as what the tests hold it to).
import CKDKernels
import Foundation

enum WeightedQ {
    static func nmax(_ type: GGMLType) -> Int {
        switch type {
        case .q4_0: return 8
        case .q5_0: return 16
        case .q4_1: return 15
        case .q5_1: return 31
        default: preconditionFailure("WeightedQ: \(type) is not Q4_0, Q5_0, Q4_1 or Q5_1")
        }
    }

    /// ggml's σ² for a row: Σ x² in element order over the row, divided by its length.
    static func rowSigma2(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var s: Float = 0
        for j in 0..<n { s += x[j] * x[j] }
        return s / Float(n)
    }

    /// make_qx_quants (rmse_type 1) with the weights qw · √(σ² + x²) on one block of 32, one operation at a time as
    /// ggml's scalar code: levels + nmax into L, returns the scale.
    static func referenceBlock(_ x: UnsafePointer<Float>, nmax: Int, qw: UnsafePointer<Float>, sigma2: Float, _ L: UnsafeMutablePointer<Int8>) -> Float {
        var w = [Float](repeating: 0, count: 32)
        for j in 0..<32 { w[j] = qw[j] * (sigma2 + x[j] * x[j]).squareRoot() }
        return w.withUnsafeBufferPointer { makeQx(32, nmax, x, L, w: $0.baseAddress!) }
    }

    /// Writes one Q4_1 / Q5_1 block: the F16 scale and minimum, then (Q5_1) the levels' fifth bits as a little-endian
    /// u32, then level j in the low nibble of byte j and level j + 16 in its high one.
    static func packAsymmetric(_ type: GGMLType, scale: Float, min: Float, _ L: UnsafePointer<UInt8>, _ y: UnsafeMutableRawPointer) {
        y.storeBytes(of: Float16(scale).bitPattern, as: UInt16.self)
        y.storeBytes(of: Float16(min).bitPattern, toByteOffset: 2, as: UInt16.self)
        var at = 4
        if type == .q5_1 {
            var qh: UInt32 = 0
            for j in 0..<32 { qh |= UInt32((L[j] >> 4) & 1) << UInt32(j) }
            y.storeBytes(of: qh.littleEndian, toByteOffset: 4, as: UInt32.self)
            at = 8
        }
        for j in 0..<16 { y.storeBytes(of: (L[j] & 0xF) | ((L[j + 16] & 0xF) << 4), toByteOffset: at + j, as: UInt8.self) }
    }

    /// Writes one block: the F16 scale, then (Q5_0) the levels' fifth bits as a little-endian u32, then level j in the
    /// low nibble of byte j and level j + 16 in its high one.
    static func pack(_ type: GGMLType, scale: Float, _ L: UnsafePointer<Int8>, _ y: UnsafeMutableRawPointer) {
        y.storeBytes(of: Float16(scale).bitPattern, as: UInt16.self)
        var at = 2
        if type == .q5_0 {
            var qh: UInt32 = 0
            for j in 0..<32 { qh |= UInt32((UInt8(L[j]) >> 4) & 1) << UInt32(j) }
            y.storeBytes(of: qh.littleEndian, toByteOffset: 2, as: UInt32.self)
            at = 6
        }
        for j in 0..<16 { y.storeBytes(of: (UInt8(L[j]) & 0xF) | ((UInt8(L[j + 16]) & 0xF) << 4), toByteOffset: at + j, as: UInt8.self) }
    }

    /// Quantizes `count` floats (whole rows of `importance.perRow`) into Q4_0, Q5_0, Q4_1 or Q5_1 blocks weighted by
    /// `importance`, 16 blocks to a kd_qx_weighted_16 (kd_make_qkx2) call (`lanes: false`: the reference, one block at a
    /// time). With `values`, also writes what the blocks read back as and, with `mask`, 0 where a weight lay beyond its
    /// block's grid (an end level, the weight outside its value), else 1. `values` may be `src`.
    static func quantize(_ type: GGMLType, _ src: UnsafePointer<Float>, count: Int, importance: Importance, out: UnsafeMutableRawPointer?,
                         values: UnsafeMutablePointer<Float>? = nil, mask: UnsafeMutablePointer<Float>? = nil, lanes: Bool = true) {
        let nmax = nmax(type), perRow = importance.perRow, ts = type.typeSize
        precondition(count % perRow == 0, "WeightedQ: \(count) elements are not whole rows of \(perRow)")
        let nb = count / 32, blocksPerRow = perRow / 32, rows = count / perRow
        // one allocation: σ² per row, then per 16 blocks their importances, σ², scales, F16-rounded scales and levels
        let floats = UnsafeMutablePointer<Float>.allocate(capacity: rows + 16 * 32 + 48)
        let L = UnsafeMutablePointer<Int8>.allocate(capacity: 16 * 32)
        defer { floats.deallocate(); L.deallocate() }
        let sigma2 = floats, qw = floats + rows, s2 = qw + 16 * 32, scales = s2 + 16, d = scales + 16
        for r in 0..<rows { sigma2[r] = rowSigma2(src + r * perRow, perRow) }
        if type == .q4_1 || type == .q5_1 {
            quantizeAsymmetric(type, src, nb: nb, blocksPerRow: blocksPerRow, sigma2: sigma2, importance: importance, out: out, values: values, mask: mask, lanes: lanes)
            return
        }
        for b0 in stride(from: 0, to: nb, by: 16) {
            let n = min(16, nb - b0)
            importance.gather(first: b0, n: n, into: qw)
            for b in 0..<n { s2[b] = sigma2[(b0 + b) / blocksPerRow] }
            if lanes {
                kd_qx_weighted_16(src + b0 * 32, Int32(n), Int32(nmax), qw, s2, scales, L)
            } else {
                for b in 0..<n { scales[b] = referenceBlock(src + (b0 + b) * 32, nmax: nmax, qw: qw + b * 32, sigma2: s2[b], L + b * 32) }
            }
            if let out { for b in 0..<n { pack(type, scale: scales[b], L + b * 32, out + (b0 + b) * ts) } }
            if let values {
                for b in 0..<n { d[b] = Float(Float16(scales[b])) }
                kd_qx_dequant_16(src + b0 * 32, Int32(n), Int32(nmax), d, L, values + b0 * 32, mask.map { $0 + b0 * 32 })
            }
        }
    }
}

extension WeightedQ {
    /// Q4_1 / Q5_1: make_qkx3_quants (ggml's make_qkx2 search with rmin −0.9, rdelta 0.05, 36 steps, squared error) on
    /// 16 blocks at a time (kd_make_qkx2), or one block at a time by the scalar reference.
    static func quantizeAsymmetric(_ type: GGMLType, _ src: UnsafePointer<Float>, nb: Int, blocksPerRow: Int, sigma2: UnsafePointer<Float>,
                                   importance: Importance, out: UnsafeMutableRawPointer?, values: UnsafeMutablePointer<Float>?,
                                   mask: UnsafeMutablePointer<Float>?, lanes: Bool) {
        let nmax = nmax(type), ts = type.typeSize
        let w = UnsafeMutablePointer<Float>.allocate(capacity: 16 * 32 + 48), L = UnsafeMutablePointer<UInt8>.allocate(capacity: 16 * 32 + 32)
        defer { w.deallocate(); L.deallocate() }
        let scales = w + 16 * 32, negMins = scales + 16, aux = L + 16 * 32
        for b0 in stride(from: 0, to: nb, by: 16) {
            let n = min(16, nb - b0), x = src + b0 * 32
            for b in 0..<n {
                let blk = b0 + b, s2 = sigma2[blk / blocksPerRow], qw = importance.weights + (blk % blocksPerRow) * 32
                for i in 0..<32 { w[b * 32 + i] = qw[i] * (s2 + x[b * 32 + i] * x[b * 32 + i]).squareRoot() }
            }
            if lanes {
                kd_make_qkx2(Int32(n), 32, Int32(nmax), x, w, L, scales, negMins, -0.9, 0.05, 36, 0)
            } else {
                for b in 0..<n {
                    let r = makeQkx2(32, nmax, x + b * 32, w + b * 32, L + b * 32, aux, rmin: -0.9, rdelta: 0.05, nstep: 36, mad: false)
                    scales[b] = r.scale; negMins[b] = r.negMin
                }
            }
            for b in 0..<n {
                let blk = b0 + b, lb = L + b * 32
                if let out { packAsymmetric(type, scale: scales[b], min: -negMins[b], lb, out + blk * ts) }
                guard let values else { continue }
                let d = Float(Float16(scales[b])), m = Float(Float16(-negMins[b]))
                for i in 0..<32 {
                    let e = blk * 32 + i, li = Int(lb[i]), v = Float(li) * d + m
                    if let mask {
                        let xv = src[e]
                        mask[e] = (li == 0 && xv < v) || (li == nmax && xv > v) ? 0 : 1
                    }
                    values[e] = v  // last: values may be src
                }
            }
        }
    }
}

/// Q4_0, Q5_0, Q4_1 or Q5_1 weighted by `importance` quantized one block at a time by the scalar reference (ggml's
/// order of operations): what `quantize(…, importance:)`, which runs 16 blocks on SIMD lanes, is checked against.
public func quantizeWeightedOneBlockAtATime(_ type: GGMLType, src: UnsafePointer<Float>, count: Int, out: UnsafeMutableRawPointer, importance: Importance) {
    WeightedQ.quantize(type, src, count: count, importance: importance, out: out, lanes: false)
}
