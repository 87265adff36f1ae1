// llama.cpp's k-quant presets as per-tensor types: what `llama_model_quantize` picks for each tensor of a dense
// llama-style model in Q2_K … Q6_K, Q3_K_S/M/L, Q4_K_S/M, Q5_K_S/M (llama-quant.cpp's llama_tensor_get_type, as
// llama-cpp-python 0.3.36 builds it; no importance matrix, no mixture of experts). The type returned is the one
// wanted; rows its blocks do not divide then take GGMLType.forRows's fallback. Checked tensor by tensor against the
// files llama.cpp writes for SmolLM2-135M (Tests/KDQuantTests/Fixtures/llamacpp-preset-types.json).
import KDConfig

/// What a matrix is in a llama-style block, as the presets tell tensors apart.
public enum TensorRole: Sendable, Equatable {
    case embedding, output, attnQ, attnK, attnV, attnOutput, ffnGate, ffnUp, ffnDown

    /// The role of a Hugging Face tensor name (model.layers.N.self_attn.q_proj.weight, …); nil for vectors and unknown
    /// names.
    public init?(huggingFaceName name: String) {
        switch name {
        case "model.embed_tokens.weight": self = .embedding
        case "lm_head.weight": self = .output
        default:
            let table: [(String, TensorRole)] = [("self_attn.q_proj.weight", .attnQ), ("self_attn.k_proj.weight", .attnK),
                                                 ("self_attn.v_proj.weight", .attnV), ("self_attn.o_proj.weight", .attnOutput),
                                                 ("mlp.gate_proj.weight", .ffnGate), ("mlp.up_proj.weight", .ffnUp),
                                                 ("mlp.down_proj.weight", .ffnDown)]
            guard let r = table.first(where: { name.hasSuffix($0.0) }) else { return nil }
            self = r.1
        }
    }
}

extension TensorRole {
    /// The block matrix of this role as `qat.tensor_types` names it (nil for the embedding and the head).
    public var blockMatrix: BlockMatrix? {
        switch self {
        case .embedding, .output: return nil
        case .attnQ: return .attnQ
        case .attnK: return .attnK
        case .attnV: return .attnV
        case .attnOutput: return .attnOutput
        case .ffnGate: return .ffnGate
        case .ffnUp: return .ffnUp
        case .ffnDown: return .ffnDown
        }
    }
}

extension QuantPreset {
    /// The type llama.cpp's quantizer wants for a tensor of `role` in block `layer` of `layers` (the embedding: the
    /// output's type when the head is tied to it). `gqa` = query heads per key/value head.
    public func type(for role: TensorRole, layer: Int, layers: Int, gqa: Int, tiedOutput: Bool) -> GGMLType {
        let base = FakeQuantScheme(self.base)!.ggmlType!
        // llama.cpp's use_more_bits: the first and last eighth of the layers and every third one between
        func moreBits(_ i: Int, _ n: Int) -> Bool { i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2 }
        switch role {
        case .output: return .q6_K
        case .embedding: return tiedOutput ? .q6_K : base
        case .attnV:
            switch self {
            case .q2_K: return gqa >= 4 ? .q4_K : .q3_K
            case .q3_K_M: return layer < 2 ? .q5_K : .q4_K
            case .q3_K_L: return .q5_K
            case .q4_K_M, .q5_K_M: return moreBits(layer, layers) ? .q6_K : base
            case .q4_K_S: return layer < 4 ? .q5_K : base
            default: return base
            }
        case .ffnDown:
            switch self {
            case .q2_K: return .q3_K
            case .q3_K_M: return layer < layers / 16 ? .q5_K : .q4_K
            case .q3_K_L: return .q5_K
            case .q4_K_M, .q5_K_M: return moreBits(layer, layers) ? .q6_K : base
            case .q4_K_S: return layer < layers / 8 ? .q5_K : base
            default: return base
            }
        case .attnOutput:
            switch self {
            case .q2_K: return .q3_K
            case .q3_K_M: return .q4_K
            case .q3_K_L: return .q5_K
            default: return base
            }
        case .attnQ, .attnK, .ffnGate, .ffnUp: return base
        }
    }
}
