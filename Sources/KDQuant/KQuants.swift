// The k-quant formats (Q2_K … Q6_K: super-blocks of 256 with quantized per-sub-block scales), quantized bit for bit
// as ggml's reference quantizers do without an importance matrix — what `llama_model_quantize` writes for these
// types — so a QAT student trained on dequantize(quantize(w)) is exactly the file it exports.
//   Q2_K  16 × 16: 2-bit q, per sub-block 4-bit scale and min (× f16 d, dmin); min-search of make_qkx2 (MAD)
//   Q3_K  16 × 16: 3-bit q (2 low bits + high-bit mask), 6-bit signed scales × f16 d; make_q3 (RMSE-refined)
//   Q4_K   8 × 32: 4-bit q, 6-bit scale and min × f16 d, dmin; make_qkx2 (weighted least squares)
//   Q5_K   8 × 32: as Q4_K with 5-bit q
//   Q6_K  16 × 16: 6-bit q, 8-bit signed scales × f16 d; make_qx (RMSE-refined)
// The float operations follow the reference's order one for one (no fused multiply-adds), so the bytes match; the
// tests check them against ggml's own quantizer (Tests/KDFormatsTests/Fixtures/kquants-ggml.json).
// Every quantizer can also report which elements were clipped to the end of their grid (the straight-through mask).
// The per-sub-block scale searches run on all sub-blocks at once in C (CKDKernels/kquant.c, vectorized across
// sub-blocks, bit for bit these scalar functions, which remain as the reference the tests hold it to).
import CKDKernels
import Foundation

/// ggml's nearest_int: round half to even through the 1.5·2²³ trick (valid for |x| < 2²²).
@inline(__always) func nearestInt(_ x: Float) -> Int {
    let v = x + 12_582_912
    return Int(v.bitPattern & 0x007f_ffff) - 0x0040_0000
}


/// Weighted asymmetric search (ggml's make_qkx2_quants): levels 0…nmax, scale and min (min ≤ 0) minimizing the weighted
/// error (absolute with `mad`, squared otherwise) over nstep + 1 trial scales. Returns (scale, −min); writes L.
func makeQkx2(_ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ L: UnsafeMutablePointer<UInt8>,
                      _ aux: UnsafeMutablePointer<UInt8>, rmin: Float, rdelta: Float, nstep: Int, mad: Bool) -> (scale: Float, negMin: Float) {
    var lo = x[0], hi = x[0]
    var sumW = w[0], sumX = sumW * x[0]
    for i in 1..<n {
        if x[i] < lo { lo = x[i] }
        if x[i] > hi { hi = x[i] }
        sumW += w[i]
        sumX += w[i] * x[i]
    }
    if lo > 0 { lo = 0 }
    if hi == lo {
        for i in 0..<n { L[i] = 0 }
        return (0, -lo)
    }
    let fmax = Float(nmax)
    var iscale = fmax / (hi - lo)
    var scale = 1 / iscale
    var best: Float = 0
    for i in 0..<n {
        let l = nearestInt(iscale * (x[i] - lo))
        L[i] = UInt8(max(0, min(nmax, l)))
        var diff = scale * Float(L[i]) + lo - x[i]
        diff = mad ? abs(diff) : diff * diff
        best += w[i] * diff
    }
    if nstep < 1 { return (scale, -lo) }
    // as in ggml, a better trial's min becomes the origin of the trials after it
    for step in 0...nstep {
        iscale = (rmin + rdelta * Float(step) + fmax) / (hi - lo)
        var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
        for i in 0..<n {
            let l = max(0, min(nmax, nearestInt(iscale * (x[i] - lo))))
            aux[i] = UInt8(l)
            let fl = Float(l)
            sumL += w[i] * fl
            sumL2 += w[i] * fl * fl
            sumXL += w[i] * fl * x[i]
        }
        let D = sumW * sumL2 - sumL * sumL
        guard D > 0 else { continue }
        var thisScale = (sumW * sumXL - sumX * sumL) / D
        var thisMin = (sumL2 * sumX - sumL * sumXL) / D
        if thisMin > 0 {
            thisMin = 0
            thisScale = sumXL / sumL2
        }
        var err: Float = 0
        for i in 0..<n {
            var diff = thisScale * Float(aux[i]) + thisMin - x[i]
            diff = mad ? abs(diff) : diff * diff
            err += w[i] * diff
        }
        if err < best {
            for i in 0..<n { L[i] = aux[i] }
            best = err
            scale = thisScale
            lo = thisMin
        }
    }
    return (scale, -lo)
}

/// ggml's GROUP_MAX_EPS: a (sub-)block whose largest magnitude is below it quantizes to zeros.
let groupMaxEps: Float = 1e-15

/// The value of largest magnitude among x[0..<n] (signed; the first of equal magnitudes) and that magnitude.
@inline(__always) func signedLargest(_ x: UnsafePointer<Float>, _ n: Int) -> (value: Float, magnitude: Float) {
    var mx: Float = 0, amax: Float = 0
    for i in 0..<n where abs(x[i]) > amax { amax = abs(x[i]); mx = x[i] }
    return (mx, amax)
}

/// Symmetric search (ggml's make_qx_quants with rmse_type 1) weighted by `w` (nil: x², as without an importance
/// matrix): levels −nmax…nmax−1 stored + nmax; tries 19 scales around −nmax / (the value of largest magnitude).
/// Returns the scale; writes L.
func makeQx(_ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<Int8>, w: UnsafePointer<Float>? = nil) -> Float {
    let (mx, amax) = signedLargest(x, n)
    if amax < groupMaxEps {
        for i in 0..<n { L[i] = 0 }
        return 0
    }
    @inline(__always) func weight(_ i: Int) -> Float { w.map { $0[i] } ?? x[i] * x[i] }
    let fmax = Float(nmax)
    var iscale = -fmax / mx
    var sumLX: Float = 0, sumL2: Float = 0
    for i in 0..<n {
        let l = max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))
        L[i] = Int8(l + nmax)
        let wi = weight(i), fl = Float(l)
        sumLX += wi * x[i] * fl
        sumL2 += wi * fl * fl
    }
    var scale: Float = sumL2 != 0 ? sumLX / sumL2 : 0
    var best = scale * sumLX
    for step in -9...9 where step != 0 {
        iscale = -(fmax + 0.1 * Float(step)) / mx
        sumLX = 0; sumL2 = 0
        for i in 0..<n {
            let fl = Float(max(-nmax, min(nmax - 1, nearestInt(iscale * x[i]))))
            let wi = weight(i)
            sumLX += wi * x[i] * fl
            sumL2 += wi * fl * fl
        }
        if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
            for i in 0..<n { L[i] = Int8(nmax + max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))) }
            scale = sumLX / sumL2
            best = scale * sumLX
        }
    }
    return scale
}

/// ggml's make_q3_quants with RMSE refinement: levels −nmax…nmax−1 (stored + nmax), start from −nmax / (largest-magnitude
/// value), then up to five passes moving single levels while the x²-weighted fit improves. Returns the scale.
private func makeQ3(_ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<Int8>) -> Float {
    let (mx, amax) = signedLargest(x, n)
    if amax < groupMaxEps {
        for i in 0..<n { L[i] = 0 }
        return 0
    }
    let iscale = -Float(nmax) / mx
    var sumLX: Float = 0, sumL2: Float = 0
    for i in 0..<n {
        let l = max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))
        L[i] = Int8(l)
        let w = x[i] * x[i], fl = Float(l)
        sumLX += w * x[i] * fl
        sumL2 += w * fl * fl
    }
    for _ in 0..<5 {
        var changed = 0
        for i in 0..<n {
            let w = x[i] * x[i], li = Float(L[i])
            var slx = sumLX - w * x[i] * li
            guard slx > 0 else { continue }
            var sl2 = sumL2 - w * li * li
            let newL = max(-nmax, min(nmax - 1, nearestInt(x[i] * sl2 / slx)))
            guard newL != Int(L[i]) else { continue }
            let fn = Float(newL)
            slx += w * x[i] * fn
            sl2 += w * fn * fn
            if sl2 > 0 && slx * slx * sumL2 > sumLX * sumLX * sl2 {
                L[i] = Int8(newL); sumLX = slx; sumL2 = sl2
                changed += 1
            }
        }
        if changed == 0 { break }
    }
    for i in 0..<n { L[i] += Int8(nmax) }
    return sumL2 > 0 ? sumLX / sumL2 : 0
}

/// Packs the 6-bit scale and min of sub-block j into Q4_K/Q5_K's 12 scale bytes (the inverse of scaleMinK4).
private func packScaleMinK4(_ j: Int, _ ls: UInt8, _ lm: UInt8, _ s: UnsafeMutablePointer<UInt8>) {
    if j < 4 {
        s[j] = ls
        s[j + 4] = lm
    } else {
        s[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
        s[j - 4] |= (ls >> 4) << 6
        s[j] |= (lm >> 4) << 6
    }
}

/// ggml's make_qp_quants: levels 0…nmax for non-negative x (sub-block scales or mins) weighted by w, the best of 9
/// trial scales, then up to five passes moving single levels while the weighted fit improves. Returns the scale.
func makeQp(_ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<UInt8>, _ w: UnsafePointer<Float>) -> Float {
    var mx: Float = 0
    for i in 0..<n { mx = max(mx, x[i]) }
    if mx < groupMaxEps {
        for i in 0..<n { L[i] = 0 }
        return 0
    }
    let fmax = Float(nmax)
    var iscale = fmax / mx
    for i in 0..<n { L[i] = UInt8(truncatingIfNeeded: nearestInt(iscale * x[i])) }
    let scale = 1 / iscale
    var bestMSE: Float = 0
    for i in 0..<n {
        let diff = x[i] - scale * Float(L[i])
        bestMSE += w[i] * diff * diff
    }
    for step in -4...4 where step != 0 {
        let iscaleIs = (0.1 * Float(step) + fmax) / mx, scaleIs = 1 / iscaleIs
        var mse: Float = 0
        for i in 0..<n {
            let l = min(nmax, nearestInt(iscaleIs * x[i]))
            let diff = x[i] - scaleIs * Float(l)
            mse += w[i] * diff * diff
        }
        if mse < bestMSE {
            bestMSE = mse
            iscale = iscaleIs
        }
    }
    var sumLX: Float = 0, sumL2: Float = 0
    for i in 0..<n {
        let l = min(nmax, nearestInt(iscale * x[i]))
        L[i] = UInt8(truncatingIfNeeded: l)
        let fl = Float(l)
        sumLX += w[i] * x[i] * fl
        sumL2 += w[i] * fl * fl
    }
    for _ in 0..<5 {
        var changed = 0
        for i in 0..<n {
            let li = Float(L[i])
            var slx = sumLX - w[i] * x[i] * li
            var sl2 = sumL2 - w[i] * li * li
            if slx > 0 && sl2 > 0 {
                let newL = min(nmax, nearestInt(x[i] * sl2 / slx))
                if newL != Int(L[i]) {
                    let fl = Float(newL)
                    slx += w[i] * x[i] * fl
                    sl2 += w[i] * fl * fl
                    if slx * slx * sumL2 > sumLX * sumLX * sl2 {
                        L[i] = UInt8(truncatingIfNeeded: newL); sumLX = slx; sumL2 = sl2
                        changed += 1
                    }
                }
            }
        }
        if changed == 0 { break }
    }
    return sumL2 > 0 ? sumLX / sumL2 : 0
}

/// The importance weights of a k-quant super-block as ggml's *_impl quantizers form them: qw · √(σ² + x²) with
/// σ² = `factor` · Σ x² / 256 (Σ in element order), and each sub-block's sum of them (in order) into sw.
private func importanceWeights(_ x: UnsafePointer<Float>, _ qw: UnsafePointer<Float>, factor: Float, sub: Int,
                               _ w: UnsafeMutablePointer<Float>, _ sw: UnsafeMutablePointer<Float>) {
    var sumX2: Float = 0
    for j in 0..<256 { sumX2 += x[j] * x[j] }
    let sigma2 = factor * sumX2 / 256
    for j in 0..<256 { w[j] = qw[j] * (sigma2 + x[j] * x[j]).squareRoot() }
    for j in 0..<(256 / sub) {
        var t: Float = 0
        for l in 0..<sub { t += w[sub * j + l] }
        sw[j] = t
    }
}

/// The k-quant super-block quantizers. Each quantizes 256 floats at x into one block at y and, with `clipped`, sets
/// clipped[i] = 1 where element i's level was clamped to the end of the grid in the final pass (0 elsewhere).
enum KQuant {
    /// `qw`: the super-block's 256 columns of an importance matrix (ggml's quantize_row_q2_K_impl: the sub-block fits
    /// weighted by qw · √(σ² + x²), σ² = Σ x² / 256, in least squares; scales and mins quantized by make_qp_quants
    /// weighted by each sub-block's summed weights).
    static func q2K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, clipped: UnsafeMutablePointer<Float>?, lanes: Bool = true,
                    qw: UnsafePointer<Float>? = nil) {
        var L = [UInt8](repeating: 0, count: 256)
        var w = [Float](repeating: 0, count: 256), mins = [Float](repeating: 0, count: 16), scales = [Float](repeating: 0, count: 16)
        let sc = y.assumingMemoryBound(to: UInt8.self), qs = sc + 16
        var maxScale: Float = 0, maxMin: Float = 0
        var sw = [Float](repeating: 0, count: 16)
        if let qw {
            w.withUnsafeMutableBufferPointer { importanceWeights(x, qw, factor: 1, sub: 16, $0.baseAddress!, &sw) }
        } else {
            for l in 0..<256 { w[l] = abs(x[l]) }
        }
        let (rmin, rdelta, nstep, mad): (Float, Float, Int32, Int32) = qw == nil ? (-0.5, 0.1, 15, 1) : (-0.9, 0.05, 36, 0)
        L.withUnsafeMutableBufferPointer { Lp in w.withUnsafeBufferPointer { wp in
            if lanes {
                kd_make_qkx2(16, 16, 3, x, wp.baseAddress!, Lp.baseAddress!, &scales, &mins, rmin, rdelta, nstep, mad)
            } else {
                var aux = [UInt8](repeating: 0, count: 16)
                for j in 0..<16 {
                    let r = makeQkx2(16, 3, x + 16 * j, wp.baseAddress! + 16 * j, Lp.baseAddress! + 16 * j, &aux, rmin: rmin, rdelta: rdelta, nstep: Int(nstep), mad: mad != 0)
                    scales[j] = r.scale; mins[j] = r.negMin
                }
            }
        } }
        if qw != nil {
            var Ls = [UInt8](repeating: 0, count: 16), Lm = Ls
            let dm = makeQp(16, 15, scales, &Ls, sw), mm = makeQp(16, 15, mins, &Lm, sw)
            y.storeBytes(of: Float16(dm).bitPattern, toByteOffset: 80, as: UInt16.self)
            y.storeBytes(of: Float16(mm).bitPattern, toByteOffset: 82, as: UInt16.self)
            for j in 0..<16 { sc[j] = Ls[j] | (Lm[j] << 4) }
        } else {
        for j in 0..<16 {
            if scales[j] > maxScale { maxScale = scales[j] }
            if mins[j] > maxMin { maxMin = mins[j] }
        }
        if maxScale > 0 {
            let iscale = 15 / maxScale
            for j in 0..<16 { sc[j] = UInt8(truncatingIfNeeded: nearestInt(iscale * scales[j])) }
            y.storeBytes(of: Float16(maxScale / 15).bitPattern, toByteOffset: 80, as: UInt16.self)
        } else {
            for j in 0..<16 { sc[j] = 0 }
            y.storeBytes(of: Float16(0).bitPattern, toByteOffset: 80, as: UInt16.self)
        }
        if maxMin > 0 {
            let iscale = 15 / maxMin
            for j in 0..<16 { sc[j] |= UInt8(truncatingIfNeeded: nearestInt(iscale * mins[j]) << 4) }
            y.storeBytes(of: Float16(maxMin / 15).bitPattern, toByteOffset: 82, as: UInt16.self)
        } else {
            y.storeBytes(of: Float16(0).bitPattern, toByteOffset: 82, as: UInt16.self)
        }
        }
        let d = Float(Float16(bitPattern: y.load(fromByteOffset: 80, as: UInt16.self)))
        let dmin = Float(Float16(bitPattern: y.load(fromByteOffset: 82, as: UInt16.self)))
        if let clipped { for i in 0..<256 { clipped[i] = 0 } }
        for j in 0..<16 {
            let dl = d * Float(sc[j] & 0xF)
            if dl == 0 { continue }
            let dm = dmin * Float(sc[j] >> 4)
            for i in 0..<16 {
                let l = nearestInt((x[16 * j + i] + dm) / dl)
                L[16 * j + i] = UInt8(max(0, min(3, l)))
                if l < 0 || l > 3 { clipped?[16 * j + i] = 1 }
            }
        }
        for j in stride(from: 0, to: 256, by: 128) {
            for l in 0..<32 {
                qs[j / 4 + l] = L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6)
            }
        }
    }

    /// `qw`: the super-block's 256 columns of an importance matrix (ggml's quantize_row_q3_K_impl: each sub-block's
    /// scale a make_qx_quants fit weighted by qw · √(σ² + x²), σ² = 2/256 · Σ x² of the super-block, and the 16 scales
    /// quantized by another, weighted by each sub-block's summed weights).
    static func q3K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, clipped: UnsafeMutablePointer<Float>?, lanes: Bool = true,
                    qw: UnsafePointer<Float>? = nil) {
        var L = [Int8](repeating: 0, count: 256), scales = [Float](repeating: 0, count: 16)
        let hmask = y.assumingMemoryBound(to: UInt8.self), qs = hmask + 32, sb = hmask + 96
        var weighted: (d: Float, levels: [Int8])?
        if let qw {
            var w = [Float](repeating: 0, count: 256), sw = [Float](repeating: 0, count: 16), Ls = [Int8](repeating: 0, count: 16)
            w.withUnsafeMutableBufferPointer { importanceWeights(x, qw, factor: 2, sub: 16, $0.baseAddress!, &sw) }
            L.withUnsafeMutableBufferPointer { Lp in w.withUnsafeBufferPointer { wp in
                if lanes {
                    kd_make_qx_16x16(x, 4, wp.baseAddress!, Lp.baseAddress!, &scales)
                } else {
                    for j in 0..<16 { scales[j] = makeQx(16, 4, x + 16 * j, Lp.baseAddress! + 16 * j, w: wp.baseAddress! + 16 * j) }
                }
            } }
            let d = scales.withUnsafeBufferPointer { sp in sw.withUnsafeBufferPointer { swp in
                Ls.withUnsafeMutableBufferPointer { makeQx(16, 32, sp.baseAddress!, $0.baseAddress!, w: swp.baseAddress!) }
            } }
            weighted = (d, Ls)
        } else {
            L.withUnsafeMutableBufferPointer { Lp in
                if lanes {
                    kd_make_q3_16x16(x, 4, Lp.baseAddress!, &scales)
                } else {
                    for j in 0..<16 { scales[j] = makeQ3(16, 4, x + 16 * j, Lp.baseAddress! + 16 * j) }
                }
            }
        }
        let maxScale = scales.withUnsafeBufferPointer { signedLargest($0.baseAddress!, 16).value }
        for i in 0..<12 { sb[i] = 0 }
        if let (d, Ls) = weighted {
            // the levels the second search chose (stored + 32), packed as the reference packs its own
            for j in 0..<16 {
                var l = Ls[j]
                if j < 8 { sb[j] = UInt8(l) & 0xF } else { sb[j - 8] |= (UInt8(l) & 0xF) << 4 }
                l >>= 4
                sb[j % 4 + 8] |= UInt8(l) << (2 * (j / 4))
            }
            y.storeBytes(of: Float16(d).bitPattern, toByteOffset: 108, as: UInt16.self)
        } else if maxScale != 0 {
            let iscale = -32 / maxScale
            for j in 0..<16 {
                var l = Int8(truncatingIfNeeded: nearestInt(iscale * scales[j]))
                l = max(-32, min(31, l)) + 32
                if j < 8 { sb[j] = UInt8(l) & 0xF } else { sb[j - 8] |= (UInt8(l) & 0xF) << 4 }
                l >>= 4
                sb[j % 4 + 8] |= UInt8(l) << (2 * (j / 4))
            }
            y.storeBytes(of: Float16(1 / iscale).bitPattern, toByteOffset: 108, as: UInt16.self)
        } else {
            y.storeBytes(of: Float16(0).bitPattern, toByteOffset: 108, as: UInt16.self)
        }
        let dAll = Float(Float16(bitPattern: y.load(fromByteOffset: 108, as: UInt16.self)))
        if let clipped { for i in 0..<256 { clipped[i] = 0 } }
        for j in 0..<16 {
            let low = j < 8 ? sb[j] & 0xF : sb[j - 8] >> 4
            let s = Int(low | (((sb[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32
            let d = dAll * Float(s)
            if d == 0 { continue }
            for i in 0..<16 {
                let l = nearestInt(x[16 * j + i] / d)
                L[16 * j + i] = Int8(max(-4, min(3, l)) + 4)
                if l < -4 || l > 3 { clipped?[16 * j + i] = 1 }
            }
        }
        for i in 0..<32 { hmask[i] = 0 }
        var m = 0, hm: UInt8 = 1
        for j in 0..<256 {
            if L[j] > 3 {
                hmask[m] |= hm
                L[j] -= 4
            }
            m += 1
            if m == 32 { m = 0; hm <<= 1 }
        }
        for j in stride(from: 0, to: 256, by: 128) {
            for l in 0..<32 {
                qs[j / 4 + l] = UInt8(L[j + l]) | (UInt8(L[j + l + 32]) << 2) | (UInt8(L[j + l + 64]) << 4) | (UInt8(L[j + l + 96]) << 6)
            }
        }
    }

    /// Q4_K (bits 4) and Q5_K (bits 5): 8 sub-blocks of 32 with 6-bit scales and mins.
    /// `qw`: the super-block's 256 columns of an importance matrix (ggml's quantize_row_q4_K_impl / q5_K_impl: the
    /// sub-block fits weighted by qw · √(σ² + x²), σ² = 2/256 · Σ x², 37 trials; scales and mins quantized by
    /// make_qp_quants weighted by each sub-block's summed weights).
    static func q45K(bits: Int, _ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, clipped: UnsafeMutablePointer<Float>?, lanes: Bool = true,
                     qw: UnsafePointer<Float>? = nil) {
        let nmax = (1 << bits) - 1
        var L = [UInt8](repeating: 0, count: 256)
        var w = [Float](repeating: 0, count: 256), mins = [Float](repeating: 0, count: 8), scales = [Float](repeating: 0, count: 8)
        let sb = y.assumingMemoryBound(to: UInt8.self) + 4
        var maxScale: Float = 0, maxMin: Float = 0
        var sw = [Float](repeating: 0, count: 8)
        if let qw {
            w.withUnsafeMutableBufferPointer { importanceWeights(x, qw, factor: 2, sub: 32, $0.baseAddress!, &sw) }
        } else {
            for j in 0..<8 {
                var sumX2: Float = 0
                for l in 0..<32 { sumX2 += x[32 * j + l] * x[32 * j + l] }
                let avX = (sumX2 / 32).squareRoot()
                for l in 0..<32 { w[32 * j + l] = avX + abs(x[32 * j + l]) }
            }
        }
        let (rmin, rdelta, nstep): (Float, Float, Int) = qw != nil ? (-0.9, 0.05, 36) : bits == 4 ? (-1, 0.1, 20) : (-0.5, 0.1, 15)
        L.withUnsafeMutableBufferPointer { Lp in w.withUnsafeBufferPointer { wp in
            if lanes {
                kd_make_qkx2(8, 32, Int32(nmax), x, wp.baseAddress!, Lp.baseAddress!, &scales, &mins, rmin, rdelta, Int32(nstep), 0)
            } else {
                var aux = [UInt8](repeating: 0, count: 32)
                for j in 0..<8 {
                    let r = makeQkx2(32, nmax, x + 32 * j, wp.baseAddress! + 32 * j, Lp.baseAddress! + 32 * j, &aux, rmin: rmin, rdelta: rdelta, nstep: nstep, mad: false)
                    scales[j] = r.scale; mins[j] = r.negMin
                }
            }
        } }
        for i in 0..<12 { sb[i] = 0 }
        if qw != nil {
            var Ls = [UInt8](repeating: 0, count: 8), Lm = Ls
            let dBlock = makeQp(8, 63, scales, &Ls, sw), mBlock = makeQp(8, 63, mins, &Lm, sw)
            for j in 0..<8 { packScaleMinK4(j, Ls[j], Lm[j], sb) }
            y.storeBytes(of: Float16(dBlock).bitPattern, toByteOffset: 0, as: UInt16.self)
            y.storeBytes(of: Float16(mBlock).bitPattern, toByteOffset: 2, as: UInt16.self)
        } else {
            for j in 0..<8 {
                if scales[j] > maxScale { maxScale = scales[j] }
                if mins[j] > maxMin { maxMin = mins[j] }
            }
            let invScale: Float = maxScale > 0 ? 63 / maxScale : 0, invMin: Float = maxMin > 0 ? 63 / maxMin : 0
            for j in 0..<8 {
                let ls = min(63, UInt8(truncatingIfNeeded: nearestInt(invScale * scales[j])))
                let lm = min(63, UInt8(truncatingIfNeeded: nearestInt(invMin * mins[j])))
                packScaleMinK4(j, ls, lm, sb)
            }
            y.storeBytes(of: Float16(maxScale / 63).bitPattern, toByteOffset: 0, as: UInt16.self)
            y.storeBytes(of: Float16(maxMin / 63).bitPattern, toByteOffset: 2, as: UInt16.self)
        }
        let d = Float(Float16(bitPattern: y.load(fromByteOffset: 0, as: UInt16.self)))
        let dmin = Float(Float16(bitPattern: y.load(fromByteOffset: 2, as: UInt16.self)))
        if let clipped { for i in 0..<256 { clipped[i] = 0 } }
        for j in 0..<8 {
            let (s, m) = scaleMinK4(j, UnsafeRawPointer(sb))
            let dl = d * s
            if dl == 0 { continue }
            let dm = dmin * m
            for i in 0..<32 {
                let l = nearestInt((x[32 * j + i] + dm) / dl)
                L[32 * j + i] = UInt8(max(0, min(nmax, l)))
                if l < 0 || l > nmax { clipped?[32 * j + i] = 1 }
            }
        }
        if bits == 4 {
            let q = y.assumingMemoryBound(to: UInt8.self) + 16
            for (k, j) in stride(from: 0, to: 256, by: 64).enumerated() {
                for l in 0..<32 { q[32 * k + l] = L[j + l] | (L[j + l + 32] << 4) }
            }
        } else {
            let qh = y.assumingMemoryBound(to: UInt8.self) + 16, ql = qh + 32
            for i in 0..<32 { qh[i] = 0 }
            var m1: UInt8 = 1, m2: UInt8 = 2
            for (k, n) in stride(from: 0, to: 256, by: 64).enumerated() {
                for j in 0..<32 {
                    var l1 = L[n + j], l2 = L[n + j + 32]
                    if l1 > 15 { l1 -= 16; qh[j] |= m1 }
                    if l2 > 15 { l2 -= 16; qh[j] |= m2 }
                    ql[32 * k + j] = l1 | (l2 << 4)
                }
                m1 <<= 2; m2 <<= 2
            }
        }
    }

    /// `qw`: the super-block's 256 columns of an importance matrix (ggml's quantize_row_q6_K_impl weighs each
    /// sub-block's search by them as they are, without σ²).
    static func q6K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, clipped: UnsafeMutablePointer<Float>?, lanes: Bool = true,
                    qw: UnsafePointer<Float>? = nil) {
        var L = [Int8](repeating: 0, count: 256), scales = [Float](repeating: 0, count: 16)
        let ql = y.assumingMemoryBound(to: UInt8.self), qh = ql + 128
        let sc = (y + 192).assumingMemoryBound(to: Int8.self)
        L.withUnsafeMutableBufferPointer { Lp in
            if lanes {
                kd_make_qx_16x16(x, 32, qw, Lp.baseAddress!, &scales)
            } else {
                for ib in 0..<16 { scales[ib] = makeQx(16, 32, x + 16 * ib, Lp.baseAddress! + 16 * ib, w: qw.map { $0 + 16 * ib }) }
            }
        }
        let (maxScale, maxAbs) = scales.withUnsafeBufferPointer { signedLargest($0.baseAddress!, 16) }
        if let clipped { for i in 0..<256 { clipped[i] = 0 } }
        if maxAbs < groupMaxEps {
            y.initializeMemory(as: UInt8.self, repeating: 0, count: 210)
            return
        }
        let iscale = -128 / maxScale
        y.storeBytes(of: Float16(1 / iscale).bitPattern, toByteOffset: 208, as: UInt16.self)
        for ib in 0..<16 { sc[ib] = Int8(truncatingIfNeeded: min(127, nearestInt(iscale * scales[ib]))) }
        let dAll = Float(Float16(bitPattern: y.load(fromByteOffset: 208, as: UInt16.self)))
        for j in 0..<16 {
            let d = dAll * Float(sc[j])
            if d == 0 { continue }
            for i in 0..<16 {
                let l = nearestInt(x[16 * j + i] / d)
                L[16 * j + i] = Int8(max(-32, min(31, l)) + 32)
                if l < -32 || l > 31 { clipped?[16 * j + i] = 1 }
            }
        }
        for (k, j) in stride(from: 0, to: 256, by: 128).enumerated() {
            let lo = ql + 64 * k, hi = qh + 32 * k
            for l in 0..<32 {
                let q1 = UInt8(L[j + l]), q2 = UInt8(L[j + l + 32]), q3 = UInt8(L[j + l + 64]), q4 = UInt8(L[j + l + 96])
                lo[l] = (q1 & 0xF) | ((q3 & 0xF) << 4)
                lo[l + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4)
                hi[l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
            }
        }
    }

    /// Quantizes one 256-element super-block of `type` (a k-quant); `lanes: false` runs the scale searches one
    /// sub-block at a time (the scalar reference the lane version is tested against).
    /// `qw`: the super-block's 256 columns of an importance matrix, which every k-quant weighs its searches by as
    /// llama-quantize --imatrix does (ggml's quantize_row_*_K_impl).
    static func block(_ type: GGMLType, _ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, clipped: UnsafeMutablePointer<Float>? = nil, lanes: Bool = true,
                      qw: UnsafePointer<Float>? = nil) {
        switch type {
        case .q2_K: q2K(x, y, clipped: clipped, lanes: lanes, qw: qw)
        case .q3_K: q3K(x, y, clipped: clipped, lanes: lanes, qw: qw)
        case .q4_K: q45K(bits: 4, x, y, clipped: clipped, lanes: lanes, qw: qw)
        case .q5_K: q45K(bits: 5, x, y, clipped: clipped, lanes: lanes, qw: qw)
        case .q6_K: q6K(x, y, clipped: clipped, lanes: lanes, qw: qw)
        default: preconditionFailure("KQuant.block: \(type) is not a k-quant")
        }
    }
}

/// The k-quants with their scale searches run one sub-block at a time, exactly as ggml's reference code does: the
/// reference `quantize` (which runs them on SIMD lanes) is checked against. - Precondition: count a multiple of 256.
public func quantizeKQuantOneSubBlockAtATime(_ type: GGMLType, src: UnsafePointer<Float>, count: Int, out: UnsafeMutableRawPointer, importance: Importance? = nil) {
    precondition(count % 256 == 0 && type.blockSize == 256)
    for b in 0..<(count / 256) { KQuant.block(type, src + b * 256, out + b * type.typeSize, lanes: false, qw: importance?.superBlock(b)) }
}

