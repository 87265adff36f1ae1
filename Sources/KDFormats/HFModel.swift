// Hugging Face folders of a supported family (LlamaForCausalLM, Gemma3ForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM):
// config.json + *.safetensors (+ tokenizer.json). Our tensor names are HF's, so loading and saving need no renaming
// table. HF checkpoints use rotate-half RoPE (rope_style = half). Gemma stores its norm weights as w (computing 1 + w);
// distill holds 1 + w, so the 1 is added on load and taken off on export (training checkpoints keep 1 + w and say so
// in config.json, so a resume reads back the same bits).
import Foundation
import KDConfig
import KDCore
import KDModel
import KDQuant

public enum HFError: Error, CustomStringConvertible, Equatable {
    case noConfig(String)
    case badConfig(path: String, reason: String)
    case missingTensor(dir: String, tensor: String)
    case wrongShape(tensor: String, expected: [Int], found: [Int])
    case notAModel(String)

    public var description: String {
        switch self {
        case .noConfig(let d): return "\(d): expected a Hugging Face model folder with config.json, found none"
        case .badConfig(let p, let r): return "\(p): \(r)"
        case .missingTensor(let d, let t): return "\(d): tensor '\(t)' is in none of the folder's .safetensors files"
        case .wrongShape(let t, let e, let f): return "tensor '\(t)': expected shape \(e), found \(f)"
        case .notAModel(let p): return "\(p): expected a .gguf file or a Hugging Face folder (config.json + .safetensors), found neither"
        }
    }
}

/// config.json key of a training checkpoint whose norm weights are stored as distill runs them (1 + w for Gemma).
let normsAsRunKey = "distill_norm_weights_as_run"
/// config.json key with a model's RoPE frequency divisors, exactly (Hugging Face's rope_scaling describes only Llama 3's).
let ropeFactorsKey = "distill_rope_freq_factors"

/// The model shape of a supported family's config.json. `ropeStyle` overrides Hugging Face's rotate-half convention for a
/// folder whose Q/K rows are stored in another order (a training checkpoint of a student cut from a GGUF teacher).
public func hfModelConfig(dir: String, maxSeqLen: Int? = nil, ropeStyle: RopeStyle? = nil) throws -> ModelConfig {
    try hfModelConfig(json: hfConfigJSON(dir: dir), path: (dir as NSString).appendingPathComponent(HFFolder.config),
                      maxSeqLen: maxSeqLen, ropeStyle: ropeStyle)
}

/// A folder's config.json as an object.
func hfConfigJSON(dir: String) throws -> [String: Any] {
    let path = (dir as NSString).appendingPathComponent(HFFolder.config)
    guard let data = FileManager.default.contents(atPath: path) else { throw HFError.noConfig(dir) }
    guard let j = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
        throw HFError.badConfig(path: path, reason: "not a JSON object")
    }
    return j
}

func hfModelConfig(json j: [String: Any], path: String, maxSeqLen: Int?, ropeStyle: RopeStyle?) throws -> ModelConfig {
    let arch = (j["architectures"] as? [String])?.first ?? (j["model_type"] as? String ?? "?")
    guard let family = ModelFamily.hf(arch) ?? (j["model_type"] as? String).flatMap(ModelFamily.hf) else {
        throw HFError.badConfig(path: path, reason: "architecture '\(arch)' is not supported (supported: \(ModelFamily.hfArchitectures.joined(separator: ", ")))")
    }
    func int(_ k: String) throws -> Int {
        guard let v = j[k] as? Int else { throw HFError.badConfig(path: path, reason: "expected an integer '\(k)', found \(j[k].map { "\($0)" } ?? "none")") }
        return v
    }
    var m = ModelConfig()
    m.family = family.name
    m.layers = try int("num_hidden_layers")
    m.dim = try int("hidden_size")
    m.heads = try int("num_attention_heads")
    m.kvHeads = (j["num_key_value_heads"] as? Int) ?? m.heads
    // head_dim only when it differs from hidden_size / heads (a head-pruned student)
    if let hd = j["head_dim"] as? Int, hd * m.heads != m.dim { m.headDim = hd }
    m.ffnDim = try int("intermediate_size")
    m.vocabSize = try int("vocab_size")
    m.ropeTheta = (j["rope_theta"] as? Double) ?? 10000
    m.rmsEps = Float((j["rms_norm_eps"] as? Double) ?? 1e-5)
    m.maxSeqLen = maxSeqLen ?? min((j["max_position_embeddings"] as? Int) ?? 2048, 4096)
    m.tiedEmbeddings = (j["tie_word_embeddings"] as? Bool) ?? false
    m.ropeStyle = ropeStyle ?? .half
    func lookup(_ key: String) -> Any? {
        // "a.b" reads a nested object (rope_scaling.rope_type)
        key.split(separator: ".").reduce(j as Any?) { ($0 as? [String: Any])?[String($1)] }
    }
    let meta = FamilyMetadata(gguf: false, number: { k in
        switch lookup(k) { case let d as Double: return d; case let i as Int: return Double(i); case let b as Bool: return b ? 1 : 0; default: return nil }
    }, string: { lookup($0) as? String })
    do { try family.configure(&m, meta) } catch let e as FamilyError {
        throw HFError.badConfig(path: path, reason: e.description)
    }
    // distill's own record of RoPE divisors, exact (over what rope_scaling gave; alone when the factors fit none)
    if let f = j[ropeFactorsKey] as? [Double] { m.ropeFreqFactors = f }
    if let types = j["layer_types"] as? [String], types.contains("sliding_attention") {
        m.globalLayers = types.indices.filter { types[$0] != "sliding_attention" }
    }
    try m.validate(path: path)
    return m
}

/// Loads a HF folder. Inference models keep F16/BF16 matrices packed, each in a mapping of its own bytes (which the
/// model keeps alive); training models get Floats. With `uses` (inference), only the tensors it names are mapped or
/// copied: a pipeline stage's share; the others take neither memory nor address space (as ``loadGGUFModel``).
public func loadHFModel(dir: String, needsGrad: Bool, maxSeqLen: Int? = nil, ropeStyle: RopeStyle? = nil,
                        vocabRows: Int? = nil, uses: @escaping (String) -> Bool = { _ in true }) throws -> (model: Transformer, files: [SafetensorsFile]) {
    let j = try hfConfigJSON(dir: dir)
    let m = try hfModelConfig(json: j, path: (dir as NSString).appendingPathComponent(HFFolder.config), maxSeqLen: maxSeqLen,
                              ropeStyle: ropeStyle).keepingVocabRows(vocabRows)
    let normOffset = (j[normsAsRunKey] as? Bool ?? false) ? 0 : m.familySpec.hfNormOffset
    let files = try hfFolderFiles(dir)
    // every tensor is found and its shape checked before the model's memory is allocated: config.json may claim any size
    let layout = ParameterLayout(config: m)
    let stored = try hfStoredTensors(files, layout: layout, dir: dir, slicingVocab: vocabRows != nil)
    let packs = Dictionary(zip(layout.entries, stored).map { ($0.name, !needsGrad && $0.keptPacked(float32: $1.1.dtype == .f32)) }, uniquingKeysWith: { a, _ in a })
    let model = Transformer(config: m, needsGrad: needsGrad) { !needsGrad && (!uses($0) || packs[$0]!) }
    for (e, (f, t)) in zip(model.layout.entries, stored) where needsGrad || uses(e.name) {
        if packs[e.name]! {
            let bytes = try f.map(t)
            model.setPacked(QuantizedMatrix(type: t.dtype, oc: e.shape[0], c: e.shape[1], data: bytes.base, owner: bytes), offset: e.offset)
        } else {
            try f.read(t, into: model.params.base + e.offset, count: e.count)
            if normOffset != 0, e.name.hasSuffix("norm.weight") {
                for i in 0..<e.count { model.params.base[e.offset + i] += normOffset }
            }
        }
    }
    return (model, files)
}

/// Writes `model` as a HF folder (config.json + model.safetensors, F32), creating `dir`. Training checkpoints store the
/// weights as the model runs them (their run config names the RoPE style); with `hfLayout`, the Q and K rows of a model
/// that runs adjacent-pair RoPE (cut from a GGUF teacher) are reordered to rotate-half, so Hugging Face `transformers`
/// and distill (which reads a plain folder as rotate-half) compute the same model.
public func saveHFModel(_ model: Transformer, dir: String, metadata: [String: String] = [:], hfLayout: Bool = false) throws {
    precondition(model.packed.isEmpty, "saveHFModel: packed weights cannot be saved as F32")
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let m = model.config, fam = model.family
    var config: [String: Any] = [
        "architectures": [fam.hfArchitecture], "model_type": fam.hfModelType, "hidden_size": m.dim, "intermediate_size": m.ffnDim,
        "head_dim": m.headSize,
        "num_attention_heads": m.heads, "num_key_value_heads": m.kvHeads, "num_hidden_layers": m.layers,
        "vocab_size": m.vocabSize, "rms_norm_eps": Double(m.rmsEps), "rope_theta": m.ropeTheta,
        "max_position_embeddings": m.maxSeqLen, "tie_word_embeddings": m.tiedEmbeddings,
        "torch_dtype": "float32",
    ]
    config.merge(fam.hfExtras(m)) { _, new in new }
    if let f = m.ropeFreqFactors { config[ropeFactorsKey] = f }
    // Gemma: Hugging Face stores w for a norm that computes with 1 + w; a training checkpoint keeps what runs
    let normOffset = hfLayout ? fam.hfNormOffset : 0
    if fam.hfNormOffset != 0, !hfLayout { config[normsAsRunKey] = true }
    var reordered: [Slab] = []
    let entries = model.layout.entries.map { e -> SafetensorsEntry in
        if normOffset != 0, e.name.hasSuffix("norm.weight") {
            let w = Slab(count: e.count)
            for i in 0..<e.count { w.base[i] = model.params.base[e.offset + i] - normOffset }
            reordered.append(w)
            return SafetensorsEntry(name: e.name, shape: e.shape, data: UnsafePointer(w.base))
        }
        let isQK = e.name.hasSuffix("q_proj.weight") || e.name.hasSuffix("k_proj.weight")
        guard hfLayout, m.ropeStyle == .adjacent, isQK else { return SafetensorsEntry(name: e.name, shape: e.shape, data: model.params.base + e.offset) }
        let rows = Slab(count: e.count)
        permuteRowsToHalf(model.params.base + e.offset, heads: e.shape[0] / m.headSize, hs: m.headSize, c: e.shape[1], out: rows.base)
        reordered.append(rows)
        return SafetensorsEntry(name: e.name, shape: e.shape, data: UnsafePointer(rows.base))
    }
    try writeSafetensors(path: (dir as NSString).appendingPathComponent(HFFolder.weights), tensors: entries,
                         metadata: metadata.merging(["format": "pt"]) { a, _ in a })
    withExtendedLifetime(reordered) {}
    let json = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
    try atomicWrite(path: (dir as NSString).appendingPathComponent(HFFolder.config)) { try $0.write(contentsOf: json) }
}

/// A model for inference from a GGUF file or a HF folder, with its tokenizer when the source carries one.
public struct LoadedModel {
    public let model: Transformer
    public let tokenizer: BPETokenizer?
    public var kind: String
    let keepAlive: [AnyObject]

    /// A tokenizer with more tokens than the model has rows would hand the model ids past its embedding (unless the
    /// caller keeps only the first `vocabRows` on purpose: a padded teacher distilled over the shared ids).
    init(model: Transformer, tokenizer: BPETokenizer?, kind: String, keepAlive: [AnyObject], path: String, vocabRows: Int?) throws {
        if vocabRows == nil, let tokenizer, tokenizer.tokens.count > model.config.vocabSize {
            throw KDError.invalidInput(what: "\(path)", expected: "a tokenizer of at most the model's \(model.config.vocabSize) vocabulary rows",
                                       found: "\(tokenizer.tokens.count) tokens")
        }
        self.model = model; self.tokenizer = tokenizer; self.kind = kind; self.keepAlive = keepAlive
    }
}

/// The files of a Hugging Face model folder that distill reads and writes.
public enum HFFolder {
    public static let weights = "model.safetensors", config = "config.json", tokenizer = "tokenizer.json"
}

/// Opens `path` as a GGUF file or a HF folder for inference, weights as stored (a training checkpoint's QAT is
/// applied by KDCheckpoint's `openModel`).
/// `uses`: the tensors (layout names) to load, for a rank that runs part of the model (``loadGGUFModel``).
public func openModelFile(path: String, maxSeqLen: Int? = nil, ropeStyle: RopeStyle? = nil, vocabRows: Int? = nil,
                          uses: @escaping (String) -> Bool = { _ in true }) throws -> LoadedModel {
    if try isHFFolder(path) {
        let (model, files) = try loadHFModel(dir: path, needsGrad: false, maxSeqLen: maxSeqLen, ropeStyle: ropeStyle, vocabRows: vocabRows, uses: uses)
        let tj = (path as NSString).appendingPathComponent(HFFolder.tokenizer)
        var tok: BPETokenizer?
        if FileManager.default.fileExists(atPath: tj) {
            do { tok = try BPETokenizer(hfTokenizerJSON: tj) } catch let e as TokenizerError {
                // the weights are still usable (as a teacher over shards prepared with the GGUF's tokenizer)
                guard case .unsupportedModel = e else { throw e }
                KDLog.info("warning: \(e); \(path) loads without a tokenizer")
            }
        }
        return try LoadedModel(model: model, tokenizer: tok, kind: "safetensors", keepAlive: files, path: path, vocabRows: vocabRows)
    }
    let (model, file) = try loadGGUFModel(path: path, maxSeqLen: maxSeqLen, vocabRows: vocabRows, uses: uses)
    // a GGUF without tokenizer metadata (a byte-level student exported by distill) reads text as bytes
    let tok = file.metadata["tokenizer.ggml.model"] == nil ? nil : try BPETokenizer(gguf: file)
    return try LoadedModel(model: model, tokenizer: tok, kind: "gguf", keepAlive: [file], path: path, vocabRows: vocabRows)
}

extension BPETokenizer {
    /// A byte-level BPE `tokenizer.json` (Hugging Face `tokenizers`): vocabulary, merges, added special tokens, and the
    /// pre-tokenizer recognized among the rules we implement.
    public convenience init(hfTokenizerJSON path: String) throws {
        guard let data = FileManager.default.contents(atPath: path),
              let j = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let model = j["model"] as? [String: Any] else { throw TokenizerError.missing("\(path): model section") }
        guard (model["type"] as? String) == "BPE", let vocab = model["vocab"] as? [String: Int] else {
            throw TokenizerError.unsupportedModel("\(model["type"] ?? "?") in \(path)")
        }
        // SentencePiece-style BPE ("▁" for spaces, <0xXX> byte fallback: Gemma, Llama 2) is not byte-level BPE
        if (model["byte_fallback"] as? Bool) == true {
            throw TokenizerError.unsupportedModel("SentencePiece-style BPE with byte fallback in \(path) (read the tokenizer from the model's GGUF instead)")
        }
        // ids index the token table: a real vocabulary numbers its entries densely from 0, so an id past twice the
        // entries (or past 2²⁴) is a broken file, refused before anything that size is allocated
        let added = (j["added_tokens"] as? [[String: Any]]) ?? []
        let limit = min(1 << 24, 2 * (vocab.count + added.count) + 1024)
        let ids = Array(vocab.values) + added.compactMap { $0["id"] as? Int }
        if let bad = ids.first(where: { !(0..<limit).contains($0) }) {
            throw TokenizerError.badTokenID(key: "every id of \(path)", found: "\(bad)", vocabulary: limit)
        }
        var tokens = [String](repeating: "", count: (vocab.values.max() ?? -1) + 1)
        for (t, i) in vocab { tokens[i] = t }
        var special: [Int32] = []
        for a in added {
            guard let id = a["id"] as? Int, let content = a["content"] as? String else { continue }
            if id >= tokens.count { tokens += [String](repeating: "", count: id - tokens.count + 1) }
            tokens[id] = content
            special.append(Int32(id))
        }
        let merges: [String] = ((model["merges"] as? [Any]) ?? []).compactMap {
            if let s = $0 as? String { return s }
            if let p = $0 as? [String], p.count == 2 { return p[0] + " " + p[1] }
            return nil
        }
        // (serializing anything but an array or an object is a Foundation trap, not an error)
        let preObject = j["pre_tokenizer"].flatMap { JSONSerialization.isValidJSONObject($0) ? $0 : nil } ?? [String: Any]()
        let preJSON = String(decoding: (try? JSONSerialization.data(withJSONObject: preObject)) ?? Data(), as: UTF8.self)
        // the four byte-level rules this tokenizer implements, told apart by what their pre-tokenizer holds; anything
        // else (no ByteLevel step: a Metaspace or Whitespace split) is refused rather than guessed
        guard preJSON.contains("\"ByteLevel\"") else { throw TokenizerError.unsupportedPreTokenizer(preJSON.count > 200 ? String(preJSON.prefix(200)) + "…" : preJSON) }
        let pre: PreTokenizer = preJSON.contains("\"individual_digits\":true") ? .smollm
            : preJSON.contains("{1,3}") ? .llamaBPE : preJSON.contains("Split") ? .qwen2 : .gpt2
        let eos = special.first { ["<|endoftext|>", "</s>", "<|im_end|>", "<|end_of_text|>"].contains(tokens[Int($0)]) }
        try self.init(tokens: tokens, merges: merges, special: special, pre: pre, bos: nil, eos: eos, addBOS: false)
    }
}

/// What loading a model file as a frozen teacher costs, read from its headers alone (no tensor data is touched):
/// the shape, and per tensor of the parameter layout its elements, its stored bytes and whether the load keeps it
/// packed in the mapping (a quantized, F16 or BF16 matrix) or copies it to Floats.
public struct ModelFootprint: Sendable {
    public struct Tensor: Sendable {
        /// The layout's name (model.layers.N.… for a block's tensors).
        public let name: String
        public let count: Int, stored: Int
        public let packed: Bool
        /// The block the tensor belongs to, nil for the embedding, the final norm and the head.
        public var block: Int? { ParameterLayout.block(of: name) }
    }
    public let config: ModelConfig
    public let tensors: [Tensor]
    /// Bytes of the file's metadata (a GGUF's header with its tokenizer; a folder's tokenizer.json and safetensors
    /// headers): parsed into tokenizer tables and kept while the model lives.
    public let metadataBytes: Int
}

/// The footprint of a GGUF file or a Hugging Face folder (as ``openModelFile`` would load it for inference).
public func modelFootprint(path: String, maxSeqLen: Int? = nil) throws -> ModelFootprint {
    if try isHFFolder(path) {
        let m = try hfModelConfig(dir: path, maxSeqLen: maxSeqLen), files = try hfFolderFiles(path), layout = ParameterLayout(config: m)
        let tokenizer = (try? FileManager.default.attributesOfItem(atPath: (path as NSString).appendingPathComponent(HFFolder.tokenizer))[.size] as? Int) ?? 0
        let stored = try hfStoredTensors(files, layout: layout, dir: path, slicingVocab: false)
        return ModelFootprint(config: m, tensors: zip(layout.entries, stored).map { e, ft in
            .init(name: e.name, count: e.count, stored: ft.1.end - ft.1.begin, packed: e.keptPacked(float32: ft.1.dtype == .f32))
        }, metadataBytes: tokenizer + files.reduce(0) { $0 + $1.dataStart })
    }
    let f = try GGUFFile(path: path, mapAll: false)  // the header alone
    let m = try ggufModelConfig(f, maxSeqLen: maxSeqLen), layout = ParameterLayout(config: m)
    let stored = try ggufStoredTensors(f, layout: layout, family: m.familySpec, slicingVocab: false)
    return ModelFootprint(config: m, tensors: zip(layout.entries, stored).map { e, t in
        .init(name: e.name, count: e.count, stored: t.byteCount, packed: e.keptPacked(float32: t.type == .f32))
    }, metadataBytes: f.dataOffset)
}

/// Whether `path` is a Hugging Face folder (else a GGUF file, checked by its magic); one line when it is neither.
func isHFFolder(_ path: String) throws -> Bool {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw KDError.fileNotFound(path: path) }
    if isDir.boolValue { return true }
    guard FileHandle(forReadingAtPath: path)?.readData(ofLength: 4) == Data("GGUF".utf8) else { throw HFError.notAModel(path) }
    return false
}

/// A folder's safetensors files, by name: their headers (tensors are mapped one at a time as they load).
func hfFolderFiles(_ dir: String) throws -> [SafetensorsFile] {
    try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".safetensors") }.sorted()
        .map { try SafetensorsFile(path: (dir as NSString).appendingPathComponent($0), mapAll: false) }
}

/// Every tensor of `layout` found in a folder's files and its shape checked (before anything is allocated: config.json
/// may claim any size).
func hfStoredTensors(_ files: [SafetensorsFile], layout: ParameterLayout, dir: String,
                     slicingVocab: Bool) throws -> [(SafetensorsFile, SafetensorsTensor)] {
    try layout.entries.map { e in
        guard let (f, t) = files.lazy.compactMap({ f in f.tensor(e.name).map { (f, $0) } }).first else {
            throw HFError.missingTensor(dir: dir, tensor: e.name)
        }
        guard layout.accepts(e, stored: t.shape, slicingVocab: slicingVocab) else {
            throw HFError.wrongShape(tensor: e.name, expected: e.shape, found: t.shape)
        }
        return (f, t)
    }
}

extension ParameterLayout.Entry {
    /// Whether an inference load keeps this tensor packed as stored (a quantized, F16 or BF16 matrix), not as Floats.
    func keptPacked(float32: Bool) -> Bool { isMatrix && !float32 }
}
