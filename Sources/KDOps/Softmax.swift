// Numerically stable softmax / log-softmax over rows, with a vectorized exp (Cephes expf polynomial, ~2 ulp).
// Dims: n rows, v row length (vocabulary or keys).
import CKDKernels
import KDCore

public typealias V16 = SIMD16<Float>

/// e^x lane by lane: x = k·ln2 + r with |r| ≤ ln2/2, e^r by a degree-7 polynomial, 2^k through the exponent bits.
/// Inputs are clamped to [−87.3, 88.7] (no denormals, no Inf); callers zero masked entries themselves.
/// NaN stays NaN, so a poisoned logit shows up in the loss instead of being clamped into a finite number.
@inlinable @inline(__always)
public func simdExp(_ x0: V16) -> V16 {
    // Only concrete lane-wise operations: the generic SIMD conversions (Float → Int32, rounded(), clamped())
    // compile to per-lane calls and made this 10× slower.
    var x = x0.replacing(with: -87.336_54, where: x0 .< -87.336_54)
    x = x.replacing(with: 88.722_83, where: x .> 88.722_83)
    // round(x·log2 e) to nearest even by adding 1.5·2^23: the integer lands in the low mantissa bits
    let magic = V16(repeating: 12_582_912)
    let t = x * 1.442_695_04 + magic
    let k = t - magic
    // ln2 split in a high part exact in float and a low correction (Cody-Waite)
    let r = (x - k * 0.693_359_375) + k * 2.121_944_4e-4
    var p = V16(repeating: 1.987_569_15e-4)
    p = p * r + 1.398_199_95e-3
    p = p * r + 8.333_451_9e-3
    p = p * r + 4.166_579_59e-2
    p = p * r + 1.666_666_55e-1
    p = p * r + 5.000_000_1e-1
    p = p * r * r + r + 1
    let ki = unsafeBitCast(t, to: SIMD16<Int32>.self) &- 0x4B40_0000
    let scale = unsafeBitCast((ki &+ 127) &<< 23, to: V16.self)
    return (p * scale).replacing(with: x0, where: x0 .!= x0)
}

/// Scalar e^x with exactly the numerics of ``simdExp``.
@inlinable @inline(__always)
public func fastExp(_ x: Float) -> Float { simdExp(V16(repeating: x))[0] }

/// ln x lane by lane (Cephes logf, ~1 ulp): x = 2^e·m with m in [√½, √2), ln(1 + f) = f − f²/2 + f³·P(f), e·ln2 added
/// in a high part exact in float and a low correction. Denormal inputs are scaled by 2^25 first; 0 gives −∞, negative
/// inputs and NaN give NaN, +∞ stays +∞.
@inlinable @inline(__always)
public func simdLog(_ x0: V16) -> V16 {
    // Only concrete lane-wise operations (as simdExp), the constants as vectors.
    let tiny = x0 .< V16(repeating: 1.175_494_35e-38)
    let x = x0.replacing(with: x0 * V16(repeating: 33_554_432), where: tiny)  // 2^25
    let bits = unsafeBitCast(x, to: SIMD16<Int32>.self)
    // the exponent as a float without a generic conversion: small integers added to the bits of 1.5·2^23
    let magic = V16(repeating: 12_582_912)
    var e = unsafeBitCast(((bits &>> 23) & 0xFF) &+ (0x4B40_0000 - 126), to: V16.self) - magic
    e = e.replacing(with: e + V16(repeating: -25), where: tiny)
    // mantissa in [0.5, 1)
    var m = unsafeBitCast((bits & 0x007F_FFFF) | 0x3F00_0000, to: V16.self)
    let low = m .< V16(repeating: 0.707_106_781_186_547_524)
    e = e.replacing(with: e + V16(repeating: -1), where: low)
    m = m.replacing(with: m + m, where: low) + V16(repeating: -1)
    let z = m * m
    var p = V16(repeating: 7.037_683_629_2e-2)
    p = p * m + V16(repeating: -1.151_461_031_0e-1)
    p = p * m + V16(repeating: 1.167_699_874_0e-1)
    p = p * m + V16(repeating: -1.242_014_084_6e-1)
    p = p * m + V16(repeating: 1.424_932_278_7e-1)
    p = p * m + V16(repeating: -1.666_805_766_5e-1)
    p = p * m + V16(repeating: 2.000_071_476_5e-1)
    p = p * m + V16(repeating: -2.499_999_399_3e-1)
    p = p * m + V16(repeating: 3.333_333_117_4e-1)
    var y = m * z * p
    y = y + e * V16(repeating: -2.121_944_4e-4)
    y = y + z * V16(repeating: -0.5)
    var r = m + y
    r = r + e * V16(repeating: 0.693_359_375)
    r = r.replacing(with: -.infinity, where: x0 .== V16(repeating: 0))
    r = r.replacing(with: .nan, where: x0 .< V16(repeating: 0))
    return r.replacing(with: x0, where: (x0 .!= x0) .| (x0 .== V16(repeating: .infinity)))
}

/// Scalar ln x with exactly the numerics of ``simdLog``.
@inlinable @inline(__always)
public func fastLog(_ x: Float) -> Float { simdLog(V16(repeating: x))[0] }

@inlinable @inline(__always)
public func loadV16(_ p: UnsafePointer<Float>) -> V16 {
    UnsafeRawPointer(p).loadUnaligned(as: V16.self)
}

@inlinable @inline(__always)
public func storeV16(_ v: V16, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: V16.self)
}

/// Where the row loops of e^x run: on AVX-512 (CKDKernels/rows.c, one 16-lane register per ``V16``, bit-identical to
/// ``simdExp``'s lanes) when the CPU has it, else the Swift lanes (two AVX2 halves). `DISTILL_ROW_KERNEL=swift` keeps the
/// Swift lanes (to measure the difference); the tails past a multiple of 16 and the horizontal sums are Swift's always.
public enum RowKernels {
    public static let avx512: Bool = {
        let choice = getenv("DISTILL_ROW_KERNEL").map { String(cString: $0) } ?? "avx512"
        return choice != "swift" && kd_cpu_has_avx512() == 1
    }()
}

/// out[i] = e^x[i] for i in 0..<v, sixteen lanes at a time: each element exactly ``fastExp`` of it. `out` may be `x`.
public func expRow(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ v: Int) {
    var i = 0
    if RowKernels.avx512 {
        i = v & ~15
        kd_exp_avx512(out, x, i)
    }
    while i + 16 <= v {
        storeV16(simdExp(loadV16(x + i)), out + i)
        i += 16
    }
    while i < v {
        out[i] = fastExp(x[i])
        i += 1
    }
}

/// Index of the largest of x[0..<v], the first on ties (NaN never wins; 0 when nothing compares larger than −∞).
@inlinable
public func rowArgmax(_ x: UnsafePointer<Float>, _ v: Int) -> Int {
    let m = rowMax(x, v), mv = V16(repeating: m)
    // the first lane equal to the max, sixteen at a time
    var i = 0
    while i + 16 <= v {
        if any(loadV16(x + i) .== mv) { break }
        i += 16
    }
    for j in i..<v where x[j] == m { return j }
    return 0
}

/// max over x[0..<v].
@inlinable @inline(__always)
public func rowMax(_ x: UnsafePointer<Float>, _ v: Int) -> Float {
    var m = V16(repeating: -Float.infinity)
    var i = 0
    while i + 16 <= v {
        let w = loadV16(x + i)
        m = m.replacing(with: w, where: w .> m)
        i += 16
    }
    var s = m.max()
    while i < v {
        s = Swift.max(s, x[i])
        i += 1
    }
    return s
}

/// out[i] = e^(x[i] − shift) for i in 0..<v; returns Σ out (accumulated in Float lanes, reduced in Double).
/// `out` may equal `x`.
@inline(__always)
public func expShiftSum(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ v: Int, shift: Float) -> Float {
    var acc = V16(repeating: 0)
    let sh = V16(repeating: shift)
    var i = 0
    if RowKernels.avx512 {
        i = v & ~15
        withUnsafeMutablePointer(to: &acc) { kd_exp_shift_avx512(out, x, i, shift, UnsafeMutableRawPointer($0).assumingMemoryBound(to: Float.self)) }
    }
    while i + 16 <= v {
        let e = simdExp(loadV16(x + i) - sh)
        storeV16(e, out + i)
        acc += e
        i += 16
    }
    var s = acc.sum()
    while i < v {
        let e = fastExp(x[i] - shift)
        out[i] = e
        s += e
        i += 1
    }
    return s
}

/// Scales x[0..<v] by a.
@inline(__always)
public func scaleRow(_ x: UnsafeMutablePointer<Float>, _ v: Int, _ a: Float) {
    var i = 0
    let av = V16(repeating: a)
    while i + 16 <= v {
        storeV16(loadV16(x + i) * av, x + i)
        i += 16
    }
    while i < v {
        x[i] *= a
        i += 1
    }
}

/// Σ x[i]·y[i] over 0..<v.
@inline(__always)
public func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ v: Int) -> Float {
    var acc = V16(repeating: 0)
    var i = 0
    while i + 16 <= v {
        acc += loadV16(x + i) * loadV16(y + i)
        i += 16
    }
    var s = acc.sum()
    while i < v {
        s += x[i] * y[i]
        i += 1
    }
    return s
}

/// out = softmax(inp) per row, with the row max subtracted first. `out` may equal `inp`.
/// - Shapes: out, inp [n, v]
public func softmaxForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int, v: Int) {
    Parallel.forRanges(n, minPerThread: 4) { lo, hi in
        for r in lo..<hi {
            let x = inp + r * v, y = out + r * v
            let s = expShiftSum(y, x, v, shift: rowMax(x, v))
            scaleRow(y, v, 1 / s)
        }
    }
}

/// Backward of ``softmaxForward`` from its output y: dinp += y ⊙ (dout − Σ_j dout_j·y_j).
/// - Shapes: dinp, dout, out [n, v]
public func softmaxBackward(
    dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, out: UnsafePointer<Float>, n: Int, v: Int
) {
    Parallel.forRanges(n, minPerThread: 4) { lo, hi in
        for r in lo..<hi {
            let y = out + r * v, dy = dout + r * v, dx = dinp + r * v
            let d = dot(dy, y, v)
            for i in 0..<v { dx[i] += y[i] * (dy[i] - d) }
        }
    }
}

/// out = log softmax(inp) = inp − max − log Σ e^(inp − max) per row.
/// - Shapes: out, inp [n, v]; `scratch` [v] per thread is allocated here (not a hot-path op).
public func logSoftmaxForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int, v: Int) {
    Parallel.forRanges(n, minPerThread: 4) { lo, hi in
        for r in lo..<hi {
            let x = inp + r * v, y = out + r * v
            let m = rowMax(x, v)
            let s = expShiftSum(y, x, v, shift: m)
            let lse = m + logf(s)
            for i in 0..<v { y[i] = x[i] - lse }
        }
    }
}

/// Backward of ``logSoftmaxForward`` from its output: dinp += dout − softmax · Σ_j dout_j.
/// - Shapes: dinp, dout, out [n, v]
public func logSoftmaxBackward(
    dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, out: UnsafePointer<Float>, n: Int, v: Int
) {
    Parallel.forRanges(n, minPerThread: 4) { lo, hi in
        for r in lo..<hi {
            let y = out + r * v, dy = dout + r * v, dx = dinp + r * v
            var total: Float = 0
            for i in 0..<v { total += dy[i] }
            for i in 0..<v { dx[i] += dy[i] - fastExp(y[i]) * total }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
