// Quantization into GGUF block formats, bit for bit as ggml's reference quantizers (and gguf-py) do it, and the
// fake quantization QAT trains with: w' = dequantize(quantize(w)), so a QAT student exported to the same format
// dequantizes to exactly the weights it was trained with.
//   Q8_0  32-blocks, d = absmax / 127, q = roundf(x / d) (half away from zero), d stored as F16
//   Q4_0  32-blocks, d = (the signed value of largest magnitude) / −8, q = min(15, trunc(x / d + 8.5)), x ≈ (q − 8)·d
//   Q4_1  32-blocks, d = (max − min) / 15, m = min, q = min(15, trunc((x − m) / d + 0.5)), x ≈ q·d + m (d, m as F16)
//   Q5_0, Q5_1  as Q4_0 (d = largest / −16, +16.5) and Q4_1 (/ 31) with 32 levels
//   Q2_K … Q6_K  super-blocks of 256 with quantized sub-block scales (KQuants.swift)
//   IQ4_NL  32-blocks of 4-bit indices into 16 non-uniform levels × an F16 scale, searched over 15 trials (IQ4NL.swift)
//   MXFP4   32-blocks of 4-bit E2M1 codes × a power-of-two scale byte, 4.25 bits a weight (MXFP4.swift)
// A k-quant on rows its 256-blocks do not divide falls back as llama.cpp's quantizer does (GGMLType.forRows).
// plus per-output-channel symmetric int8 / int4 (no GGUF block type: exported dequantized, exactly).
// Dims: count elements, a multiple of the block size; rows of c elements for the per-channel schemes.
import Foundation
import KDConfig

/// Quantizes `count` floats into `type` blocks at `out` (F32, F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, the k-quants Q2_K … Q6_K
/// IQ4_NL and MXFP4). `importance` weighs the scale searches of every type ggml weighs by one (Q4_0, Q4_1, Q5_0, Q5_1,
/// the k-quants, IQ4_NL) as llama-quantize --imatrix does (its rows are the tensor's); Q8_0 and MXFP4 take none, in
/// ggml too.
public func quantize(_ type: GGMLType, src: UnsafePointer<Float>, count: Int, out: UnsafeMutableRawPointer, importance: Importance? = nil) {
    precondition(count % type.blockSize == 0, "quantize \(type): \(count) elements is not a multiple of \(type.blockSize)")
    let nb = count / type.blockSize, ts = type.typeSize
    func putF16(_ x: Float, _ off: Int) { out.storeBytes(of: Float16(x).bitPattern, toByteOffset: off, as: UInt16.self) }
    switch type {
    case .f32:
        out.copyMemory(from: src, byteCount: count * 4)
    case .f16:
        for i in 0..<count { putF16(src[i], 2 * i) }
    case .q8_0:
        for b in 0..<nb {
            let x = src + b * 32, o = b * ts
            var amax: Float = 0
            for j in 0..<32 { amax = max(amax, abs(x[j])) }
            let d = amax / 127, id: Float = d != 0 ? 1 / d : 0
            putF16(d, o)
            for j in 0..<32 { out.storeBytes(of: Int8(roundf(x[j] * id)), toByteOffset: o + 2 + j, as: Int8.self) }
        }
    case .q4_0 where importance != nil, .q5_0 where importance != nil, .q4_1 where importance != nil, .q5_1 where importance != nil:
        WeightedQ.quantize(type, src, count: count, importance: importance!, out: out)
    case .q4_0:
        for b in 0..<nb {
            let x = src + b * 32, o = b * ts
            let mx = signedLargest(x, 32).value
            let d = mx / -8, id: Float = d != 0 ? 1 / d : 0
            putF16(d, o)
            for j in 0..<16 {
                let q0 = UInt8(min(15, max(0, (x[j] * id + 8.5).rounded(.towardZero))))
                let q1 = UInt8(min(15, max(0, (x[j + 16] * id + 8.5).rounded(.towardZero))))
                out.storeBytes(of: q0 | (q1 << 4), toByteOffset: o + 2 + j, as: UInt8.self)
            }
        }
    case .q4_1:
        for b in 0..<nb {
            let x = src + b * 32, o = b * ts
            var lo = Float.infinity, hi = -Float.infinity
            for j in 0..<32 { lo = min(lo, x[j]); hi = max(hi, x[j]) }
            let d = (hi - lo) / 15, id: Float = d != 0 ? 1 / d : 0
            putF16(d, o)
            putF16(lo, o + 2)
            for j in 0..<16 {
                let q0 = UInt8(min(15, max(0, ((x[j] - lo) * id + 0.5).rounded(.towardZero))))
                let q1 = UInt8(min(15, max(0, ((x[j + 16] - lo) * id + 0.5).rounded(.towardZero))))
                out.storeBytes(of: q0 | (q1 << 4), toByteOffset: o + 4 + j, as: UInt8.self)
            }
        }
    case .q5_0, .q5_1:
        // as Q4_0 / Q4_1 with 32 levels; the fifth bits of the 32 elements in a little-endian u32 after the scale(s)
        let asym = type == .q5_1
        for b in 0..<nb {
            let x = src + b * 32, o = b * ts
            var q = [UInt8](repeating: 0, count: 32)
            if asym {
                var lo = Float.infinity, hi = -Float.infinity
                for j in 0..<32 { lo = min(lo, x[j]); hi = max(hi, x[j]) }
                let d = (hi - lo) / 31, id: Float = d != 0 ? 1 / d : 0
                putF16(d, o)
                putF16(lo, o + 2)
                for j in 0..<32 { q[j] = UInt8(min(31, max(0, ((x[j] - lo) * id + 0.5).rounded(.towardZero)))) }
            } else {
                let mx = signedLargest(x, 32).value
                let d = mx / -16, id: Float = d != 0 ? 1 / d : 0
                putF16(d, o)
                for j in 0..<32 { q[j] = UInt8(min(31, max(0, (x[j] * id + 16.5).rounded(.towardZero)))) }
            }
            var qh: UInt32 = 0
            for j in 0..<32 { qh |= UInt32(q[j] >> 4) << UInt32(j) }
            let at = o + (asym ? 4 : 2)
            out.storeBytes(of: qh.littleEndian, toByteOffset: at, as: UInt32.self)
            for j in 0..<16 { out.storeBytes(of: (q[j] & 0xF) | (q[j + 16] << 4), toByteOffset: at + 4 + j, as: UInt8.self) }
        }
    case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K:
        for b in 0..<nb { KQuant.block(type, src + b * 256, out + b * ts, qw: importance?.superBlock(b)) }
    case .iq4_nl:
        precondition(importance.map { count % $0.perRow == 0 } ?? true, "quantize: \(count) elements are not whole rows of the importance's \(importance?.perRow ?? 0)")
        IQ4NL.quantize(src, blocks: nb, out, importance: importance)
    case .mxfp4:
        MXFP4.quantize(src, blocks: nb, out)
    default:
        preconditionFailure("quantize: \(type) is not a supported output type (f32, f16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_K … q6_K, iq4_nl, mxfp4)")
    }
}

/// An importance matrix's row for one quantized tensor: a weight per input column (`perRow` of them, the tensor's row
/// length), as llama-imatrix collects them (the mean square of each input channel over calibration tokens).
public struct Importance {
    public let weights: UnsafePointer<Float>
    public let perRow: Int
    public init(weights: UnsafePointer<Float>, perRow: Int) {
        precondition(perRow % 32 == 0, "Importance: rows of \(perRow) are not a multiple of 32")
        self.weights = weights
        self.perRow = perRow
    }

    /// Blocks b0 … b0 + n − 1's 32 columns each (blocks of 32 counted through whole rows) at qw[b·32 …].
    func gather(first b0: Int, n: Int, into qw: UnsafeMutablePointer<Float>) {
        let blocksPerRow = perRow / 32
        for b in 0..<n { (qw + b * 32).update(from: weights + ((b0 + b) % blocksPerRow) * 32, count: 32) }
    }

    /// The 256 importances of super-block b of a tensor with rows of `perRow` (a multiple of 256).
    func superBlock(_ b: Int) -> UnsafePointer<Float> {
        precondition(perRow % 256 == 0, "Importance: rows of \(perRow) are not a multiple of 256")
        return weights + (b * 256) % perRow
    }
}

/// The weight quantization a student trains with (QAT) and is exported in.
extension FakeQuantScheme {
    /// The scheme `qat.scheme` names (nil for `none`).
    public init?(_ scheme: QATScheme) {
        guard scheme != .none else { return nil }
        self.init(rawValue: scheme.rawValue)
    }
}

public enum FakeQuantScheme: String, Sendable, CaseIterable {
    case q8_0, q4_0, q4_1, q5_0, q5_1
    /// The k-quants, on rows that are multiples of 256; other rows take llama.cpp's fallback type (`forRows`).
    case q2_K = "q2_k", q3_K = "q3_k", q4_K = "q4_k", q5_K = "q5_k", q6_K = "q6_k"
    /// Non-uniform 4-bit levels in blocks of 32 (Q4_0's bytes).
    case iq4_nl
    /// E2M1 codes times a power-of-two scale in blocks of 32 (4.25 bits a weight).
    case mxfp4
    /// Symmetric per output channel (row): d = absmax / 127 or / 7, q = roundf(x / d) clamped to [−128, 127] / [−8, 7].
    case int8Channel = "int8_channel", int4Channel = "int4_channel"

    /// The GGUF type it is stored as, when it has one.
    public var ggmlType: GGMLType? {
        switch self {
        case .q8_0: return .q8_0
        case .q4_0: return .q4_0
        case .q4_1: return .q4_1
        case .q5_0: return .q5_0
        case .q5_1: return .q5_1
        case .q2_K: return .q2_K
        case .q3_K: return .q3_K
        case .q4_K: return .q4_K
        case .q5_K: return .q5_K
        case .q6_K: return .q6_K
        case .iq4_nl: return .iq4_nl
        case .mxfp4: return .mxfp4
        case .int8Channel, .int4Channel: return nil
        }
    }

    /// The scheme of a GGUF type (nil for types QAT does not train).
    public init?(_ type: GGMLType) {
        guard let s = FakeQuantScheme.allCases.first(where: { $0.ggmlType == type }) else { return nil }
        self = s
    }

    /// What rows of `c` elements are quantized with: a k-quant whose blocks do not divide them takes llama.cpp's
    /// fallback (GGMLType.forRows), as the exported file will hold them.
    public func forRows(of c: Int) -> FakeQuantScheme {
        guard let t = ggmlType, t.forRows(of: c) != t, let s = FakeQuantScheme(t.forRows(of: c)) else { return self }
        return s
    }

    /// Elements a row must be a multiple of (after the fallback, 32 at most for every block format).
    public var rowMultiple: Int { ggmlType?.blockSize ?? 1 }
}

extension QATConfig {
    /// The GGUF type the embedding and LM head export to beside blocks of `blocks`, as they trained: F32 when they
    /// stayed full precision, their own format when `embedding_scheme` gave them one other than the blocks', else the
    /// blocks' type.
    public func tableExportType(blocks: GGMLType) -> GGMLType {
        guard embeddings else { return .f32 }
        return embeddingScheme.flatMap { $0 == scheme ? nil : FakeQuantScheme($0)?.ggmlType } ?? blocks
    }
}

/// w' = dequantize(quantize(w)) for `rows` rows of `c` elements, and the straight-through mask: 1 where the
/// gradient passes, 0 where the value was clipped to the end of the grid (then rounding is not the identity's
/// neighbour and the gradient is zero).
/// `out` may be `src` (in place). - Shapes: src, out [rows, c] · mask [rows, c] or nil
/// `importance` (rows of c: one weight per input column): the scale searches weighted as llama-quantize --imatrix
/// weighs them (every block type but Q8_0 and MXFP4); ignored by the other schemes.
public func fakeQuantize(_ scheme: FakeQuantScheme, src: UnsafePointer<Float>, rows: Int, c: Int,
                         out: UnsafeMutablePointer<Float>, mask: UnsafeMutablePointer<Float>?, importance: Importance? = nil) {
    let scheme = scheme.forRows(of: c)
    precondition(importance.map { $0.perRow == c } ?? true, "fakeQuantize: rows of \(c), importances for rows of \(importance?.perRow ?? 0)")
    precondition(c % scheme.rowMultiple == 0, "fakeQuantize \(scheme): rows of \(c) are not a multiple of \(scheme.rowMultiple)")
    let count = rows * c
    if let type = scheme.ggmlType, type.blockSize == 256 {
        // k-quants: each super-block quantized as ggml does, then read back; its last pass says what was clipped
        let block = UnsafeMutableRawPointer.allocate(byteCount: type.typeSize, alignment: 16)
        let clipped = UnsafeMutablePointer<Float>.allocate(capacity: 256)
        defer { block.deallocate(); clipped.deallocate() }
        for b in 0..<(count / 256) {
            KQuant.block(type, src + b * 256, block, clipped: mask == nil ? nil : clipped, qw: importance?.superBlock(b))
            if let mask { for j in 0..<256 { mask[b * 256 + j] = 1 - clipped[j] } }
            dequantize(type, src: block, out: out + b * 256, count: 256)
        }
        return
    }
    if let importance, [.q4_0, .q5_0, .q4_1, .q5_1].contains(scheme) {
        WeightedQ.quantize(scheme.ggmlType!, src, count: count, importance: importance, out: nil, values: out, mask: mask)
        return
    }
    if scheme == .iq4_nl {
        IQ4NL.fakeQuantize(src, blocks: count / 32, out: out, mask: mask, importance: importance)
        return
    }
    if scheme == .mxfp4 {
        MXFP4.fakeQuantize(src, blocks: count / 32, out: out, mask: mask)
        return
    }
    if let type = scheme.ggmlType {
        let block = UnsafeMutableRawPointer.allocate(byteCount: type.typeSize, alignment: 16)
        defer { block.deallocate() }
        for b in 0..<(count / 32) {
            quantize(type, src: src + b * 32, count: 32, out: block)
            defer { dequantize(type, src: block, out: out + b * 32, count: 32) }  // last: out may be src
            guard let mask else { continue }
            switch type {
            case .q4_0, .q5_0:
                // the value of largest magnitude sits at the grid's low end; values past the other end are clipped
                let d = Float(Float16(bitPattern: block.load(as: UInt16.self)))
                let id: Float = d != 0 ? 1 / d : 0, (offset, top): (Float, Float) = type == .q4_0 ? (8.5, 16) : (16.5, 32)
                for j in 0..<32 { mask[b * 32 + j] = src[b * 32 + j] * id + offset >= top ? 0 : 1 }
            default:
                // Q8_0's and the asymmetric grids cover [−absmax, absmax] and [min, max]: nothing is clipped
                for j in 0..<32 { mask[b * 32 + j] = 1 }
            }
        }
        return
    }
    let levels: Float = scheme == .int8Channel ? 127 : 7, lowest: Float = scheme == .int8Channel ? -128 : -8
    for r in 0..<rows {
        let x = src + r * c, y = out + r * c
        var amax: Float = 0
        for j in 0..<c { amax = max(amax, abs(x[j])) }
        let d = amax / levels, id: Float = d != 0 ? 1 / d : 0
        for j in 0..<c {
            let q = roundf(x[j] * id)
            y[j] = min(levels, max(lowest, q)) * d
            mask?[r * c + j] = q > levels || q < lowest ? 0 : 1
        }
    }
}

/// Per-row (per-token) symmetric int8 fake quantization of activations in place: x ← roundf(x / s)·s, s = absmax / 127.
/// Nothing is clipped, so the straight-through gradient is the identity. - Shapes: x [rows, c]
public func fakeQuantizeActivationsInt8(_ x: UnsafeMutablePointer<Float>, rows: Int, c: Int) {
    for r in 0..<rows {
        let row = x + r * c
        var amax: Float = 0
        for j in 0..<c { amax = max(amax, abs(row[j])) }
        guard amax > 0 else { continue }
        let s = amax / 127, id = 1 / s
        for j in 0..<c { row[j] = roundf(row[j] * id) * s }
    }
}
