// safetensors and Hugging Face folders: our files load in the PyPI safetensors package and theirs in ours, bit for
// bit; a saved student reloads to the same logits; corrupt files fail with a clear error.
import Foundation
import KDConfig
import KDCore
import KDFormats
import KDModel
import KDTestSupport
import Testing

func tinyTrainedModel() -> Transformer {
    var m = tinyModelConfig(tied: false)
    m.maxSeqLen = 16
    let model = Transformer(config: m, needsGrad: true)
    model.initialize(seed: 21)
    return model
}

@Test func safetensorsInteroperateBitExactly() throws {
    let dir = try temporaryDirectory("distill-st")
    defer { try? FileManager.default.removeItem(at: dir) }
    let model = tinyTrainedModel()
    try saveHFModel(model, dir: dir.path, metadata: ["step": "7"])
    let ours = dir.appendingPathComponent("model.safetensors").path
    let theirs = dir.appendingPathComponent("theirs.safetensors").path
    let meta = try runPython(scripts.appendingPathComponent("st_roundtrip.py").path, [ours, theirs])
    #expect(meta.contains("\"step\": \"7\""))
    let f = try SafetensorsFile(path: theirs)
    #expect(f.metadata["written_by"] == "safetensors")
    for e in model.layout.entries {
        let t = try #require(f.tensor(e.name))
        #expect(t.dtype == .f32 && t.shape == e.shape)
        var back = [Float](repeating: 0, count: e.count)
        back.withUnsafeMutableBufferPointer { f.read(t, into: $0.baseAddress!) }
        let original = Array(UnsafeBufferPointer(start: model.params.base + e.offset, count: e.count))
        #expect(back.map(\.bitPattern) == original.map(\.bitPattern), "\(e.name)")
        let h = try #require(f.tensor(e.name + ".f16"))
        #expect(h.dtype == .f16)
        h.dtype == .f16 ? back.withUnsafeMutableBufferPointer { f.read(h, into: $0.baseAddress!) } : ()
        #expect(back == original.map { Float(Float16($0)) }, "\(e.name).f16")
    }
}

@Test func savedStudentReloadsToTheSameLogits() throws {
    let dir = try temporaryDirectory("distill-hf")
    defer { try? FileManager.default.removeItem(at: dir) }
    let model = tinyTrainedModel()
    try saveHFModel(model, dir: dir.path)
    let (again, _) = try loadHFModel(dir: dir.path, needsGrad: true)
    var shape = again.config
    shape.initStd = model.config.initStd  // an initialization setting, not part of config.json
    #expect(shape == model.config)
    #expect(again.params.toArray() == model.params.toArray())
    let toks: [Int32] = [3, 1, 4, 1, 5, 9, 2, 6]
    let loaded = try openModelFile(path: dir.path)
    #expect(loaded.kind == "safetensors")
    var a = [Float](repeating: 0, count: toks.count * 64), b = a
    toks.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: 1, t: toks.count) }
    a.withUnsafeMutableBufferPointer { model.logits(into: $0.baseAddress!) }
    toks.withUnsafeBufferPointer { loaded.model.forward(tokens: $0.baseAddress!, b: 1, t: toks.count) }
    b.withUnsafeMutableBufferPointer { loaded.model.logits(into: $0.baseAddress!) }
    #expect(a == b)
}

@Test func corruptSafetensorsFailClearly() throws {
    let dir = try temporaryDirectory("distill-st-bad")
    defer { try? FileManager.default.removeItem(at: dir) }
    try saveHFModel(tinyTrainedModel(), dir: dir.path)
    let good = try Data(contentsOf: dir.appendingPathComponent("model.safetensors"))
    func message(_ bytes: Data) throws -> String {
        let p = dir.appendingPathComponent("bad.safetensors")
        try bytes.write(to: p)
        do { _ = try SafetensorsFile(path: p.path); return "loaded" } catch { return "\(error)" }
    }
    #expect(try message(good.prefix(good.count - 10)).contains("truncated"))
    #expect(try message(Data([1, 2, 3])).contains("shorter than the 8-byte header length"))
    #expect(try message(Data([255, 255, 255, 255, 0, 0, 0, 0]) + good.dropFirst(8)).contains("does not fit"))
    var junk = good
    junk[8] = UInt8(ascii: "x")
    #expect(try message(junk).contains("header is not a JSON object"))
    #expect(throws: HFError.noConfig("/tmp")) { try hfModelConfig(dir: "/tmp") }
    // no partial file is left by a failed write
    #expect(throws: (any Error).self) { try writeSafetensors(path: "/no/such/dir/x.safetensors", tensors: []) }
    #expect(!FileManager.default.fileExists(atPath: "/no/such/dir/x.safetensors"))
}
