// Rotary position embedding (Su et al. 2021), in the two pairings checkpoints use:
// `.adjacent` rotates (x[2i], x[2i+1]) — GGUF/llama.cpp stores Q and K rows permuted for it;
// `.half` rotates (x[i], x[i + hs/2]) — Hugging Face `rotate_half`.
// Dims: n rows (= B·T), t sequence length, nh heads, hs head size; position of row r is pos0 + r % t.
import Foundation
import KDCore

/// cos/sin of pos · θ^(−2i/hs) / factor_i for pos in 0..<maxT and i in 0..<hs/2, computed in Double. `freqFactors`
/// (Llama 3.1+ frequency scaling, GGUF's rope_freqs.weight) divide each frequency; nil = all 1.
public struct RoPETable {
    public let cos: [Float], sin: [Float]
    public let maxT: Int, hs: Int

    public init(maxT: Int, hs: Int, theta: Double, freqFactors: [Double]? = nil) {
        precondition(hs % 2 == 0, "RoPE: head size must be even, got \(hs)")
        precondition(freqFactors == nil || freqFactors!.count == hs / 2, "RoPE: \(hs / 2) frequency factors expected")
        var c = [Float](repeating: 0, count: maxT * hs / 2), s = c
        for p in 0..<maxT {
            for i in 0..<hs / 2 {
                let angle = Double(p) * Foundation.pow(theta, -2 * Double(i) / Double(hs)) / (freqFactors?[i] ?? 1)
                c[p * hs / 2 + i] = Float(Foundation.cos(angle))
                s[p * hs / 2 + i] = Float(Foundation.sin(angle))
            }
        }
        self.cos = c
        self.sin = s
        self.maxT = maxT
        self.hs = hs
    }
}

@inline(__always)
func ropeApply(
    out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, table: RoPETable, n: Int, t: Int, pos0: Int,
    nh: Int, hs: Int, style: RopeStyle, sign: Float, accumulate: Bool
) {
    let half = hs / 2
    // Pairs are (a, b) = (2i, 2i+1) or (i, i + hs/2); both rotate by the i-th frequency.
    let ia = style == .adjacent ? 2 : 1, ib = style == .adjacent ? 1 : half
    table.cos.withUnsafeBufferPointer { cosT in
        table.sin.withUnsafeBufferPointer { sinT in
            Parallel.forRanges(n, minPerThread: 32) { lo, hi in
                for r in lo..<hi {
                    let pos = pos0 + r % t
                    precondition(pos < table.maxT, "RoPE: position \(pos) beyond table length \(table.maxT)")
                    let cs = cosT.baseAddress! + pos * half, sn = sinT.baseAddress! + pos * half
                    for h in 0..<nh {
                        let x = inp + (r * nh + h) * hs, y = out + (r * nh + h) * hs
                        for i in 0..<half {
                            let a = i * ia, b = a + ib
                            let x0 = x[a], x1 = x[b], co = cs[i], si = sign * sn[i]
                            if accumulate {
                                y[a] += x0 * co - x1 * si
                                y[b] += x0 * si + x1 * co
                            } else {
                                y[a] = x0 * co - x1 * si
                                y[b] = x0 * si + x1 * co
                            }
                        }
                    }
                }
            }
        }
    }
}

/// out = R(pos) · inp for every head of every row. `out` may equal `inp` (in place).
/// - Shapes: out, inp [n, nh, hs] · table covers positions pos0 ..< pos0 + t
public func ropeForward(
    out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, table: RoPETable,
    n: Int, t: Int, pos0: Int = 0, nh: Int, hs: Int, style: RopeStyle
) {
    ropeApply(out: out, inp: inp, table: table, n: n, t: t, pos0: pos0, nh: nh, hs: hs, style: style, sign: 1, accumulate: false)
}

/// Backward of ``ropeForward``: dinp += R(pos)ᵀ · dout (a rotation's transpose is the rotation by −angle).
/// - Shapes: dinp, dout [n, nh, hs]
public func ropeBackward(
    dinp: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, table: RoPETable,
    n: Int, t: Int, pos0: Int = 0, nh: Int, hs: Int, style: RopeStyle
) {
    ropeApply(out: dinp, inp: dout, table: table, n: n, t: t, pos0: pos0, nh: nh, hs: hs, style: style, sign: -1, accumulate: true)
}
