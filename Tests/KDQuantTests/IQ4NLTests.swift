// IQ4_NL beyond what the shared tests check (ggml's bytes, gguf-py's reading of them, the clip mask: KQuantTests):
// the lane kernel's nearest-level rule, float by float around every midpoint, and its bytes against the
// one-block-at-a-time reference on varied weights, block counts that are not multiples of 16 included.
import Foundation
import KDQuant
import KDTestSupport
import Testing

/// kd_iq4nl_16 picks a level by counting the midpoints m_k ≤ al instead of ggml's binary search with its
/// `al − lower < upper − al` tie rule. The two agree on every float within 4,096 ulps of each midpoint (where
/// rounding could matter), at the grid's ends and on 200,000 random values (normal, σ 60).
@Test func iq4nlCountingMidpointsIsGGMLsNearestLevel() {
    let levels: [Float] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
    let mids = (0..<15).map { (levels[$0] + levels[$0 + 1]) / 2 }
    func counted(_ x: Float) -> Int { mids.reduce(0) { $0 + (x >= $1 ? 1 : 0) } }
    func ggml(_ x: Float) -> Int {  // best_index_int8, written out again from ggml-quants.c
        if x <= levels[0] { return 0 }
        if x >= levels[15] { return 15 }
        var ml = 0, mu = 15
        while mu - ml > 1 { let m = (ml + mu) / 2; if x < levels[m] { mu = m } else { ml = m } }
        return x - levels[mu - 1] < levels[mu] - x ? mu - 1 : mu
    }
    var checked = 0, differ = 0
    for m in mids + levels {
        var up = m, down = m
        for _ in 0..<4096 {
            for x in [up, down, -up, -down] { checked += 1; if counted(x) != ggml(x) { differ += 1 } }
            up = up.nextUp; down = down.nextDown
        }
    }
    for x in randomArray(200_000, seed: 7, scale: 60) {
        checked += 1
        if counted(x) != ggml(x) { differ += 1 }
    }
    #expect(differ == 0, "\(differ) of \(checked) values pick another level")
    #expect(zip(mids, [-115.5, -93.5, -74, -57, -42, -28.5, -16, -4.5, 7, 19, 31.5, 45.5, 61, 79, 101] as [Float]).allSatisfy { $0 == $1 },
            "the kernel's midpoint table (kquant.c) is these")
}

/// quantize(.iq4_nl) (16 blocks on SIMD lanes, with AVX-512's lookups where the CPU has them, and without) writes the
/// bytes of the one-block-at-a-time reference on 1,059 blocks:
/// the awkward weights, normals at five scales, heavy tails, sparse rows, and a count that leaves 3 blocks over.
@Test func iq4nlLanesEqualTheOneBlockAtATimeReference() {
    var x = awkwardKQuantWeights()
    for (k, scale) in [Float(1e-12), 1e-3, 0.02, 0.5, 30].enumerated() { x += randomArray(4 * 256, seed: UInt64(60 + k), scale: scale) }
    let t = randomArray(8 * 256, seed: 70)
    x += t.map { $0 * $0 * $0 }
    x += randomArray(8 * 256, seed: 71).enumerated().map { $0.offset % 7 == 0 ? $0.element : 0 }
    x += randomArray(3 * 32 + 16 * 32 * 40, seed: 72, scale: 0.05)
    var a = Data(count: GGMLType.iq4_nl.byteCount(elements: x.count)), b = a, c = a
    a.withUnsafeMutableBytes { o in x.withUnsafeBufferPointer { quantize(.iq4_nl, src: $0.baseAddress!, count: x.count, out: o.baseAddress!) } }
    b.withUnsafeMutableBytes { o in x.withUnsafeBufferPointer { quantizeIQ4NLOneBlockAtATime(src: $0.baseAddress!, count: x.count, out: o.baseAddress!) } }
    c.withUnsafeMutableBytes { o in x.withUnsafeBufferPointer { quantizeIQ4NLPortable(src: $0.baseAddress!, count: x.count, out: o.baseAddress!) } }
    #expect(x.count / 32 == 1059 && a == b, "\(zip(a, b).filter { $0 != $1 }.count) bytes differ")
    #expect(c == b, "without AVX-512's lookups: \(zip(c, b).filter { $0 != $1 }.count) bytes differ")
    // fake quantization is those bytes read back
    var fq = [Float](repeating: 0, count: x.count), back = fq
    fq.withUnsafeMutableBufferPointer { fakeQuantize(.iq4_nl, src: x, rows: x.count / 32, c: 32, out: $0.baseAddress!, mask: nil) }
    back.withUnsafeMutableBufferPointer { o in a.withUnsafeBytes { dequantize(.iq4_nl, src: $0.baseAddress!, out: o.baseAddress!, count: x.count) } }
    #expect(fq == back)
}

/// With an importance matrix the lanes (both kinds) still write the reference's bytes — on the same 1,059 blocks, rows of
/// 96 so that a 16-block call spans rows and a row's blocks take different lanes — and the importance changes what is
/// written (else the weights were not used), while fake quantization stays those bytes read back.
/// The weights the lane tests run on: the awkward ones and 1,059 blocks more at five scales, sparse and plain, in rows
/// of 96 (so that a 16-block call spans rows and a row's blocks take different lanes), with importances spread over
/// decades, a block of 32 columns at 0 and one more zero.
func weightedLaneInputs() -> (x: [Float], w: [Float], perRow: Int) {
    var x = awkwardKQuantWeights()
    for (k, scale) in [Float(1e-12), 1e-3, 0.02, 0.5, 30].enumerated() { x += randomArray(4 * 256, seed: UInt64(60 + k), scale: scale) }
    x += randomArray(8 * 256, seed: 71).enumerated().map { $0.offset % 7 == 0 ? $0.element : 0 }
    x += randomArray(3 * 32 + 16 * 32 * 40 + 8 * 256, seed: 72, scale: 0.05)
    let perRow = 96
    precondition(x.count % perRow == 0)
    var w = randomArray(perRow, seed: 73, scale: 2).map { Float(Foundation.exp(Double($0))) }
    for j in 32..<64 { w[j] = 0 }
    w[7] = 0
    return (x, w, perRow)
}

@Test func iq4nlWithImportanceLanesEqualTheReference() {
    let (x, w, perRow) = weightedLaneInputs()
    var a = Data(count: GGMLType.iq4_nl.byteCount(elements: x.count)), b = a, c = a, plain = a
    w.withUnsafeBufferPointer { wp in
        let im = Importance(weights: wp.baseAddress!, perRow: perRow)
        x.withUnsafeBufferPointer { xp in
            a.withUnsafeMutableBytes { quantize(.iq4_nl, src: xp.baseAddress!, count: x.count, out: $0.baseAddress!, importance: im) }
            b.withUnsafeMutableBytes { quantizeIQ4NLOneBlockAtATime(src: xp.baseAddress!, count: x.count, out: $0.baseAddress!, importance: im) }
            c.withUnsafeMutableBytes { quantizeIQ4NLPortable(src: xp.baseAddress!, count: x.count, out: $0.baseAddress!, importance: im) }
            plain.withUnsafeMutableBytes { quantize(.iq4_nl, src: xp.baseAddress!, count: x.count, out: $0.baseAddress!) }
        }
    }
    #expect(a == b, "\(zip(a, b).filter { $0 != $1 }.count) bytes differ")
    #expect(c == b, "without AVX-512's lookups: \(zip(c, b).filter { $0 != $1 }.count) bytes differ")
    let changed = zip(a, plain).filter { $0 != $1 }.count
    #expect(changed > a.count / 20, "the importance changed only \(changed) of \(a.count) bytes")
    var fq = [Float](repeating: 0, count: x.count), back = fq
    w.withUnsafeBufferPointer { wp in
        fq.withUnsafeMutableBufferPointer {
            fakeQuantize(.iq4_nl, src: x, rows: x.count / perRow, c: perRow, out: $0.baseAddress!, mask: nil, importance: Importance(weights: wp.baseAddress!, perRow: perRow))
        }
    }
    back.withUnsafeMutableBufferPointer { o in a.withUnsafeBytes { dequantize(.iq4_nl, src: $0.baseAddress!, out: o.baseAddress!, count: x.count) } }
    #expect(fq == back)
}
