// MXFP4 beyond the shared checks (ggml's bytes and gguf-py's reading of them, the clip mask: KQuantTests; gguf-py's
// quantizer: QuantizeTests): the midpoint rule the quantizer runs against the scan of the 16 codes ggml runs, float by
// float around every midpoint and at both signs, and the bytes of both on varied weights.
import Foundation
import KDQuant
import KDTestSupport
import Testing

/// Weights placed within 2,048 ulps of every midpoint between two magnitudes (and of every grid value), at both signs,
/// in blocks whose largest value fixes the unit at 2^(e − 128) for a spread of exponents: the codes the quantizer
/// writes are the ones ggml's scan picks.
@Test func mxfp4MidpointRuleIsGGMLsScanOfTheCodes() {
    let magnitudes: [Float] = [0, 1, 2, 3, 4, 6, 8, 12]
    let mids: [Float] = [0.5, 1.5, 2.5, 3.5, 5, 7, 10]
    var x: [Float] = []
    for unitExponent in [-20, -9, -6, -3, 0, 4] {
        let unit = Float(sign: .plus, exponent: unitExponent, significand: 1)
        var values: [Float] = []
        for m in mids + magnitudes.dropFirst() {
            var up = m * unit, down = m * unit
            for _ in 0..<2048 { values += [up, down, -up, -down]; up = up.nextUp; down = down.nextDown }
        }
        // blocks of 31 such values and one that pins amax at 8.5 units (so the unit is the one intended)
        for s in stride(from: 0, to: values.count, by: 31) {
            var block = Array(values[s..<min(s + 31, values.count)])
            block += [Float](repeating: 0, count: 31 - block.count)
            block.append(8.5 * unit)
            x += block
        }
    }
    x += randomArray(64 * 32, seed: 41, scale: 0.05)
    x += randomArray(64 * 32, seed: 42, scale: 3).map { $0 * $0 * $0 }
    var fast = Data(count: GGMLType.mxfp4.byteCount(elements: x.count)), scan = fast
    fast.withUnsafeMutableBytes { o in x.withUnsafeBufferPointer { quantize(.mxfp4, src: $0.baseAddress!, count: x.count, out: o.baseAddress!) } }
    scan.withUnsafeMutableBytes { o in x.withUnsafeBufferPointer { quantizeMXFP4ScanningCodes(src: $0.baseAddress!, count: x.count, out: o.baseAddress!) } }
    #expect(x.count > 300_000)
    #expect(fast == scan, "\(zip(fast, scan).filter { $0 != $1 }.count) of \(fast.count) bytes differ")
}

/// The format's arithmetic on one block, by hand: amax 0.3 → floor(log2 0.3) = −2, e = 123, unit 2^−5; 0.3 / unit =
/// 9.6 reads back as 8 units (0.25), a tie at 1.5 units takes the smaller magnitude, −0.01 (0.32 units) reads as 0,
/// and a block of zeros is e = 0 with every code 0.
@Test func mxfp4OneBlockByHand() {
    var x = [Float](repeating: 0, count: 64)
    x[0] = 0.3; x[1] = 1.5 / 32; x[2] = -0.01; x[3] = -2.5 / 32; x[4] = 0.2
    var q = Data(count: GGMLType.mxfp4.byteCount(elements: 64))
    q.withUnsafeMutableBytes { o in x.withUnsafeBufferPointer { quantize(.mxfp4, src: $0.baseAddress!, count: 64, out: o.baseAddress!) } }
    #expect(q.count == 34 && q[0] == 123 && q[17] == 0)
    #expect(q[1] & 0xF == 6 && q[2] & 0xF == 1 && q[3] & 0xF == 0 && q[4] & 0xF == 10 && q[5] & 0xF == 5)
    var y = [Float](repeating: 0, count: 64), m = y
    y.withUnsafeMutableBufferPointer { yp in m.withUnsafeMutableBufferPointer { mp in
        fakeQuantize(.mxfp4, src: x, rows: 2, c: 32, out: yp.baseAddress!, mask: mp.baseAddress!)
    } }
    #expect(y[0] == 0.25 && y[1] == 1.0 / 32 && y[2] == 0 && y[3] == -2.0 / 32 && y[4] == 0.1875)
    // 0.3 lies beyond 12 units (0.375)? no: it is read as 8 units but inside the grid, so its gradient passes
    #expect(m.allSatisfy { $0 == 1 })
    // a value beyond 12 units is clipped there and stops the gradient: amax 0.45 → unit 2^−5, 0.45 = 14.4 units
    var z = [Float](repeating: 0.01, count: 32)
    z[7] = 0.45
    var zq = [Float](repeating: 0, count: 32), zm = zq
    zq.withUnsafeMutableBufferPointer { yp in zm.withUnsafeMutableBufferPointer { mp in
        fakeQuantize(.mxfp4, src: z, rows: 1, c: 32, out: yp.baseAddress!, mask: mp.baseAddress!)
    } }
    #expect(zq[7] == 0.375 && zm[7] == 0 && zm[0] == 1)
    // an infinite weight (a diverged run) quantizes without trapping: the largest unit, and as ggml's scan does (every
    // distance to it infinite) the first code, zero; its gradient stopped
    z[7] = .infinity
    zq.withUnsafeMutableBufferPointer { yp in zm.withUnsafeMutableBufferPointer { mp in
        fakeQuantize(.mxfp4, src: z, rows: 1, c: 32, out: yp.baseAddress!, mask: mp.baseAddress!)
    } }
    #expect(zq[7] == 0 && zm[7] == 0 && zq[0] == 0, "\(zq[7]) \(zm[7]) \(zq[0])")
}
