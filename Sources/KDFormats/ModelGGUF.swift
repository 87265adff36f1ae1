// A GGUF model file of a supported family (ModelFamily) as a Transformer: hyper-parameters from the `ARCH.*` metadata,
// Float tensors copied into the parameter slab, quantized matrices left packed in the memory-mapped file.
// llama.cpp's converter permutes Q and K rows for adjacent-pair RoPE in llama files only, so llama runs with
// rope_style = adjacent and the other families with rotate-half; a missing `output.weight` means the LM head is tied.
import Foundation
import KDConfig
import KDCore
import KDModel
import KDQuant

/// Architectures `distill` can run from GGUF.
public var supportedGGUFArchitectures: [String] { ModelFamily.ggufArchitectures }

/// The model shape a GGUF file describes; `maxSeqLen` caps the context (default: the file's, at most 4096).
public func ggufModelConfig(_ f: GGUFFile, maxSeqLen: Int? = nil) throws -> ModelConfig {
    let arch = try f.required("general.architecture").string ?? "?"
    guard let family = ModelFamily.gguf(arch) else {
        throw GGUFError.unsupportedArchitecture(path: f.path, found: arch, supported: supportedGGUFArchitectures)
    }
    func int(_ k: String) throws -> Int {
        guard let v = try f.required("\(arch).\(k)").int else {
            throw GGUFError.badTensorShape(path: f.path, tensor: "(metadata)", reason: "\(arch).\(k) is not an integer")
        }
        return v
    }
    var m = ModelConfig()
    m.family = family.name
    m.layers = try int("block_count")
    m.dim = try int("embedding_length")
    m.heads = try int("attention.head_count")
    m.kvHeads = f.metadata["\(arch).attention.head_count_kv"]?.int ?? m.heads
    if let kl = f.metadata["\(arch).attention.key_length"]?.int, kl.multipliedReportingOverflow(by: m.heads) != (m.dim, false) {
        m.headDim = kl  // validated below with every other size
    }
    if let vl = f.metadata["\(arch).attention.value_length"]?.int, vl != m.headSize {
        throw GGUFError.badTensorShape(path: f.path, tensor: "(metadata)", reason: "value_length \(vl) ≠ key_length \(m.headSize) is not supported")
    }
    m.ffnDim = try int("feed_forward_length")
    guard let embd = f.tensor("token_embd.weight") else { throw GGUFError.missingTensor(path: f.path, tensor: "token_embd.weight") }
    m.vocabSize = f.metadata["\(arch).vocab_size"]?.int ?? embd.shape[0]
    m.ropeTheta = f.metadata["\(arch).rope.freq_base"]?.double ?? 10000
    m.rmsEps = Float(f.metadata["\(arch).attention.layer_norm_rms_epsilon"]?.double ?? 1e-5)
    m.maxSeqLen = maxSeqLen ?? min(f.metadata["\(arch).context_length"]?.int ?? 2048, 4096)
    m.ropeStyle = family.ggufPermutesQK ? .adjacent : .half
    m.tiedEmbeddings = f.tensor("output.weight") == nil
    if let t = f.tensor("rope_freqs.weight") {
        // Llama 3.1+: one divisor per RoPE frequency
        guard t.type == .f32, t.shape == [m.headSize / 2] else {
            throw GGUFError.wrongShape(path: f.path, tensor: "rope_freqs.weight", expected: [m.headSize / 2], found: t.shape)
        }
        let p = try f.map(t)
        m.ropeFreqFactors = (0..<(m.headSize / 2)).map { Double(p.base.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self)) }
    }
    let meta = FamilyMetadata(gguf: true, number: { f.metadata["\(arch).\($0)"]?.double }, string: { f.metadata["\(arch).\($0)"]?.string })
    do { try family.configure(&m, meta) } catch let e as FamilyError {
        throw GGUFError.badTensorShape(path: f.path, tensor: "(metadata)", reason: e.description)
    }
    try m.validate(path: f.path)
    if let rd = f.metadata["\(arch).rope.dimension_count"]?.int, rd != m.headSize {
        throw GGUFError.badTensorShape(path: f.path, tensor: "(metadata)", reason: "partial RoPE (\(rd) of \(m.headSize) dims) is not supported")
    }
    return m
}

/// Loads a GGUF model for inference: quantized matrices stay packed, each in a mapping of its own bytes (which the
/// model keeps alive), Float tensors are copied. With `vocabRows` (fewer than the file's), the model keeps only the
/// first rows of its embedding and head: a teacher whose table is padded beyond its tokenizer (Qwen) distills over the
/// shared ids. With `uses`, only the tensors it names (layout names) are mapped or copied: a pipeline stage's share;
/// the others take neither memory nor address space, and using one is a precondition failure.
public func loadGGUFModel(path: String, maxSeqLen: Int? = nil, vocabRows: Int? = nil,
                          uses: @escaping (String) -> Bool = { _ in true }) throws -> (model: Transformer, file: GGUFFile) {
    let f = try GGUFFile(path: path, mapAll: false)
    let config = try ggufModelConfig(f, maxSeqLen: maxSeqLen).keepingVocabRows(vocabRows)
    let layout = ParameterLayout(config: config)
    let stored = try ggufStoredTensors(f, layout: layout, family: config.familySpec, slicingVocab: vocabRows != nil)
    let copied = Dictionary(zip(layout.entries, stored).map { ($0.name, !$0.keptPacked(float32: $1.type == .f32)) }, uniquingKeysWith: { a, _ in a })
    let model = Transformer(config: config, needsGrad: false) { !uses($0) || !copied[$0]! }
    for (e, t) in zip(model.layout.entries, stored) where uses(e.name) {
        let bytes = try f.map(t)
        if copied[e.name]! {
            dequantize(t.type, src: bytes.base, out: model.params.base + e.offset, count: e.count)
        } else {
            model.setPacked(QuantizedMatrix(type: t.type, oc: e.shape[0], c: e.shape[1], data: bytes.base, owner: bytes), offset: e.offset)
        }
    }
    return (model, f)
}

/// Every tensor of `layout` found in `f` (under the family's GGUF names) and its shape checked, before anything is
/// allocated: a header may claim any size. GGUF lists dims innermost first; a vector reads the same either way.
func ggufStoredTensors(_ f: GGUFFile, layout: ParameterLayout, family: ModelFamily, slicingVocab: Bool) throws -> [GGUFTensorInfo] {
    try layout.entries.map { e in
        let name = family.ggufName(e.name)
        guard let t = f.tensor(name) else { throw GGUFError.missingTensor(path: f.path, tensor: name) }
        guard layout.accepts(e, stored: t.shape, slicingVocab: slicingVocab) else {
            throw GGUFError.wrongShape(path: f.path, tensor: name, expected: e.shape, found: t.shape)
        }
        return t
    }
}
