// The k-quants (Q2_K … Q6_K), IQ4_NL and MXFP4 against ggml's own quantizer, bit for bit: live through llama-cpp-python's libggml-base
// where it is installed, else against the SHA-256 of ggml's bytes recorded for the same input
// (Fixtures/kquants-ggml.json, written by Scripts/ggml_kquantize.py record: run these tests with
// DISTILL_RECORD_KQUANTS=1 where llama-cpp-python is installed). Inputs: awkward synthetic weights and a
// real matrix, the teacher's blk.0.ffn_down (1536-wide rows) as gguf-py dequantizes it.
import Foundation
import KDConfig
import KDQuant
import KDTestSupport
import Testing

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let kquantNames = ["q2_K", "q3_K", "q4_K", "q5_K", "q6_K"]
/// The formats checked against ggml's own bytes: those whose quantizers search for their scales (the k-quants and
/// IQ4_NL), and MXFP4 (gguf-py's port of it rounds its exponent with numpy's log2, not ggml's log2f).
let searchedNames = kquantNames + ["iq4_nl", "mxfp4"]
let kquantTypes: [String: GGMLType] = ["q2_K": .q2_K, "q3_K": .q3_K, "q4_K": .q4_K, "q5_K": .q5_K, "q6_K": .q6_K, "iq4_nl": .iq4_nl, "mxfp4": .mxfp4,
                                     "q4_0": .q4_0, "q5_0": .q5_0, "q4_1": .q4_1, "q5_1": .q5_1]

/// 8 rows of 512 with the cases a k-quant's searches branch on: weight-like normals, an all-zero super-block, one of
/// a single repeated value, all-positive and all-negative sub-blocks (min clamps to 0), a lone outlier, tiny values,
/// values on the grids' half-steps, and a zero sub-block inside a live super-block.
func awkwardKQuantWeights() -> [Float] {
    var x = randomArray(8 * 512, seed: 2026, scale: 0.04)
    for j in 0..<256 { x[j] = 0 }                                   // super-block 0: zeros
    for j in 256..<512 { x[j] = 0.0625 }                            // super-block 1: one value
    for j in 512..<768 { x[j] = abs(x[j]) }                         // 2: all positive
    for j in 768..<1024 { x[j] = -abs(x[j]) - 0.01 }                // 3: all negative
    x[1024 + 77] = 1.5                                              // 4: an outlier
    for j in 1280..<1536 { x[j] *= 1e-6 }                           // 5: tiny
    for j in 1536..<1792 { x[j] = Float(j % 32 - 16) / 8 }          // 6: half-steps and ties
    for j in 1792..<1808 { x[j] = 0 }                               // 7: a zero sub-block of 16
    for j in 2048..<2080 { x[j] = 0 }                               // 8: a zero sub-block of 32
    return x
}

/// `importance`: perRow weights, one per column (an importance matrix's row, as llama-quantize --imatrix passes it).
func ggmlCompare(key: String, input: [Float], name: String, perRow: Int, dir: URL, importance: [Float]? = nil) throws -> (source: String, equal: Bool, detail: String) {
    let type = kquantTypes[name]!
    let inURL = dir.appendingPathComponent("\(key)-in.f32"), oursURL = dir.appendingPathComponent("\(key)-\(name).bin")
    let imURL = dir.appendingPathComponent("\(key)-imatrix.f32")
    try input.withUnsafeBufferPointer { Data(buffer: $0) }.write(to: inURL)
    if let importance { try importance.withUnsafeBufferPointer { Data(buffer: $0) }.write(to: imURL) }
    var ours = Data(count: type.byteCount(elements: input.count))
    ours.withUnsafeMutableBytes { o in
        input.withUnsafeBufferPointer { x in
            (importance ?? []).withUnsafeBufferPointer { w in
                quantize(type, src: x.baseAddress!, count: input.count, out: o.baseAddress!,
                         importance: importance == nil ? nil : Importance(weights: w.baseAddress!, perRow: perRow))
            }
        }
    }
    try ours.write(to: oursURL)
    let im = importance == nil ? [] : [imURL.path]
    if ProcessInfo.processInfo.environment["DISTILL_RECORD_KQUANTS"] == "1" {  // with llama-cpp-python: (re)write the fixture
        _ = try runPython(quantScripts.appendingPathComponent("ggml_kquantize.py").path, ["record", key, inURL.path, name, String(perRow)] + im)
    }
    let out = try runPython(quantScripts.appendingPathComponent("ggml_kquantize.py").path,
                            ["compare", key, inURL.path, name, String(perRow), oursURL.path] + im)
    let j = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: Any]
    let source = j["source"] as! String
    if source == "live" { #expect(j["fixture_agrees"] as? Bool == true, "\(key) \(name): the recorded reference is stale (ggml_kquantize.py record)") }
    return (source, j["expected"] as! String == j["ours"] as! String, out)
}

@Test(arguments: searchedNames)
func kquantsMatchGGMLBitForBit(name: String) throws {
    let dir = try temporaryDirectory("distill-kquant")
    defer { try? FileManager.default.removeItem(at: dir) }
    let r = try ggmlCompare(key: "awkward", input: awkwardKQuantWeights(), name: name, perRow: 512, dir: dir)
    #expect(r.equal, "\(name) differs from ggml (\(r.source)): \(r.detail)")
}

@Test(arguments: searchedNames)
func kquantsMatchGGMLOnTheTeachersFFNDown(name: String) throws {
    let teacher = repoRoot.appendingPathComponent("Checkpoints/teachers/SmolLM2-135M-Instruct.Q4_1.gguf")
    try #require(FileManager.default.fileExists(atPath: teacher.path), "the teacher (Launch/fetch_teacher.sh) is needed")
    let dir = try temporaryDirectory("distill-kquant")
    defer { try? FileManager.default.removeItem(at: dir) }
    let f32 = dir.appendingPathComponent("ffn_down.f32")
    _ = try runPython(quantScripts.appendingPathComponent("ggml_kquantize.py").path, ["dequantize", teacher.path, "blk.0.ffn_down.weight", f32.path])
    let x = try Data(contentsOf: f32).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    #expect(x.count == 1536 * 576)
    let r = try ggmlCompare(key: "smollm2-blk.0.ffn_down", input: x, name: name, perRow: 1536, dir: dir)
    #expect(r.equal, "\(name) differs from ggml on the teacher's matrix (\(r.source)): \(r.detail)")
}

/// Importances for rows of `perRow` as llama-imatrix's mean squares look (positive, spread over three decades), with
/// the cases the weighted search branches on: a block of 32 columns all 0 (no weight anywhere: scale 0, as ggml's),
/// scattered zeros, and one column far above the rest.
func awkwardImportance(perRow: Int, seed: UInt64) -> [Float] {
    var w = randomArray(perRow, seed: seed, scale: 1.5).map { Float(Foundation.exp(Double($0))) }
    for j in 32..<64 { w[j] = 0 }
    for j in stride(from: 70, to: perRow, by: 13) { w[j] = 0 }
    w[perRow - 5] = 1e4
    return w
}

/// Fake quantization in a k-quant is ggml's bytes (checked above) read back: gguf-py's dequantization of our blocks,
/// bit for bit. Where the mask stops the gradient, the value sat at an end of its sub-block's grid and the weight lay
/// beyond it.
@Test(arguments: searchedNames)
func kquantFakeQuantizationIsItsBlocksReadBackByGGUFPy(name: String) throws {
    let type = kquantTypes[name]!, scheme = FakeQuantScheme(type)!
    let x = awkwardKQuantWeights(), rows = 8, c = 512
    let dir = try temporaryDirectory("distill-kquant")
    defer { try? FileManager.default.removeItem(at: dir) }
    var blocks = Data(count: type.byteCount(elements: x.count))
    blocks.withUnsafeMutableBytes { o in x.withUnsafeBufferPointer { quantize(type, src: $0.baseAddress!, count: x.count, out: o.baseAddress!) } }
    try blocks.write(to: dir.appendingPathComponent("q.bin"))
    _ = try runPython(quantScripts.appendingPathComponent("gguf_dequantize.py").path,
                      [dir.appendingPathComponent("q.bin").path, type.description, dir.appendingPathComponent("back.f32").path])
    let ref = try Data(contentsOf: dir.appendingPathComponent("back.f32")).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    var fq = [Float](repeating: 0, count: x.count), mask = fq
    fq.withUnsafeMutableBufferPointer { f in mask.withUnsafeMutableBufferPointer { m in
        fakeQuantize(scheme, src: x, rows: rows, c: c, out: f.baseAddress!, mask: m.baseAddress!)
    } }
    #expect(ref.count == x.count && zip(fq, ref).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(name): fake quantization differs from gguf-py's reading of the blocks")
    // in place gives the same values
    var inPlace = x
    inPlace.withUnsafeMutableBufferPointer { fakeQuantize(scheme, src: $0.baseAddress!, rows: rows, c: c, out: $0.baseAddress!, mask: nil) }
    #expect(inPlace == fq)
    let sub = type == .q4_K || type == .q5_K || type == .iq4_nl || type == .mxfp4 ? 32 : 16
    var stopped = 0
    for i in 0..<x.count where mask[i] == 0 {
        stopped += 1
        let s = (i / sub) * sub, values = fq[s..<(s + sub)]
        let atTop = fq[i] == values.max()! && x[i] > fq[i], atBottom = fq[i] == values.min()! && x[i] < fq[i]
        #expect(atTop || atBottom, "\(name): element \(i) (\(x[i]) → \(fq[i])) is masked but not clipped at its grid's end")
    }
    #expect(mask.allSatisfy { $0 == 0 || $0 == 1 })
    #expect(stopped < x.count / 20, "\(name): \(stopped) of \(x.count) masked")
    #expect(stopped > 0, "\(name): nothing clipped in the awkward weights (each type clips some: 3–41 of 4,096)")
}

/// Rows that a k-quant's 256-blocks do not divide (SmolLM2's 576) are quantized as llama.cpp's quantizer writes
/// them: Q2_K and Q3_K as Q4_0, Q4_K as Q5_0, Q5_K as Q5_1, Q6_K as Q8_0 (what llama-cpp-python 0.3.36 wrote for
/// SmolLM2-135M's 576-wide matrices in its Q2_K, Q3_K_M and Q4_K_M files).
@Test func kquantsOnRowsTheirBlocksDoNotDivideTakeLlamaCppsFallback() {
    let expected: [GGMLType: GGMLType] = [.q2_K: .q4_0, .q3_K: .q4_0, .q4_K: .q5_0, .q5_K: .q5_1, .q6_K: .q8_0]
    let x = randomArray(4 * 576, seed: 5, scale: 0.05)
    for (k, fallback) in expected {
        #expect(k.forRows(of: 576) == fallback && k.forRows(of: 1536) == k && k.forRows(of: 512) == k)
        var a = [Float](repeating: 0, count: x.count), b = a, ma = a, mb = a
        a.withUnsafeMutableBufferPointer { o in ma.withUnsafeMutableBufferPointer { m in
            fakeQuantize(FakeQuantScheme(k)!, src: x, rows: 4, c: 576, out: o.baseAddress!, mask: m.baseAddress!) } }
        b.withUnsafeMutableBufferPointer { o in mb.withUnsafeMutableBufferPointer { m in
            fakeQuantize(FakeQuantScheme(fallback)!, src: x, rows: 4, c: 576, out: o.baseAddress!, mask: m.baseAddress!) } }
        #expect(a == b && ma == mb, "\(k) on 576-wide rows is not \(fallback)")
    }
    for t in [GGMLType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1] { #expect(t.forRows(of: 576) == t) }
}

/// llama.cpp's k-quant presets, tensor by tensor: for SmolLM2-135M's 211 matrices in each of nine presets, the type
/// QuantPreset picks (then the row fallback) is the type in the file llama.cpp's quantizer wrote
/// (Fixtures/llamacpp-preset-types.json, from Launch/lab/llamacpp_preset_types.py).
@Test func presetsPickLlamaCppsTypeForEveryTensorOfSmolLM2() throws {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/llamacpp-preset-types.json")
    let j = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    let presets = j["presets"] as! [String: [String: String]]
    #expect(Set(presets.keys) == Set(QuantPreset.allCases.map(\.rawValue)))
    let roles: [String: (TensorRole, Int)] = ["attn_q": (.attnQ, 576), "attn_k": (.attnK, 576), "attn_v": (.attnV, 576), "attn_output": (.attnOutput, 576),
                                              "ffn_gate": (.ffnGate, 576), "ffn_up": (.ffnUp, 576), "ffn_down": (.ffnDown, 1536)]
    for (name, types) in presets {
        let preset = QuantPreset(rawValue: name)!
        #expect(types.count == 1 + 7 * 30)
        for (tensor, want) in types {
            let role: TensorRole, layer: Int, c: Int
            if tensor == "token_embd.weight" {
                (role, layer, c) = (.embedding, 0, 576)
            } else {
                let p = tensor.split(separator: ".")
                let r = roles[String(p[2])]!
                (role, layer, c) = (r.0, Int(p[1])!, r.1)
            }
            let got = preset.type(for: role, layer: layer, layers: 30, gqa: 3, tiedOutput: true).forRows(of: c)
            #expect(got.description == want, "\(name) \(tensor): \(got), llama.cpp wrote \(want)")
        }
    }
}

/// The k-quants' scale searches on SIMD lanes (what `quantize` and QAT run) give the bytes of the one-sub-block-at-a-
/// time reference (ggml's own order) on 48 super-blocks of varied weights: normals at four scales, heavy tails, sparse
/// blocks, and the awkward ones.
@Test(arguments: kquantNames)
func kquantLanesEqualTheOneSubBlockAtATimeReference(name: String) {
    let type = kquantTypes[name]!
    var x = awkwardKQuantWeights()
    for (k, scale) in [Float(1e-3), 0.02, 0.5, 30].enumerated() { x += randomArray(4 * 256, seed: UInt64(40 + k), scale: scale) }
    let t = randomArray(8 * 256, seed: 50)
    x += t.map { $0 * $0 * $0 }                                           // heavy tails
    x += randomArray(8 * 256, seed: 51).enumerated().map { $0.offset % 7 == 0 ? $0.element : 0 }  // sparse
    var a = Data(count: type.byteCount(elements: x.count)), b = a
    a.withUnsafeMutableBytes { o in x.withUnsafeBufferPointer { quantize(type, src: $0.baseAddress!, count: x.count, out: o.baseAddress!) } }
    b.withUnsafeMutableBytes { o in x.withUnsafeBufferPointer { quantizeKQuantOneSubBlockAtATime(type, src: $0.baseAddress!, count: x.count, out: o.baseAddress!) } }
    #expect(x.count == 48 * 256 && a == b, "\(name): \(zip(a, b).filter { $0 != $1 }.count) bytes differ")
}
