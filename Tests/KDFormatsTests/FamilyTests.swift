// Every family distill runs, from a fixture GGUF written by gguf-py under the family's real keys and tensor names
// (Scripts/family_fixtures.py), against an independent numpy float64 forward (Scripts/model_reference.py).
import Foundation
import KDConfig
import KDFormats
import KDModel
import KDTestSupport
import Testing

/// The fixtures, written once per test process.
let familyFixtures: URL = {
    let dir = try! temporaryDirectory("distill-families", removeAtExit: true)
    _ = try! runPython(scripts.appendingPathComponent("family_fixtures.py").path, [dir.path])
    return dir
}()

/// Logits of every position of every prompt, concatenated.
func logitsOfPrompts(_ model: Transformer, _ prompts: [[Int32]]) -> [Float] {
    let v = model.config.vocabSize
    return prompts.flatMap { p -> [Float] in
        var logits = [Float](repeating: 0, count: p.count * v)
        p.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: 1, t: p.count) }
        logits.withUnsafeMutableBufferPointer { model.logits(into: $0.baseAddress!) }
        return logits
    }
}

func referenceLogits(_ path: String, _ prompts: [[Int32]]) throws -> [Float] {
    let dir = try temporaryDirectory("distill-ref")
    defer { try? FileManager.default.removeItem(at: dir) }
    let out = dir.appendingPathComponent("ref.f32")
    let json = "[" + prompts.map { "[" + $0.map(String.init).joined(separator: ",") + "]" }.joined(separator: ",") + "]"
    _ = try runPython(scripts.appendingPathComponent("model_reference.py").path, [path, out.path, json])
    return try Data(contentsOf: out).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
}

let familyPrompts: [[Int32]] = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [60, 3, 33], [7]]

@Test(arguments: ModelFamilyName.allCases)
func aFamilyFixtureRunsAsTheNumpyReferenceDoes(family: ModelFamilyName) throws {
    let path = familyFixtures.appendingPathComponent("\(family.rawValue).gguf").path
    let (model, _) = try loadGGUFModel(path: path)
    let m = model.config
    #expect(m.family == family)
    #expect(m.ropeStyle == (family == .llama ? .adjacent : .half))
    #expect(m.headSize == (family == .qwen3 || family == .gemma3 ? 16 : 8))
    if family == .gemma3 {
        #expect(m.slidingWindow == 4 && m.slidingPattern == 6 && m.ropeThetaLocal == 10000 && m.ropeTheta == 1e6)
        #expect((0..<6).map(m.isSliding) == [true, true, true, true, true, false])
    }
    #expect(m.tiedEmbeddings == (family != .qwen2))
    let ours = logitsOfPrompts(model, familyPrompts), ref = try referenceLogits(path, familyPrompts)
    #expect(ours.count == ref.count)
    let worst = zip(ours, ref).map { abs($0 - $1) }.max()!
    #expect(worst <= 1e-4, "\(family): max |logit difference| \(worst)")
    #expect(ref.map(abs).max()! > 0.5)  // not vacuous
}

/// A dense (unpacked) copy of an inference model.
func denseCopy(_ model: Transformer) -> Transformer {
    let copy = Transformer(config: model.config, needsGrad: false)
    for (e, d) in zip(model.layout.entries, copy.layout.entries) { model.denseTensor(e, into: copy.params.base + d.offset) }
    return copy
}

@Test(arguments: ModelFamilyName.allCases)
func aFamilyExportsToGGUFAndHuggingFaceAndReadsBack(family: ModelFamilyName) throws {
    let src = familyFixtures.appendingPathComponent("\(family.rawValue).gguf").path
    let model = denseCopy(try loadGGUFModel(path: src).model)
    let dir = try temporaryDirectory("distill-family-export")
    defer { try? FileManager.default.removeItem(at: dir) }
    let g = dir.appendingPathComponent("out.gguf").path, hf = dir.appendingPathComponent("hf").path
    try model.exportGGUF(path: g, type: .f32, name: "fixture", extraMetadata: [])
    try saveHFModel(model, dir: hf, hfLayout: true)
    // an independent reader sees the family's architecture, keys and tensor names
    let out = try runPython(scripts.appendingPathComponent("family_export_check.py").path, [g, hf, String(model.family.hfNormOffset)])
    let j = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: Any]
    #expect(j["architecture"] as? String == family.rawValue)
    #expect((j["hf_architectures"] as? [String]) == [model.family.hfArchitecture])
    #expect((j["norm_gap"] as! Double) < 1e-6)
    let names = Set(j["tensors"] as! [String])
    #expect(names == Set(model.layout.entries.filter { !model.config.tiedEmbeddings || $0.name != "lm_head.weight" }.map { model.family.ggufName($0.name) }))
    if family == .gemma3 {
        #expect((j["keys"] as! [String]).contains("gemma3.attention.sliding_window"))
        #expect((j["layer_types"] as? [String])?.filter { $0 == "full_attention" }.count == 1)
    }
    if family == .qwen2 { #expect(names.contains("blk.0.attn_q.bias")) }
    // the numpy reference runs the export as it ran the fixture; distill reads both exports back to the same logits
    let before = logitsOfPrompts(model, familyPrompts)
    let ref = try referenceLogits(g, familyPrompts)
    #expect(zip(before, ref).map { abs($0 - $1) }.max()! <= 1e-4)
    let fromGGUF = logitsOfPrompts(try loadGGUFModel(path: g).model, familyPrompts)
    #expect(fromGGUF == before)
    let fromHF = logitsOfPrompts(try loadHFModel(dir: hf, needsGrad: false).model, familyPrompts)
    #expect(zip(fromHF, before).map { abs($0 - $1) }.max()! <= 1e-5)
}

@Test func aTeacherOpenedWithFewerVocabularyRowsGivesTheFirstColumnsOfItsLogits() throws {
    // (the untied qwen2 fixture: embedding and head both sliced)
    let path = familyFixtures.appendingPathComponent("qwen2.gguf").path
    let full = logitsOfPrompts(try loadGGUFModel(path: path).model, familyPrompts)
    let cut = try loadGGUFModel(path: path, vocabRows: 61).model  // (the prompts' largest id is 60)
    #expect(cut.config.vocabSize == 61)
    let sliced = logitsOfPrompts(cut, familyPrompts)
    let rows = full.count / 64
    let expected = (0..<rows).flatMap { r in full[(r * 64)..<(r * 64 + 61)] }
    #expect(zip(sliced, expected).map { abs($0 - $1) }.max()! < 1e-5)
}

/// Llama 3.1+ RoPE scaling: the fixture's rope_freqs.weight runs as the numpy reference divides its frequencies; the
/// same scaling given as config.json `rope_scaling` (llama3) yields the same divisors; both exports carry them.
@Test func aLlama3ScaledRoPEModelRunsAsTheReferenceFromGGUFAndFromItsHFConfig() throws {
    let path = familyFixtures.appendingPathComponent("llama3.gguf").path
    let model = try loadGGUFModel(path: path).model
    let factors = try #require(model.config.ropeFreqFactors)
    #expect(factors.count == 4 && factors[1] == 8 && factors[0] > 1 && factors[0] < 8)
    let ours = logitsOfPrompts(model, familyPrompts), ref = try referenceLogits(path, familyPrompts)
    #expect(zip(ours, ref).map { abs($0 - $1) }.max()! <= 1e-4)
    // without the factors the logits differ: the check is not vacuous
    var plain = model.config
    plain.ropeFreqFactors = nil
    let unscaled = Transformer(config: plain, needsGrad: false)
    for (e, d) in zip(model.layout.entries, unscaled.layout.entries) { model.denseTensor(e, into: unscaled.params.base + d.offset) }
    #expect(zip(logitsOfPrompts(unscaled, familyPrompts), ref).map { abs($0 - $1) }.max()! > 1e-2)
    let dir = try temporaryDirectory("distill-llama3")
    defer { try? FileManager.default.removeItem(at: dir) }
    let g = dir.appendingPathComponent("out.gguf").path
    try denseCopy(model).exportGGUF(path: g, type: .f32, name: "llama3", extraMetadata: [])
    #expect(logitsOfPrompts(try loadGGUFModel(path: g).model, familyPrompts) == ours)
    // a Hugging Face folder that states the scaling as rope_scaling only
    let hf = dir.appendingPathComponent("hf").path
    try saveHFModel(denseCopy(model), dir: hf, hfLayout: true)
    let cfgURL = URL(fileURLWithPath: hf).appendingPathComponent("config.json")
    var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: cfgURL)) as! [String: Any]
    cfg.removeValue(forKey: "distill_rope_freq_factors")
    cfg["rope_scaling"] = try JSONSerialization.jsonObject(with: Data(contentsOf: familyFixtures.appendingPathComponent("llama3-rope-scaling.json")))
    try JSONSerialization.data(withJSONObject: cfg).write(to: cfgURL)
    let fromHF = try loadHFModel(dir: hf, needsGrad: false).model
    #expect(zip(try #require(fromHF.config.ropeFreqFactors), factors).allSatisfy { abs($0 - $1) < 1e-6 })
    #expect(zip(logitsOfPrompts(fromHF, familyPrompts), ours).map { abs($0 - $1) }.max()! <= 1e-4)
}

@Test func llama3sReleasedScalingIsWrittenAsRopeScalingOnHFExport() {
    let f = llama3RopeFactors(headSize: 64, theta: 500_000, factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 8192)
    #expect(f.first == 1 && f.last == 32 && f.contains { $0 > 1 && $0 < 32 })
    var m = ModelConfig()
    m.dim = 128; m.heads = 2; m.kvHeads = 2; m.ropeTheta = 500_000; m.ropeFreqFactors = f
    let extras = ModelFamily.llama.hfExtras(m)
    let s = extras["rope_scaling"] as? [String: Any]
    #expect(s?["rope_type"] as? String == "llama3" && s?["factor"] as? Double == 32)
    m.ropeFreqFactors = f.map { $0 * 1.5 }  // no Llama 3 parameters give these
    #expect(ModelFamily.llama.hfExtras(m)["rope_scaling"] == nil)
}

/// RoPE scaling that leaves no frequency divisors (YaRN, linear, …) is refused for every family, in either format,
/// rather than run as if unscaled.
@Test func ropeScalingOtherThanLlama3sIsRefusedForEveryFamily() throws {
    let dir = try temporaryDirectory("distill-yarn")
    defer { try? FileManager.default.removeItem(at: dir) }
    for family in ModelFamilyName.allCases {
        let hf = dir.appendingPathComponent(family.rawValue).path
        try saveHFModel(denseCopy(try loadGGUFModel(path: familyFixtures.appendingPathComponent("\(family.rawValue).gguf").path).model),
                        dir: hf, hfLayout: true)
        let cfgURL = URL(fileURLWithPath: hf).appendingPathComponent("config.json")
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: cfgURL)) as! [String: Any]
        cfg["rope_scaling"] = ["rope_type": "yarn", "factor": 4.0]
        try JSONSerialization.data(withJSONObject: cfg).write(to: cfgURL)
        #expect { try hfModelConfig(dir: hf) } throws: { "\($0)".contains("RoPE scaling 'yarn' is not supported (supported: llama3)") }
    }
}
