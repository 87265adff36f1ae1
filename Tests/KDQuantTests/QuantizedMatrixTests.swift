// Packed matrices multiply like their dequantized Float copies.
import KDOps
import KDQuant
import KDTestSupport
import Testing

@Test(arguments: [GGMLType.q8_0, .q4_1, .q4_K, .q6_K])
func packedMatmulEqualsDequantizedMatmul(type: GGMLType) {
    let oc = 37, c = 256, n = 5
    // random bytes with finite half-precision scales at offset 0 (true for these types) or at the block end
    var bytes = [UInt8](repeating: 0, count: type.byteCount(elements: oc * c))
    let rng = randomArray(bytes.count, seed: 77)
    for i in 0..<bytes.count { bytes[i] = UInt8(truncatingIfNeeded: Int(abs(rng[i]) * 1000)) }
    let scaleOffsets: [Int] = type == .q6_K ? [208] : type == .q4_K || type == .q4_1 ? [0, 2] : [0]
    for b in 0..<(bytes.count / type.typeSize) {
        for off in scaleOffsets {
            let h = Float16(0.01 * Float(b % 7 + 1)).bitPattern
            bytes[b * type.typeSize + off] = UInt8(h & 0xFF)
            bytes[b * type.typeSize + off + 1] = UInt8(h >> 8)
        }
    }
    let inp = randomArray(n * c, seed: 78)
    bytes.withUnsafeBytes { raw in
        let q = QuantizedMatrix(type: type, oc: oc, c: c, data: raw.baseAddress!, owner: nil)
        var dense = [Float](repeating: 0, count: oc * c)
        dense.withUnsafeMutableBufferPointer { q.dequantizeRows(0, oc, into: $0.baseAddress!) }
        var a = [Float](repeating: 1, count: n * oc), b = a
        a.withUnsafeMutableBufferPointer { q.forward(out: $0.baseAddress!, inp: inp, n: n, accumulate: true) }
        b.withUnsafeMutableBufferPointer { matmulForward(out: $0.baseAddress!, inp: inp, weight: dense, n: n, c: c, oc: oc, accumulate: true) }
        #expect(maxRelError(a, b) < 1e-6)
        var row = [Float](repeating: 0, count: c)
        row.withUnsafeMutableBufferPointer { q.row(5, into: $0.baseAddress!) }
        #expect(row == Array(dense[(5 * c)..<(6 * c)]))
    }
}
