// Given scales (LSQ learned scales, frozen ranges): with the absmax scales they equal the absmax path bit for bit,
// their GGUF blocks dequantize to exactly the fake-quantized values, clipping masks the weights' gradient, and the
// scales' gradient matches finite differences of the straight-through surrogate.
import Foundation
import KDQuant
import KDTestSupport
import Testing

let givenScaleSchemes: [FakeQuantScheme] = [.q8_0, .q4_0, .int8Channel, .int4Channel]

@Test(arguments: givenScaleSchemes)
func absmaxScalesReproduceTheAbsmaxPathBitForBit(scheme: FakeQuantScheme) {
    let rows = 9, c = 64
    let x = awkwardWeights(rows: rows)
    var a = [Float](repeating: 0, count: x.count), ma = a, b = a, mb = a
    var s = [Float](repeating: 0, count: rows * c / scheme.group(c: c))
    fakeQuantize(scheme, src: x, rows: rows, c: c, out: &a, mask: &ma)
    absmaxScales(scheme, src: x, rows: rows, c: c, out: &s)
    fakeQuantizeScaled(scheme, src: x, rows: rows, c: c, scales: s, out: &b, mask: &mb)
    #expect(zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count == 0)
    #expect(ma == mb)
    if let type = scheme.ggmlType {
        // and the blocks written with those scales are ggml's own
        var ours = [UInt8](repeating: 0, count: type.byteCount(elements: x.count)), ref = ours
        quantize(type, src: x, count: x.count, out: &ref)
        quantizeScaled(type, src: x, count: x.count, scales: s, out: &ours)
        #expect(ours == ref)
    }
}

@Test(arguments: [FakeQuantScheme.q8_0, .q4_0])
func blocksWrittenWithAnyScalesDequantizeToTheFakeQuantizedValues(scheme: FakeQuantScheme) {
    let rows = 6, c = 64, type = scheme.ggmlType!
    let x = randomArray(rows * c, seed: 5, scale: 0.5)
    // scales 0.3× to 1.6× the absmax ones: some blocks clip, some never reach the ends of the grid
    var s = [Float](repeating: 0, count: rows * c / 32)
    absmaxScales(scheme, src: x, rows: rows, c: c, out: &s)
    for i in s.indices { s[i] *= 0.3 + 1.3 * Float(i) / Float(s.count - 1) }
    var fq = [Float](repeating: 0, count: x.count), mask = fq, back = fq
    fakeQuantizeScaled(scheme, src: x, rows: rows, c: c, scales: s, out: &fq, mask: &mask)
    var bytes = [UInt8](repeating: 0, count: type.byteCount(elements: x.count))
    quantizeScaled(type, src: x, count: x.count, scales: s, out: &bytes)
    dequantize(type, src: bytes, out: &back, count: x.count)
    #expect(zip(fq, back).filter { $0.bitPattern != $1.bitPattern }.count == 0)
    #expect(mask.contains(0) && mask.contains(1))  // the small scales clipped something
}

@Test(arguments: givenScaleSchemes)
func scaleGradientMatchesFiniteDifferencesOfTheStraightThroughSurrogate(scheme: FakeQuantScheme) throws {
    let rows = 4, c = 64
    let x = randomArray(rows * c, seed: 11, scale: 0.4)
    let dOut = randomArray(rows * c, seed: 12)
    let g = scheme.group(c: c), n = rows * c / g
    var s = [Float](repeating: 0, count: n)
    absmaxScales(scheme, src: x, rows: rows, c: c, out: &s)
    for i in s.indices { s[i] *= i % 2 == 0 ? 0.6 : 1.2 }  // clipping in half the groups
    var analytic = [Float](repeating: 0, count: n)
    fakeQuantizeScaleGradient(scheme, src: x, rows: rows, c: c, scales: s, dOut: dOut, dScales: &analytic)
    var fq = [Float](repeating: 0, count: x.count), mask = fq
    fakeQuantizeScaled(scheme, src: x, rows: rows, c: c, scales: s, out: &fq, mask: &mask)
    // the surrogate LSQ differentiates: the rounding residual frozen at s₀, w'(s) = x + s·(k − x/s₀) inside the grid
    // and k·s where clipped (k the grid index at s₀), times LSQ's gradient scale 1/√(N·Qp)
    let qp: Double = scheme == .q8_0 || scheme == .int8Channel ? 127 : 7
    let gradScale = 1 / (Double(g) * qp).squareRoot()
    for b in 0..<n {
        func surrogate(_ sb: Double) -> Double {
            var l = 0.0
            for j in (b * g)..<((b + 1) * g) {
                let s0 = Double(s[b]), k = Double(fq[j]) / Double(scheme.ggmlType != nil ? Float(Float16(s[b])) : s[b])
                let w = mask[j] > 0 ? Double(x[j]) + sb * (k - Double(x[j]) / s0) : k * sb
                l += Double(dOut[j]) * w
            }
            return l
        }
        let h = 1e-3 * abs(Double(s[b]))
        let fd = (surrogate(Double(s[b]) + h) - surrogate(Double(s[b]) - h)) / (2 * h) * gradScale
        #expect(abs(fd - Double(analytic[b])) <= 1e-4 * max(1, abs(fd)), "group \(b): finite differences \(fd), analytic \(analytic[b])")
    }
    // clipped elements are the ones outside the grid, and they exist in the shrunken groups only
    #expect(mask.contains(0))
}

@Test func learningTheScalesLowersTheQuantizationError() {
    // plain LSQ on ‖w' − w‖²: gradient descent on the scale alone must reduce the error of a 4-bit grid
    let rows = 8, c = 64, scheme = FakeQuantScheme.int4Channel
    let x = randomArray(rows * c, seed: 3, scale: 1)
    var s = [Float](repeating: 0, count: rows)
    absmaxScales(scheme, src: x, rows: rows, c: c, out: &s)
    func error(_ s: [Float]) -> Double {
        var fq = [Float](repeating: 0, count: x.count)
        fakeQuantizeScaled(scheme, src: x, rows: rows, c: c, scales: s, out: &fq, mask: nil)
        return zip(fq, x).reduce(0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
    }
    let before = error(s)
    for _ in 0..<200 {
        var fq = [Float](repeating: 0, count: x.count), ds = [Float](repeating: 0, count: rows)
        fakeQuantizeScaled(scheme, src: x, rows: rows, c: c, scales: s, out: &fq, mask: nil)
        let dOut = zip(fq, x).map { 2 * ($0 - $1) }
        fakeQuantizeScaleGradient(scheme, src: x, rows: rows, c: c, scales: s, dOut: dOut, dScales: &ds)
        for i in 0..<rows { s[i] -= 1e-3 * ds[i] }
    }
    #expect(error(s) < 0.9 * before, "error \(before) → \(error(s))")
}
