// A llama-architecture GGUF file as a Transformer: hyper-parameters from the `llama.*` metadata, Float tensors
// copied into the parameter slab, quantized matrices left packed in the memory-mapped file.
// GGUF stores Q and K rows permuted for adjacent-pair RoPE (llama.cpp's convert_hf_to_gguf), so the model runs with
// rope_style = adjacent; a missing `output.weight` means the LM head is tied to the embedding.
import Foundation
import KDConfig
import KDCore
import KDModel
import KDQuant

/// Architectures `distill` can run from GGUF.
public let supportedGGUFArchitectures = ["llama"]

/// GGUF tensor name for a Hugging Face-style layout name.
func ggufName(_ hf: String) -> String {
    if hf == "model.embed_tokens.weight" { return "token_embd.weight" }
    if hf == "model.norm.weight" { return "output_norm.weight" }
    if hf == "lm_head.weight" { return "output.weight" }
    let parts = hf.split(separator: ".")  // model.layers.N.<module>.<name>.weight
    let table = [
        "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    ]
    let module = parts[3..<(parts.count - 1)].joined(separator: ".")
    return "blk.\(parts[2]).\(table[module] ?? module).weight"
}

/// The model shape a llama GGUF file describes; `maxSeqLen` caps the context (default: the file's, at most 4096).
public func ggufModelConfig(_ f: GGUFFile, maxSeqLen: Int? = nil) throws -> ModelConfig {
    let arch = try f.required("general.architecture").string ?? "?"
    guard supportedGGUFArchitectures.contains(arch) else {
        throw GGUFError.unsupportedArchitecture(path: f.path, found: arch, supported: supportedGGUFArchitectures)
    }
    func int(_ k: String) throws -> Int {
        guard let v = try f.required("\(arch).\(k)").int else {
            throw GGUFError.badTensorShape(path: f.path, tensor: "(metadata)", reason: "\(arch).\(k) is not an integer")
        }
        return v
    }
    var m = ModelConfig()
    m.layers = try int("block_count")
    m.dim = try int("embedding_length")
    m.heads = try int("attention.head_count")
    m.kvHeads = f.metadata["\(arch).attention.head_count_kv"]?.int ?? m.heads
    if let kl = f.metadata["\(arch).attention.key_length"]?.int, kl * m.heads != m.dim { m.headDim = kl }
    m.ffnDim = try int("feed_forward_length")
    guard let embd = f.tensor("token_embd.weight") else { throw GGUFError.missingTensor(path: f.path, tensor: "token_embd.weight") }
    m.vocabSize = f.metadata["\(arch).vocab_size"]?.int ?? embd.shape[0]
    m.ropeTheta = f.metadata["\(arch).rope.freq_base"]?.double ?? 10000
    m.rmsEps = Float(f.metadata["\(arch).attention.layer_norm_rms_epsilon"]?.double ?? 1e-5)
    m.maxSeqLen = maxSeqLen ?? min(f.metadata["\(arch).context_length"]?.int ?? 2048, 4096)
    m.ropeStyle = .adjacent
    m.tiedEmbeddings = f.tensor("output.weight") == nil
    try m.validate(path: f.path)
    if let rd = f.metadata["\(arch).rope.dimension_count"]?.int, rd != m.headSize {
        throw GGUFError.badTensorShape(path: f.path, tensor: "(metadata)", reason: "partial RoPE (\(rd) of \(m.headSize) dims) is not supported")
    }
    return m
}

/// Loads a llama GGUF file for inference: quantized matrices stay packed in the mapping (which the returned model
/// keeps alive), Float tensors are copied.
public func loadGGUFModel(path: String, maxSeqLen: Int? = nil) throws -> (model: Transformer, file: GGUFFile) {
    let f = try GGUFFile(path: path)
    let m = try ggufModelConfig(f, maxSeqLen: maxSeqLen)
    let model = Transformer(config: m, needsGrad: false)
    for e in model.layout.entries {
        let name = ggufName(e.name)
        guard let t = f.tensor(name) else { throw GGUFError.missingTensor(path: path, tensor: name) }
        guard t.shape == e.shape else { throw GGUFError.wrongShape(path: path, tensor: name, expected: e.shape, found: t.shape) }
        if t.type == .f32 || !e.isMatrix {
            dequantize(t.type, src: f.data(t), out: model.params.base + e.offset, count: e.count)
        } else {
            model.setPacked(QuantizedMatrix(type: t.type, oc: e.shape[0], c: e.shape[1], data: f.data(t), owner: f), offset: e.offset)
        }
    }
    return (model, f)
}
