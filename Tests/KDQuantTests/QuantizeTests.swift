// Quantizers against gguf-py (bytes equal), fake quantization against gguf-py's quantize-then-dequantize (bits
// equal), the straight-through masks, and the per-channel and activation schemes against their definitions.
import Foundation
import KDQuant
import KDTestSupport
import Testing

let quantScripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts")

/// Weights with the awkward cases: exact halves, ties, an all-zero block, a block of one repeated value.
func awkwardWeights(rows: Int) -> [Float] {
    var x = randomArray(rows * 64, seed: 91, scale: 0.3)
    for j in 0..<32 { x[j] = 0 }
    for j in 32..<64 { x[j] = 0.125 }
    for j in 64..<96 { x[j] = Float(j - 80) / 16 }  // ties on the grids
    return x
}

@Test(arguments: ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "mxfp4", "f16"])
func quantizersMatchGGUFPyBitForBit(name: String) throws {
    let type: GGMLType = ["q8_0": .q8_0, "q4_0": .q4_0, "q4_1": .q4_1, "q5_0": .q5_0, "q5_1": .q5_1, "mxfp4": .mxfp4, "f16": .f16][name]!
    let dir = try temporaryDirectory("distill-quant")
    defer { try? FileManager.default.removeItem(at: dir) }
    let x = awkwardWeights(rows: 9)
    try x.withUnsafeBufferPointer { Data(buffer: $0) }.write(to: dir.appendingPathComponent("in.f32"))
    _ = try runPython(quantScripts.appendingPathComponent("gguf_quantize.py").path,
                      [dir.appendingPathComponent("in.f32").path, name, dir.appendingPathComponent("ref.bin").path, dir.appendingPathComponent("ref.f32").path])
    let theirs = try Data(contentsOf: dir.appendingPathComponent("ref.bin"))
    var ours = Data(count: type.byteCount(elements: x.count))
    ours.withUnsafeMutableBytes { o in x.withUnsafeBufferPointer { quantize(type, src: $0.baseAddress!, count: x.count, out: o.baseAddress!) } }
    #expect(ours == theirs, "\(name): \(zip(ours, theirs).filter { $0 != $1 }.count) bytes differ")
    // fake quantization is their quantize → dequantize, to the bit
    guard let scheme = FakeQuantScheme(rawValue: name) else { return }
    let ref = try Data(contentsOf: dir.appendingPathComponent("ref.f32")).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    var fq = [Float](repeating: 0, count: x.count), mask = fq
    fq.withUnsafeMutableBufferPointer { f in mask.withUnsafeMutableBufferPointer { m in
        fakeQuantize(scheme, src: x, rows: 9, c: 64, out: f.baseAddress!, mask: m.baseAddress!)
    } }
    #expect(zip(fq, ref).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(name): fake quantization differs from gguf-py")
    #expect(zip(fq, x).allSatisfy { abs($0 - $1) <= 0.6 * x.map(abs).max()! })
}

@Test func q4_0ClipsTheSideOppositeItsLargestValueAndMasksTheGradientThere() {
    // largest magnitude −1 → d = 1/8; +1 would need level 16 and is clipped to 7·d = 0.875
    var x = [Float](repeating: 0.1, count: 32)
    x[0] = -1; x[1] = 1; x[2] = 0.8
    var y = [Float](repeating: 0, count: 32), m = y
    y.withUnsafeMutableBufferPointer { yp in m.withUnsafeMutableBufferPointer { mp in
        fakeQuantize(.q4_0, src: x, rows: 1, c: 32, out: yp.baseAddress!, mask: mp.baseAddress!)
    } }
    #expect(y[0] == -1 && y[1] == 0.875 && y[2] == 0.75)
    #expect(m[0] == 1 && m[1] == 0 && m[2] == 1 && m[3] == 1)
}

@Test func perChannelSchemesFollowTheirDefinition() {
    let rows = 3, c = 10
    let x = randomArray(rows * c, seed: 5)
    for (scheme, levels) in [(FakeQuantScheme.int8Channel, Float(127)), (.int4Channel, 7)] {
        var y = [Float](repeating: 0, count: rows * c), m = y
        y.withUnsafeMutableBufferPointer { yp in m.withUnsafeMutableBufferPointer { mp in
            fakeQuantize(scheme, src: x, rows: rows, c: c, out: yp.baseAddress!, mask: mp.baseAddress!)
        } }
        for r in 0..<rows {
            let amax = (0..<c).map { abs(x[r * c + $0]) }.max()!, d = amax / levels
            for j in 0..<c {
                let q = (x[r * c + j] / d).rounded(.toNearestOrAwayFromZero)
                #expect(abs(y[r * c + j] - q * d) <= 1e-6 * amax, "\(scheme)")
            }
            // the largest value is representable exactly (up to the scale's rounding): nothing clipped
            #expect((0..<c).allSatisfy { m[r * c + $0] == 1 })
        }
    }
    var a = randomArray(2 * 8, seed: 6)
    let before = a
    a.withUnsafeMutableBufferPointer { fakeQuantizeActivationsInt8($0.baseAddress!, rows: 2, c: 8) }
    for r in 0..<2 {
        let s = (0..<8).map { abs(before[r * 8 + $0]) }.max()! / 127
        for j in 0..<8 { #expect(abs(a[r * 8 + j] - (before[r * 8 + j] / s).rounded() * s) <= 1e-6) }
    }
}
