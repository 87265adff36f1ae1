// The k-quants (Q2_K … Q6_K) against ggml's own quantizer, bit for bit: live through llama-cpp-python's libggml-base
// where it is installed, else against the SHA-256 of ggml's bytes recorded for the same input
// (Fixtures/kquants-ggml.json, written by Scripts/ggml_kquantize.py record: run these tests with
// DISTILL_RECORD_KQUANTS=1 where llama-cpp-python is installed). Inputs: awkward synthetic weights and a
// real matrix, the teacher's blk.0.ffn_down (1536-wide rows) as gguf-py dequantizes it.
import Foundation
import KDQuant
import KDTestSupport
import Testing

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let kquantNames = ["q2_K", "q3_K", "q4_K", "q5_K", "q6_K"]
let kquantTypes: [String: GGMLType] = ["q2_K": .q2_K, "q3_K": .q3_K, "q4_K": .q4_K, "q5_K": .q5_K, "q6_K": .q6_K]

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

func ggmlCompare(key: String, input: [Float], name: String, perRow: Int, dir: URL) throws -> (source: String, equal: Bool, detail: String) {
    let type = kquantTypes[name]!
    let inURL = dir.appendingPathComponent("\(key)-in.f32"), oursURL = dir.appendingPathComponent("\(key)-\(name).bin")
    try input.withUnsafeBufferPointer { Data(buffer: $0) }.write(to: inURL)
    var ours = Data(count: type.byteCount(elements: input.count))
    ours.withUnsafeMutableBytes { o in input.withUnsafeBufferPointer { quantize(type, src: $0.baseAddress!, count: input.count, out: o.baseAddress!) } }
    try ours.write(to: oursURL)
    if ProcessInfo.processInfo.environment["DISTILL_RECORD_KQUANTS"] == "1" {  // with llama-cpp-python: (re)write the fixture
        _ = try runPython(quantScripts.appendingPathComponent("ggml_kquantize.py").path, ["record", key, inURL.path, name, String(perRow)])
    }
    let out = try runPython(quantScripts.appendingPathComponent("ggml_kquantize.py").path,
                            ["compare", key, inURL.path, name, String(perRow), oursURL.path])
    let j = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: Any]
    let source = j["source"] as! String
    if source == "live" { #expect(j["fixture_agrees"] as? Bool == true, "\(key) \(name): the recorded reference is stale (ggml_kquantize.py record)") }
    return (source, j["expected"] as! String == j["ours"] as! String, out)
}

@Test(arguments: kquantNames)
func kquantsMatchGGMLBitForBit(name: String) throws {
    let dir = try temporaryDirectory("distill-kquant")
    defer { try? FileManager.default.removeItem(at: dir) }
    let r = try ggmlCompare(key: "awkward", input: awkwardKQuantWeights(), name: name, perRow: 512, dir: dir)
    #expect(r.equal, "\(name) differs from ggml (\(r.source)): \(r.detail)")
}

@Test(arguments: kquantNames)
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
