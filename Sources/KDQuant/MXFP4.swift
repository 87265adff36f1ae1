// MXFP4 (the OCP microscaling format gpt-oss ships in; GGUF type 39): blocks of 32 weights, each a 4-bit E2M1 code —
// a sign and one of the magnitudes 0, ½, 1, 1½, 2, 3, 4, 6 — times the block's power-of-two scale, stored as one
// E8M0 byte: 17 bytes a block, 4.25 bits a weight (Q4_0 and IQ4_NL take 4.5), the only format under 4.5 bits whose
// blocks divide a 576-wide row. ggml holds the magnitudes doubled (kvalues_mxfp4: 0, 1, 2, 3, 4, 6, 8, 12, then the
// same negated) and reads the byte e as 2^(e − 128) (GGML_E8M0_TO_FP32_HALF), so a code k means k · 2^(e − 128).
// Quantized bit for bit as ggml's quantize_row_mxfp4_ref does (no search, no importance): e = floor(log2f(amax)) −
// 2 + 127, then each weight takes the first of the 16 codes (in table order) nearest to it — so the largest weight
// reads back 8…16 × the scale's unit and is clipped to 12 of them above 12. Byte j holds code j in its low nibble and
// code j + 16 in its high one.
// The reference scans the 16 codes as ggml does; the fast path (used everywhere) compares |x| / unit with the
// midpoints between magnitudes: the unit is a power of two, so the division is exact, and near a midpoint every
// distance the scan compares is exact too, so both pick the same code (ties go to the smaller magnitude, and a weight
// nearest zero takes code 0, never the negative zero) — tested float by float around every midpoint.
import Foundation

enum MXFP4 {
    /// ggml's kvalues_mxfp4: twice the E2M1 values, positive codes 0…7, negative 8…15.
    static let codes: [Float] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]
    /// Midpoints between consecutive magnitudes (in units of 2^(e − 128)): at or below m_i the magnitude is i's.
    static let midpoints: [Float] = [0.5, 1.5, 2.5, 3.5, 5, 7, 10]

    /// The scale byte of a block whose largest magnitude is amax, as ggml computes it (0 for an all-zero block; 255,
    /// the largest unit, for an infinite weight, where ggml's cast to uint8 is undefined).
    @inline(__always) static func exponent(amax: Float) -> UInt8 {
        guard amax > 0 else { return 0 }
        let e = log2f(amax).rounded(.down) - 2 + 127
        return e.isFinite ? UInt8(truncatingIfNeeded: Int(e)) : 255
    }

    /// GGML_E8M0_TO_FP32_HALF: 2^(e − 128), the bits ggml builds (subnormal below e = 2).
    @inline(__always) static func unit(_ e: UInt8) -> Float {
        Float(bitPattern: e < 2 ? UInt32(0x0020_0000) << UInt32(e) : UInt32(e - 1) << 23)
    }

    /// ggml's best_index_mxfp4: the first code in table order whose value is nearest to x.
    static func referenceIndex(_ x: Float, unit d: Float) -> UInt8 {
        var best = 0, bestErr = abs(codes[0] * d - x)
        for i in 1..<16 {
            let err = abs(codes[i] * d - x)
            if err < bestErr { best = i; bestErr = err }
        }
        return UInt8(best)
    }

    /// The same code by comparing |x| / d with the midpoints. - Precondition: d a normal power of two.
    @inline(__always) static func index(_ x: Float, inverseUnit id: Float) -> UInt8 {
        let a = abs(x) * id
        var m: UInt8 = 0
        for t in midpoints where a > t { m += 1 }
        return m != 0 && x < 0 ? m + 8 : m
    }

    /// One block's scale byte and 32 codes, as ggml quantizes it; `reference` scans the codes as ggml does.
    static func block(_ x: UnsafePointer<Float>, _ q: UnsafeMutablePointer<UInt8>, reference: Bool = false) -> UInt8 {
        var amax: Float = 0
        for j in 0..<32 where amax < abs(x[j]) { amax = abs(x[j]) }
        let e = exponent(amax: amax), d = unit(e)
        // the fast rule needs 1 / d exact and the products unclipped: every weight a model holds (e in 2…253)
        if reference || e < 2 || e > 253 {
            for j in 0..<32 { q[j] = referenceIndex(x[j], unit: d) }
        } else {
            let id = 1 / d
            for j in 0..<32 { q[j] = index(x[j], inverseUnit: id) }
        }
        return e
    }

    /// Quantizes nb blocks of 32 at `x` into `y` (17 bytes each: the scale byte, then 16 bytes of codes).
    static func quantize(_ x: UnsafePointer<Float>, blocks nb: Int, _ y: UnsafeMutableRawPointer, reference: Bool = false) {
        var q = [UInt8](repeating: 0, count: 32)
        q.withUnsafeMutableBufferPointer { q in
            for b in 0..<nb {
                let e = block(x + b * 32, q.baseAddress!, reference: reference), o = y + b * 17
                o.storeBytes(of: e, as: UInt8.self)
                for j in 0..<16 { o.storeBytes(of: q[j] | (q[j + 16] << 4), toByteOffset: 1 + j, as: UInt8.self) }
            }
        }
    }

    /// dequantize(quantize(x)) for nb blocks, and where `mask` is given 0 where a weight lay beyond ±12 units (clipped
    /// to the grid's end: no gradient through it), 1 elsewhere. out may be x.
    static func fakeQuantize(_ x: UnsafePointer<Float>, blocks nb: Int, out: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<Float>?) {
        var q = [UInt8](repeating: 0, count: 32)
        q.withUnsafeMutableBufferPointer { q in
            for b in 0..<nb {
                let xb = x + b * 32, ob = out + b * 32
                let d = unit(block(xb, q.baseAddress!))
                if let mask {
                    let top = 12 * d
                    for j in 0..<32 { mask[b * 32 + j] = abs(xb[j]) > top || xb[j].isInfinite ? 0 : 1 }  // 12 units are infinite at e = 255
                }
                for j in 0..<32 { ob[j] = codes[Int(q[j])] * d }
            }
        }
    }
}

/// MXFP4 quantized by the reference, which scans the 16 codes for each weight as ggml's best_index_mxfp4 does: what
/// `quantize(.mxfp4, …)` is checked against. - Precondition: count a multiple of 32.
public func quantizeMXFP4ScanningCodes(src: UnsafePointer<Float>, count: Int, out: UnsafeMutableRawPointer) {
    precondition(count % 32 == 0)
    MXFP4.quantize(src, blocks: count / 32, out, reference: true)
}
