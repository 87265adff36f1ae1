// IQ4_NL, Q4_0, Q4_1, Q5_0, Q5_1 and the k-quants weighted by an importance matrix: bit for bit as llama-quantize --imatrix writes them (ggml's own
// quantizer given the same row of importances: live through llama-cpp-python's libggml-base, else the SHA-256 recorded in
// Fixtures/kquants-ggml.json), the SIMD lanes bit for bit the one-block reference, and fake quantization those bytes read
// back by gguf-py.
import Foundation
import KDQuant
import KDTestSupport
import Testing

@Test(arguments: ["iq4_nl", "q4_0", "q5_0", "q4_1", "q5_1", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K"])
func weighedByAnImportanceMatrixMatchesGGML(name: String) throws {
    let dir = try temporaryDirectory("distill-kquant")
    defer { try? FileManager.default.removeItem(at: dir) }
    let r = try ggmlCompare(key: "awkward", input: awkwardKQuantWeights(), name: name, perRow: 512, dir: dir,
                            importance: awkwardImportance(perRow: 512, seed: 31))
    #expect(r.equal, "\(name) with an importance matrix differs from ggml (\(r.source)): \(r.detail)")
    let teacher = repoRoot.appendingPathComponent("Checkpoints/teachers/SmolLM2-135M-Instruct.Q4_1.gguf")
    try #require(FileManager.default.fileExists(atPath: teacher.path), "the teacher (Launch/fetch_teacher.sh) is needed")
    let f32 = dir.appendingPathComponent("ffn_down.f32")
    _ = try runPython(quantScripts.appendingPathComponent("ggml_kquantize.py").path, ["dequantize", teacher.path, "blk.0.ffn_down.weight", f32.path])
    let x = try Data(contentsOf: f32).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    let t = try ggmlCompare(key: "smollm2-blk.0.ffn_down", input: x, name: name, perRow: 1536, dir: dir,
                            importance: awkwardImportance(perRow: 1536, seed: 32))
    #expect(t.equal, "\(name) with an importance matrix differs from ggml on the teacher's matrix (\(t.source)): \(t.detail)")
}

/// The lanes write the reference's bytes on 1,059 blocks of the awkward cases and more (rows of 96, so that a 16-block
/// call spans rows, each with its own σ², and a row's blocks take different lanes); the importance changes what is
/// written; fake quantization is those bytes as gguf-py reads them back, in place too, and its mask stops only weights
/// beyond the end of their block's grid.
@Test(arguments: ["q4_0", "q5_0", "q4_1", "q5_1"])
func weightedLanesEqualTheReferenceAndReadBack(name: String) throws {
    let type = kquantTypes[name]!
    let (x, w, perRow) = weightedLaneInputs()
    var a = Data(count: type.byteCount(elements: x.count)), b = a, plain = a
    w.withUnsafeBufferPointer { wp in
        let im = Importance(weights: wp.baseAddress!, perRow: perRow)
        x.withUnsafeBufferPointer { xp in
            a.withUnsafeMutableBytes { quantize(type, src: xp.baseAddress!, count: x.count, out: $0.baseAddress!, importance: im) }
            b.withUnsafeMutableBytes { quantizeWeightedOneBlockAtATime(type, src: xp.baseAddress!, count: x.count, out: $0.baseAddress!, importance: im) }
            plain.withUnsafeMutableBytes { quantize(type, src: xp.baseAddress!, count: x.count, out: $0.baseAddress!) }
        }
    }
    #expect(a == b, "\(zip(a, b).filter { $0 != $1 }.count) bytes differ")
    let changed = zip(a, plain).filter { $0 != $1 }.count
    #expect(changed > a.count / 20, "the importance changed only \(changed) of \(a.count) bytes")

    let dir = try temporaryDirectory("distill-weightedq")
    defer { try? FileManager.default.removeItem(at: dir) }
    try a.write(to: dir.appendingPathComponent("q.bin"))
    _ = try runPython(quantScripts.appendingPathComponent("gguf_dequantize.py").path,
                      [dir.appendingPathComponent("q.bin").path, type.description, dir.appendingPathComponent("back.f32").path])
    let ref = try Data(contentsOf: dir.appendingPathComponent("back.f32")).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    var fq = [Float](repeating: 0, count: x.count), mask = fq, inPlace = x
    w.withUnsafeBufferPointer { wp in
        let im = Importance(weights: wp.baseAddress!, perRow: perRow), rows = x.count / perRow
        fq.withUnsafeMutableBufferPointer { f in mask.withUnsafeMutableBufferPointer { m in
            fakeQuantize(FakeQuantScheme(type)!, src: x, rows: rows, c: perRow, out: f.baseAddress!, mask: m.baseAddress!, importance: im)
        } }
        inPlace.withUnsafeMutableBufferPointer {
            fakeQuantize(FakeQuantScheme(type)!, src: $0.baseAddress!, rows: rows, c: perRow, out: $0.baseAddress!, mask: nil, importance: im)
        }
    }
    #expect(ref.count == x.count && zip(fq, ref).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(name): fake quantization differs from gguf-py's reading of the blocks")
    #expect(inPlace == fq)
    var stopped = 0
    for i in 0..<x.count where mask[i] == 0 {
        stopped += 1
        let s = (i / 32) * 32, values = fq[s..<(s + 32)]
        let atTop = fq[i] == values.max()! && x[i] > fq[i], atBottom = fq[i] == values.min()! && x[i] < fq[i]
        #expect(atTop || atBottom, "\(name): element \(i) (\(x[i]) → \(fq[i])) is masked but not beyond its grid's end")
    }
    #expect(mask.allSatisfy { $0 == 0 || $0 == 1 })
    #expect(stopped > 0 && stopped < x.count / 20, "\(name): \(stopped) of \(x.count) masked")
}

/// The k-quants with an importance matrix: the sub-block searches on SIMD lanes write the one-sub-block-at-a-time
/// reference's bytes (the awkward super-blocks and four more scales, rows of 512), the importance changes them, and
/// fake quantization is exactly those blocks read back.
@Test(arguments: kquantNames)
func weighedKQuantLanesEqualTheReference(name: String) throws {
    let type = kquantTypes[name]!
    var x = awkwardKQuantWeights()
    for (k, scale) in [Float(1e-3), 0.02, 0.5, 30].enumerated() { x += randomArray(2 * 512, seed: UInt64(80 + k), scale: scale) }
    let perRow = 512, w = awkwardImportance(perRow: perRow, seed: 33)
    var a = Data(count: type.byteCount(elements: x.count)), b = a, plain = a
    var fq = [Float](repeating: 0, count: x.count), back = fq
    w.withUnsafeBufferPointer { wp in
        let im = Importance(weights: wp.baseAddress!, perRow: perRow)
        x.withUnsafeBufferPointer { xp in
            a.withUnsafeMutableBytes { quantize(type, src: xp.baseAddress!, count: x.count, out: $0.baseAddress!, importance: im) }
            b.withUnsafeMutableBytes { quantizeKQuantOneSubBlockAtATime(type, src: xp.baseAddress!, count: x.count, out: $0.baseAddress!, importance: im) }
            plain.withUnsafeMutableBytes { quantize(type, src: xp.baseAddress!, count: x.count, out: $0.baseAddress!) }
        }
        fq.withUnsafeMutableBufferPointer {
            fakeQuantize(FakeQuantScheme(type)!, src: x, rows: x.count / perRow, c: perRow, out: $0.baseAddress!, mask: nil, importance: im)
        }
    }
    #expect(a == b, "\(zip(a, b).filter { $0 != $1 }.count) bytes differ")
    let changed = zip(a, plain).filter { $0 != $1 }.count
    #expect(changed > a.count / 20, "the importance changed only \(changed) of \(a.count) bytes")
    back.withUnsafeMutableBufferPointer { o in a.withUnsafeBytes { dequantize(type, src: $0.baseAddress!, out: o.baseAddress!, count: x.count) } }
    #expect(fq == back)
}
