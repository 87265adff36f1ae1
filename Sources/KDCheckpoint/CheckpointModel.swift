// A checkpoint folder read as a model: it is a Hugging Face folder (weights + config.json), and when it was written by
// a QAT run past qat.start_step it holds full-precision masters, which run as they trained: fake-quantized with the
// checkpoint's own scheme and scales.
import Foundation
import KDConfig
import KDCore
import KDFormats
import KDModel
import KDQuant

/// Opens `path` (a GGUF file, a HF folder or a training checkpoint) for inference.
/// A checkpoint runs with its run config's RoPE style (a student cut from a GGUF teacher keeps adjacent-pair rows).
/// `vocabRows`: keep only the first rows of the vocabulary tables (a teacher padded beyond its tokenizer).
/// `uses`: the tensors to load (a rank that runs part of the model); all by default.
public func openModel(path: String, maxSeqLen: Int? = nil, vocabRows: Int? = nil, uses: @escaping (String) -> Bool = { _ in true }) throws -> LoadedModel {
    var loaded = try openModelFile(path: path, maxSeqLen: maxSeqLen, ropeStyle: try checkpointConfig(dir: path)?.config.model.ropeStyle,
                                   vocabRows: vocabRows, uses: uses)
    guard let qat = try checkpointQAT(dir: path), qat.enabled else { return loaded }
    let model = loaded.model
    if let scales = try loadQATScales(dir: path, model: model, qat: qat) {
        model.writeFakeQuantized(scales: scales, master: model.params.base, mask: nil)
    } else if qat.scheme != .none {
        model.writeFakeQuantized(model.quantPlan(qat), master: model.params.base, mask: nil, importance: try loadQATImportance(dir: path, model: model, qat: qat))
    }
    model.quantizeActivations = qat.activations == .int8
    loaded.kind = "safetensors, QAT \(qat.preset.map { "\($0)" } ?? "\(qat.scheme)")\(qat.activations == .int8 ? " + int8 activations" : "")"
    return loaded
}

/// The explicit QAT scales (learned, or frozen) a checkpoint folder carries, with their AdamW moments when `moments`
/// (whole-slab sized) are given; nil when it has none. A file that does not fit the model is an error.
public func loadQATScales(dir: String, model: Transformer, qat: QATConfig, moments: (m: Slab, v: Slab)? = nil) throws -> QATScales? {
    let path = (dir as NSString).appendingPathComponent(CheckpointFile.qatScales)
    guard FileManager.default.fileExists(atPath: path), let scheme = FakeQuantScheme(qat.scheme), scheme.supportsGivenScales else { return nil }
    let file = try SafetensorsFile(path: path)
    let scales = QATScales(model: model, scheme: scheme, embeddings: qat.embeddings)
    for i in scales.entries.indices {
        var targets = [(scales.name(i), scales.values.base + scales.offsets[i])]
        if let moments {
            targets += [(CheckpointFile.firstMoment + scales.name(i), moments.m.base + scales.offsets[i]),
                        (CheckpointFile.secondMoment + scales.name(i), moments.v.base + scales.offsets[i])]
        }
        for (name, dst) in targets {
            guard let t = file.tensor(name), t.shape == scales.shape(i) else {
                throw KDError.invalidInput(what: path, expected: "tensor \(name) of shape \(scales.shape(i))", found: file.tensor(name).map { "shape \($0.shape)" } ?? "none")
            }
            try file.read(t, into: dst)
        }
    }
    return scales
}

/// The explicit QAT scales (and, with `moments`, their AdamW moments) as the checkpoint's scales file.
public func qatScalesFile(_ scales: QATScales, values: UnsafePointer<Float>, moments: (m: UnsafePointer<Float>, v: UnsafePointer<Float>)?,
                          source: ScaleSource) throws -> Data {
    var tensors: [SafetensorsEntry] = []
    for i in scales.entries.indices {
        tensors.append(SafetensorsEntry(name: scales.name(i), shape: scales.shape(i), data: values + scales.offsets[i]))
        if let (m, v) = moments {
            tensors.append(SafetensorsEntry(name: CheckpointFile.firstMoment + scales.name(i), shape: scales.shape(i), data: m + scales.offsets[i]))
            tensors.append(SafetensorsEntry(name: CheckpointFile.secondMoment + scales.name(i), shape: scales.shape(i), data: v + scales.offsets[i]))
        }
    }
    return try safetensorsData(tensors: tensors, metadata: ["scheme": scales.scheme.rawValue, "scales": source.rawValue])
}

/// The importance matrix a checkpoint folder of a run with `qat.importance` carries (nil for a run without one). A run
/// with one whose folder lacks the file, or a file that does not fit the model, is an error: the weights would be
/// quantized otherwise than they trained.
public func loadQATImportance(dir: String, model: Transformer, qat: QATConfig) throws -> QATImportance? {
    guard qat.importance != .none else { return nil }
    let path = (dir as NSString).appendingPathComponent(CheckpointFile.qatImportance)
    guard FileManager.default.fileExists(atPath: path) else {
        throw KDError.invalidInput(what: dir, expected: "\(CheckpointFile.qatImportance) (the run quantized with qat.importance: \(qat.importance.rawValue))", found: "no such file")
    }
    let file = try SafetensorsFile(path: path)
    let importance = QATImportance(model: model, embeddings: qat.embeddings)
    for i in importance.entries.indices {
        let name = importance.name(i), shape = [importance.entries[i].shape[1]]
        guard let t = file.tensor(name), t.shape == shape else {
            throw KDError.invalidInput(what: path, expected: "tensor \(name) of shape \(shape)", found: file.tensor(name).map { "shape \($0.shape)" } ?? "none")
        }
        let w = importance.values.base + importance.offsets[i]
        try file.read(t, into: w)
        if let bad = (0..<shape[0]).first(where: { !(w[$0] >= 0 && w[$0].isFinite) }) {
            throw KDError.invalidInput(what: path, expected: "finite importances >= 0 in \(name)", found: "\(w[bad]) at column \(bad)")
        }
    }
    return importance
}

/// An importance matrix as the checkpoint's importance file (`tokens`: how many it was measured on).
public func qatImportanceFile(_ importance: QATImportance, tokens: Int) throws -> Data {
    let tensors = importance.entries.indices.map {
        SafetensorsEntry(name: importance.name($0), shape: [importance.entries[$0].shape[1]], data: importance.values.base + importance.offsets[$0])
    }
    return try safetensorsData(tensors: tensors, metadata: ["source": "activations", "tokens": String(tokens)])
}

/// The QAT settings of a training checkpoint folder, when it is one and its step had reached qat.start_step; nil for
/// any other folder.
public func checkpointQAT(dir: String) throws -> QATConfig? {
    guard let (c, step) = try checkpointConfig(dir: dir) else { return nil }
    return c.qat.enabled && step >= c.qat.startStep ? c.qat : nil
}

/// The run config and step a training checkpoint folder records; nil for any other folder.
public func checkpointConfig(dir: String) throws -> (config: RunConfig, step: Int)? {
    let path = (dir as NSString).appendingPathComponent(CheckpointFile.state)
    guard let data = FileManager.default.contents(atPath: path), let state = try? JSONDecoder().decode(TrainingState.self, from: data) else { return nil }
    return (try RunConfig.parse(yaml: state.config, source: path), state.step)
}
