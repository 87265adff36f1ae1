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
        try back.withUnsafeMutableBufferPointer { try f.read(t, into: $0.baseAddress!) }
        let original = Array(UnsafeBufferPointer(start: model.params.base + e.offset, count: e.count))
        #expect(back.map(\.bitPattern) == original.map(\.bitPattern), "\(e.name)")
        let h = try #require(f.tensor(e.name + ".f16"))
        #expect(h.dtype == .f16)
        h.dtype == .f16 ? try back.withUnsafeMutableBufferPointer { try f.read(h, into: $0.baseAddress!) } : ()
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

/// A rank that runs part of a Hugging Face teacher (blocks 2..<4 of 4, the final norm and the head), stored as
/// published checkpoints are (F16 matrices, two shard files written by the PyPI safetensors package), maps only those
/// tensors' bytes: every mapping of the files in /proc/self/maps lies within the pages of a used tensor, together they
/// cover the matrices it keeps packed, and the stage's forward equals the whole model's on the same input.
@Test func aStageOfAHFFolderMapsOnlyItsTensorsAndRunsAsTheWholeModel() throws {
    let dir = try temporaryDirectory("distill-hf-stage")
    defer { try? FileManager.default.removeItem(at: dir) }
    var m = tinyModelConfig(tied: false)
    (m.layers, m.dim, m.ffnDim, m.vocabSize, m.initStd) = (4, 256, 512, 512, 0.05)
    let model = Transformer(config: m, needsGrad: true)
    model.initialize(seed: 5)
    let f32 = dir.appendingPathComponent("f32"), folder = dir.appendingPathComponent("teacher")
    try saveHFModel(model, dir: f32.path)
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    _ = try runPython(scripts.appendingPathComponent("st_half.py").path, [f32.appendingPathComponent("model.safetensors").path, folder.path])
    try FileManager.default.copyItem(at: f32.appendingPathComponent("config.json"), to: folder.appendingPathComponent("config.json"))

    let stage = 2..<4
    let uses: (String) -> Bool = { name in ParameterLayout.block(of: name).map(stage.contains) ?? true }
    let part = try openModelFile(path: folder.path, uses: uses)
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    var mapped = 0, keptBytes = 0, keptCount = 0, fileBytes = 0, shards = 0
    for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) where name.hasSuffix(".safetensors") {
        let path = folder.appendingPathComponent(name).path
        let f = try SafetensorsFile(path: path, mapAll: false)
        shards += 1
        fileBytes += try MappedFile.fileSize(path)
        func pages(_ t: SafetensorsTensor) -> Range<Int> {
            (f.dataStart + t.begin) / page * page..<(f.dataStart + t.end + page - 1) / page * page
        }
        let used = part.model.layout.entries.filter { uses($0.name) }.compactMap { f.tensor($0.name).map(pages) }
        for range in try mappedRanges(ofFile: path) {
            #expect(used.contains { $0.lowerBound <= range.lowerBound && range.upperBound <= $0.upperBound }, "\(name): mapped \(range) is no used tensor's")
            mapped += range.count
        }
        // what stays mapped is the packed matrices (vectors are copied to Floats and unmapped)
        let kept = part.model.layout.entries.filter { uses($0.name) && part.model.packed[$0.offset] != nil }.compactMap { f.tensor($0.name).map(pages) }
        keptBytes += kept.reduce(0) { $0 + $1.count }
        keptCount += kept.count
    }
    #expect(shards == 2)
    #expect(keptCount > 0 && mapped >= keptBytes - keptCount * page && mapped <= keptBytes, "mapped \(mapped) bytes of the kept \(keptBytes)")
    #expect(Double(mapped) < 0.8 * Double(fileBytes), "half the blocks and the head: \(mapped) of \(fileBytes)")

    let whole = try openModelFile(path: folder.path)
    let tokens: [Int32] = [1, 90, 198, 26, 359, 253, 56, 46]
    let n = tokens.count, c = m.dim
    let entering = tokens.withUnsafeBufferPointer { tk in
        Array(UnsafeBufferPointer(start: whole.model.forwardStage(0..<2, tokens: tk.baseAddress!, hidden: nil, b: 1, t: n, finalNorm: false), count: n * c))
    }
    let a = entering.withUnsafeBufferPointer {
        Array(UnsafeBufferPointer(start: whole.model.forwardStage(stage, tokens: nil, hidden: $0.baseAddress!, b: 1, t: n, finalNorm: true), count: n * c))
    }
    let b = entering.withUnsafeBufferPointer {
        Array(UnsafeBufferPointer(start: part.model.forwardStage(stage, tokens: nil, hidden: $0.baseAddress!, b: 1, t: n, finalNorm: true), count: n * c))
    }
    #expect(a == b && a.contains { $0 != 0 })
}
