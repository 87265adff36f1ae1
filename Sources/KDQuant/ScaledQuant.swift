// Fake quantization with given scales: LSQ-style learned scales (Esser et al., 2020) and scales frozen after a step.
// The rule is ggml's quantizer with the scale s given instead of computed from the block: the grid index comes from
// x·(1/s), the value is index·s (the block formats dequantize with s rounded to F16, as stored). With the absmax s
// that ggml itself would pick, every function here is bit-identical to the absmax path in Quantize.swift, and
// `quantizeScaled` writes exactly the GGUF blocks the fake-quantized values dequantize from.
import Foundation

extension FakeQuantScheme {
    /// Whether the scheme can take given scales (Q8_0, Q4_0 and the per-channel schemes: one scale per group and no
    /// minimum; Q4_1 and Q5_1 also carry a minimum, the k-quants sub-block scales; those keep ggml's own).
    public var supportsGivenScales: Bool { [.q8_0, .q4_0, .int8Channel, .int4Channel].contains(self) }

    /// Elements sharing one scale in a row of `c`.
    public func group(c: Int) -> Int { ggmlType != nil ? 32 : c }

    /// The largest grid index (Qp of LSQ's gradient scale 1/√(N·Qp)).
    var positiveLevels: Float { self == .q8_0 || self == .int8Channel ? 127 : 7 }
}

/// One element under the scheme with index scale `inv` = 1/s and value scale `dq`: the value, the grid index it
/// took (clamped) and whether it was clipped.
@inline(__always)
func scaledElement(_ scheme: FakeQuantScheme, _ x: Float, inv: Float, dq: Float) -> (value: Float, k: Float, clipped: Bool) {
    switch scheme {
    case .q8_0:
        // + 0 turns −0 into +0, as the Int8 ggml stores does
        let r = roundf(x * inv), k = min(127, max(-127, r)) + 0
        return (k * dq, k, r != k)
    case .q4_0:
        // ggml: q = min(15, (int)(x·id + 8.5)), value (q − 8)·d
        let v = x * inv + 8.5
        let q = min(15, max(0, v.rounded(.towardZero)))
        return ((q - 8) * dq, q - 8, v < 0 || v >= 16)
    case .int8Channel, .int4Channel:
        let hi = scheme.positiveLevels, lo = -hi - 1
        let r = roundf(x * inv), k = min(hi, max(lo, r))
        return (k * dq, k, r != k)
    default:
        preconditionFailure("\(scheme) takes no given scales")
    }
}

@inline(__always)
func scaleParts(_ scheme: FakeQuantScheme, _ s: Float) -> (inv: Float, dq: Float) {
    (s != 0 ? 1 / s : 0, scheme.ggmlType != nil ? Float(Float16(s)) : s)
}

/// The scales the absmax path uses: ggml's d (block schemes; Q4_0's is signed) or absmax/levels per row.
/// - Shapes: src [rows, c] · out [rows, c / group]
public func absmaxScales(_ scheme: FakeQuantScheme, src: UnsafePointer<Float>, rows: Int, c: Int, out: UnsafeMutablePointer<Float>) {
    precondition(scheme.supportsGivenScales)
    let g = scheme.group(c: c), n = rows * c / g
    for b in 0..<n {
        let x = src + b * g
        var amax: Float = 0, mx: Float = 0
        for j in 0..<g where abs(x[j]) > amax { amax = abs(x[j]); mx = x[j] }
        switch scheme {
        case .q8_0: out[b] = amax / 127
        case .q4_0: out[b] = mx / -8
        default: out[b] = amax / scheme.positiveLevels
        }
    }
}

/// w' = fake quantization of `src` with the given scales; `mask` (when given) 1 where the gradient passes, 0 where a
/// value was clipped. `out` may be `src`. - Shapes: src, out, mask [rows, c] · scales [rows, c / group]
public func fakeQuantizeScaled(_ scheme: FakeQuantScheme, src: UnsafePointer<Float>, rows: Int, c: Int, scales: UnsafePointer<Float>,
                               out: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<Float>?) {
    precondition(scheme.supportsGivenScales && c % scheme.rowMultiple == 0)
    let g = scheme.group(c: c)
    for b in 0..<(rows * c / g) {
        let (inv, dq) = scaleParts(scheme, scales[b])
        for j in (b * g)..<((b + 1) * g) {
            let e = scaledElement(scheme, src[j], inv: inv, dq: dq)
            out[j] = e.value
            mask?[j] = e.clipped ? 0 : 1
        }
    }
}

/// LSQ: accumulates into `dScales` the gradient of Σ dOut·w' with respect to each scale, rounding passed straight
/// through: ∂w'/∂s = k − x/s inside the grid, the clamped index k where clipped; times LSQ's 1/√(N·Qp) with N the
/// elements per scale. (The weights' own gradient is dOut times the mask of ``fakeQuantizeScaled``.)
/// - Shapes: src, dOut [rows, c] · scales, dScales [rows, c / group]
public func fakeQuantizeScaleGradient(_ scheme: FakeQuantScheme, src: UnsafePointer<Float>, rows: Int, c: Int, scales: UnsafePointer<Float>,
                                      dOut: UnsafePointer<Float>, dScales: UnsafeMutablePointer<Float>) {
    let g = scheme.group(c: c)
    let gradScale = 1 / (Float(g) * scheme.positiveLevels).squareRoot()
    for b in 0..<(rows * c / g) {
        let (inv, dq) = scaleParts(scheme, scales[b])
        var acc: Double = 0
        for j in (b * g)..<((b + 1) * g) {
            let e = scaledElement(scheme, src[j], inv: inv, dq: dq)
            acc += Double(dOut[j]) * Double(e.clipped ? e.k : e.k - src[j] * inv)
        }
        dScales[b] += Float(acc) * gradScale
    }
}

/// GGUF blocks of `type` (Q8_0 or Q4_0) with the given per-block scales: what ``fakeQuantizeScaled`` dequantizes from.
/// - Shapes: src [count] · scales [count / 32]
public func quantizeScaled(_ type: GGMLType, src: UnsafePointer<Float>, count: Int, scales: UnsafePointer<Float>, out: UnsafeMutableRawPointer) {
    let scheme: FakeQuantScheme = type == .q8_0 ? .q8_0 : .q4_0
    precondition((type == .q8_0 || type == .q4_0) && count % 32 == 0, "quantizeScaled: \(type) takes no given scales")
    let ts = type.typeSize
    for b in 0..<(count / 32) {
        let (inv, _) = scaleParts(scheme, scales[b])
        out.storeBytes(of: Float16(scales[b]).bitPattern, toByteOffset: b * ts, as: UInt16.self)
        let x = src + b * 32
        if type == .q8_0 {
            for j in 0..<32 { out.storeBytes(of: Int8(scaledElement(scheme, x[j], inv: inv, dq: 0).k), toByteOffset: b * ts + 2 + j, as: Int8.self) }
        } else {
            for j in 0..<16 {
                let q0 = UInt8(scaledElement(scheme, x[j], inv: inv, dq: 0).k + 8), q1 = UInt8(scaledElement(scheme, x[j + 16], inv: inv, dq: 0).k + 8)
                out.storeBytes(of: q0 | (q1 << 4), toByteOffset: b * ts + 2 + j, as: UInt8.self)
            }
        }
    }
}
