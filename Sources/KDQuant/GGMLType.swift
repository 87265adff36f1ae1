// GGML tensor types and their block layouts, and dequantization bit-exact with ggml's dequantize_row_* reference
// (ggml-quants.c) and gguf-py's numpy port: same operations in the same order, all in Float.
import KDCore

/// The GGML tensor types distill reads; raw values are the on-disk type ids.
public enum GGMLType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, iq4_nl = 20, iq4_xs = 23, bf16 = 30, mxfp4 = 39

    public var description: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q5_0: return "Q5_0"
        case .q5_1: return "Q5_1"
        case .q8_0: return "Q8_0"
        case .q2_K: return "Q2_K"
        case .q3_K: return "Q3_K"
        case .q4_K: return "Q4_K"
        case .q5_K: return "Q5_K"
        case .q6_K: return "Q6_K"
        case .iq4_nl: return "IQ4_NL"
        case .iq4_xs: return "IQ4_XS"
        case .mxfp4: return "MXFP4"
        }
    }

    /// The type llama.cpp's quantizer writes instead of this one for rows of `c` elements that its blocks do not
    /// divide (llama-quant.cpp's fallback, as llama-cpp-python 0.3.36 does it: Q2_K and Q3_K → Q4_0, Q4_K → Q5_0,
    /// Q5_K → Q5_1, Q6_K → Q8_0; SmolLM2's 576-wide rows take it); this type where its blocks fit.
    public func forRows(of c: Int) -> GGMLType {
        guard c % blockSize != 0 else { return self }
        switch self {
        case .q2_K, .q3_K: return .q4_0
        case .q4_K: return .q5_0
        case .q5_K: return .q5_1
        case .q6_K: return .q8_0
        default: return self
        }
    }

    /// Elements per block.
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .iq4_nl, .mxfp4: return 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .iq4_xs: return 256
        }
    }

    /// Bytes per block.
    public var typeSize: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .q4_0: return 18
        case .q4_1: return 20
        case .q5_0: return 22
        case .q5_1: return 24
        case .q8_0: return 34
        case .q2_K: return 84
        case .q3_K: return 110
        case .q4_K: return 144
        case .q5_K: return 176
        case .q6_K: return 210
        case .iq4_nl: return 18
        case .iq4_xs: return 136
        case .mxfp4: return 17
        }
    }

    /// Bytes of `count` elements (count must be a multiple of blockSize).
    public func byteCount(elements count: Int) -> Int { count / blockSize * typeSize }
}

@inline(__always) func f16(_ p: UnsafeRawPointer, _ off: Int) -> Float {
    Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: off, as: UInt16.self)))
}

@inline(__always) func u8(_ p: UnsafeRawPointer, _ off: Int) -> UInt8 { p.load(fromByteOffset: off, as: UInt8.self) }

/// 6-bit scale and min j of a Q4_K/Q5_K block (ggml get_scale_min_k4).
@inline(__always) func scaleMinK4(_ j: Int, _ q: UnsafeRawPointer) -> (Float, Float) {
    if j < 4 {
        return (Float(u8(q, j) & 63), Float(u8(q, j + 4) & 63))
    }
    let d = (u8(q, j + 4) & 0xF) | ((u8(q, j - 4) >> 6) << 4)
    let m = (u8(q, j + 4) >> 4) | ((u8(q, j) >> 6) << 4)
    return (Float(d), Float(m))
}

/// The 16 levels of IQ4_NL and IQ4_XS (ggml's kvalues_iq4nl): a 4-bit index picks one, times the block's scale.
let iq4Levels: [Float] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]

/// Dequantizes `count` elements (a multiple of the block size) starting at `src` into `out`.
public func dequantize(_ type: GGMLType, src: UnsafeRawPointer, out y: UnsafeMutablePointer<Float>, count: Int) {
    precondition(count % type.blockSize == 0, "dequantize \(type): \(count) elements is not a multiple of \(type.blockSize)")
    let nb = count / type.blockSize, ts = type.typeSize
    switch type {
    case .f32:
        y.update(from: src.assumingMemoryBound(to: Float.self), count: count)
    case .f16:
        for i in 0..<count { y[i] = f16(src, 2 * i) }
    case .bf16:
        for i in 0..<count {
            y[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
        }
    case .q4_0:
        for b in 0..<nb {
            let x = src + b * ts, d = f16(x, 0), o = y + b * 32
            for j in 0..<16 {
                let q = u8(x, 2 + j)
                o[j] = d * Float(Int8(q & 0xF) - 8)
                o[j + 16] = d * Float(Int8(q >> 4) - 8)
            }
        }
    case .q4_1:
        for b in 0..<nb {
            let x = src + b * ts, d = f16(x, 0), m = f16(x, 2), o = y + b * 32
            for j in 0..<16 {
                let q = u8(x, 4 + j)
                o[j] = d * Float(q & 0xF) + m
                o[j + 16] = d * Float(q >> 4) + m
            }
        }
    case .q5_0:
        for b in 0..<nb {
            let x = src + b * ts, d = f16(x, 0), qh = x.loadUnaligned(fromByteOffset: 2, as: UInt32.self), o = y + b * 32
            for j in 0..<16 {
                let q = u8(x, 6 + j)
                let h0 = UInt8(truncatingIfNeeded: ((qh >> UInt32(j)) << 4) & 0x10)
                let h1 = UInt8(truncatingIfNeeded: (qh >> UInt32(j + 12)) & 0x10)
                o[j] = d * Float(Int8((q & 0xF) | h0) - 16)
                o[j + 16] = d * Float(Int8((q >> 4) | h1) - 16)
            }
        }
    case .q5_1:
        for b in 0..<nb {
            let x = src + b * ts, d = f16(x, 0), m = f16(x, 2), qh = x.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
            let o = y + b * 32
            for j in 0..<16 {
                let q = u8(x, 8 + j)
                let h0 = UInt8(truncatingIfNeeded: ((qh >> UInt32(j)) << 4) & 0x10)
                let h1 = UInt8(truncatingIfNeeded: (qh >> UInt32(j + 12)) & 0x10)
                o[j] = d * Float((q & 0xF) | h0) + m
                o[j + 16] = d * Float((q >> 4) | h1) + m
            }
        }
    case .q8_0:
        for b in 0..<nb {
            let x = src + b * ts, d = f16(x, 0), o = y + b * 32
            for j in 0..<32 { o[j] = Float(x.load(fromByteOffset: 2 + j, as: Int8.self)) * d }
        }
    case .q2_K:
        // scales[16] qs[64] d dmin
        for b in 0..<nb {
            let x = src + b * ts, d = f16(x, 80), dmin = f16(x, 82)
            var o = y + b * 256, q = 16, isc = 0
            for _ in 0..<2 {
                var shift: UInt8 = 0
                for _ in 0..<4 {
                    for half in 0..<2 {
                        let sc = u8(x, isc)
                        isc += 1
                        let dl = d * Float(sc & 0xF), ml = dmin * Float(sc >> 4)
                        for l in 0..<16 { o[l] = dl * Float((u8(x, q + 16 * half + l) >> shift) & 3) - ml }
                        o += 16
                    }
                    shift += 2
                }
                q += 32
            }
        }
    case .q3_K:
        // hmask[32] qs[64] scales[12] d
        for b in 0..<nb {
            let x = src + b * ts, dAll = f16(x, 108)
            var aux = (x.loadUnaligned(fromByteOffset: 96, as: UInt32.self), x.loadUnaligned(fromByteOffset: 100, as: UInt32.self),
                       x.loadUnaligned(fromByteOffset: 104, as: UInt32.self), UInt32(0))
            let k1: UInt32 = 0x0303_0303, k2: UInt32 = 0x0f0f_0f0f, tmp = aux.2
            aux.2 = ((aux.0 >> 4) & k2) | (((tmp >> 4) & k1) << 4)
            aux.3 = ((aux.1 >> 4) & k2) | (((tmp >> 6) & k1) << 4)
            aux.0 = (aux.0 & k2) | (((tmp >> 0) & k1) << 4)
            aux.1 = (aux.1 & k2) | (((tmp >> 2) & k1) << 4)
            var scales = [Int8](repeating: 0, count: 16)
            withUnsafeBytes(of: &aux) { raw in for i in 0..<16 { scales[i] = raw.load(fromByteOffset: i, as: Int8.self) } }
            var o = y + b * 256, q = 32, isc = 0, m: UInt8 = 1
            for _ in 0..<2 {
                var shift: UInt8 = 0
                for _ in 0..<4 {
                    for half in 0..<2 {
                        let dl = dAll * Float(Int(scales[isc]) - 32)
                        isc += 1
                        for l in 0..<16 {
                            let ql = Int8((u8(x, q + 16 * half + l) >> shift) & 3)
                            let hm: Int8 = (u8(x, 16 * half + l) & m) != 0 ? 0 : 4
                            o[l] = dl * Float(ql - hm)
                        }
                        o += 16
                    }
                    shift += 2
                    m <<= 1
                }
                q += 32
            }
        }
    case .q4_K:
        // d dmin scales[12] qs[128]
        for b in 0..<nb {
            let x = src + b * ts, d = f16(x, 0), dmin = f16(x, 2), sc = x + 4
            var o = y + b * 256, q = 16, isc = 0
            for _ in 0..<4 {
                let (s1, m1) = scaleMinK4(isc, sc), (s2, m2) = scaleMinK4(isc + 1, sc)
                let d1 = d * s1, mm1 = dmin * m1, d2 = d * s2, mm2 = dmin * m2
                for l in 0..<32 { o[l] = d1 * Float(u8(x, q + l) & 0xF) - mm1 }
                for l in 0..<32 { o[32 + l] = d2 * Float(u8(x, q + l) >> 4) - mm2 }
                o += 64; q += 32; isc += 2
            }
        }
    case .q5_K:
        // d dmin scales[12] qh[32] qs[128]
        for b in 0..<nb {
            let x = src + b * ts, d = f16(x, 0), dmin = f16(x, 2), sc = x + 4
            var o = y + b * 256, ql = 48, isc = 0, u1: UInt8 = 1, u2: UInt8 = 2
            for _ in 0..<4 {
                let (s1, m1) = scaleMinK4(isc, sc), (s2, m2) = scaleMinK4(isc + 1, sc)
                let d1 = d * s1, mm1 = dmin * m1, d2 = d * s2, mm2 = dmin * m2
                for l in 0..<32 {
                    let h: UInt8 = (u8(x, 16 + l) & u1) != 0 ? 16 : 0
                    o[l] = d1 * Float((u8(x, ql + l) & 0xF) + h) - mm1
                }
                for l in 0..<32 {
                    let h: UInt8 = (u8(x, 16 + l) & u2) != 0 ? 16 : 0
                    o[32 + l] = d2 * Float((u8(x, ql + l) >> 4) + h) - mm2
                }
                o += 64; ql += 32; isc += 2; u1 <<= 2; u2 <<= 2
            }
        }
    case .q6_K:
        // ql[128] qh[64] scales[16] d
        for b in 0..<nb {
            let x = src + b * ts, d = f16(x, 208)
            var o = y + b * 256, ql = 0, qh = 128, sc = 192
            for _ in 0..<2 {
                for l in 0..<32 {
                    let isc = l / 16, h = u8(x, qh + l)
                    let q1 = Int8(bitPattern: (u8(x, ql + l) & 0xF) | (((h >> 0) & 3) << 4)) - 32
                    let q2 = Int8(bitPattern: (u8(x, ql + l + 32) & 0xF) | (((h >> 2) & 3) << 4)) - 32
                    let q3 = Int8(bitPattern: (u8(x, ql + l) >> 4) | (((h >> 4) & 3) << 4)) - 32
                    let q4 = Int8(bitPattern: (u8(x, ql + l + 32) >> 4) | (((h >> 6) & 3) << 4)) - 32
                    func s(_ k: Int) -> Float { Float(x.load(fromByteOffset: sc + isc + k, as: Int8.self)) }
                    o[l] = d * s(0) * Float(q1)
                    o[l + 32] = d * s(2) * Float(q2)
                    o[l + 64] = d * s(4) * Float(q3)
                    o[l + 96] = d * s(6) * Float(q4)
                }
                o += 128; ql += 64; qh += 32; sc += 8
            }
        }
    case .iq4_nl:
        // d qs[16]: element j of the block is qs[j] & 0xF, element j + 16 is qs[j] >> 4
        for b in 0..<nb {
            let x = src + b * ts, d = f16(x, 0), o = y + b * 32
            for j in 0..<16 {
                o[j] = d * iq4Levels[Int(u8(x, 2 + j) & 0xF)]
                o[j + 16] = d * iq4Levels[Int(u8(x, 2 + j) >> 4)]
            }
        }
    case .mxfp4:
        // e qs[16]: element j of the block is code qs[j] & 0xF, element j + 16 code qs[j] >> 4, times 2^(e − 128)
        for b in 0..<nb {
            let x = src + b * ts, d = MXFP4.unit(u8(x, 0)), o = y + b * 32
            for j in 0..<16 {
                o[j] = MXFP4.codes[Int(u8(x, 1 + j) & 0xF)] * d
                o[j + 16] = MXFP4.codes[Int(u8(x, 1 + j) >> 4)] * d
            }
        }
    case .iq4_xs:
        // d scales_h (u16: 2 high bits per 32-block) scales_l[4] (4 low bits per 32-block) qs[128]; scale = 6 bits − 32
        for b in 0..<nb {
            let x = src + b * ts, d = f16(x, 0), high = x.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
            for ib in 0..<8 {
                let low = (u8(x, 4 + ib / 2) >> (4 * UInt8(ib % 2))) & 0xF
                let ls = Int(low) | (Int((high >> (2 * UInt16(ib))) & 3) << 4)
                let dl = d * Float(ls - 32), q = 8 + 16 * ib, o = y + b * 256 + 32 * ib
                for j in 0..<16 {
                    o[j] = dl * iq4Levels[Int(u8(x, q + j) & 0xF)]
                    o[j + 16] = dl * iq4Levels[Int(u8(x, q + j) >> 4)]
                }
            }
        }
    }
}
