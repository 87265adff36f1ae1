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
