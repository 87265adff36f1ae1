// What distinguishes one decoder family from another, in one value per family (Llama.swift, Gemma3.swift, Qwen2.swift,
// Qwen3.swift) and one registry line (`ModelFamily.all`): the optional pieces of a block, the tensor names in Hugging
// Face and GGUF files, and the hyper-parameters each format stores. The forward, backward, decoding, cutting, QAT and
// export read only these flags and tables, never a family's name.
import KDConfig

/// The MLP's gate non-linearity.
public enum MLPActivation: Sendable {
    /// SwiGLU: silu(gate) · up.
    case silu
    /// GeGLU with the tanh approximation of GELU (Gemma).
    case geluTanh
}

/// Looks hyper-parameters up by key: a GGUF file's `ARCH.key` metadata, or a config.json's top-level keys.
public struct FamilyMetadata {
    public let number: (String) -> Double?
    public let string: (String) -> String?
    /// GGUF metadata (true) or config.json (false).
    public let gguf: Bool
    public init(gguf: Bool, number: @escaping (String) -> Double?, string: @escaping (String) -> String? = { _ in nil }) {
        self.gguf = gguf
        self.number = number
        self.string = string
    }
    public func int(_ key: String) -> Int? { number(key).map { Int($0) } }
    /// The RoPE scaling type the metadata names, if any (`rope.scaling.type`; `rope_scaling.rope_type` or `.type`).
    public var ropeScaling: String? {
        gguf ? string("rope.scaling.type") : string("rope_scaling.rope_type") ?? string("rope_scaling.type")
    }
}

/// One family's description. See the file comment.
public struct ModelFamily: Sendable {
    public let name: ModelFamilyName
    /// `general.architecture` in GGUF, and the prefix of the family's metadata keys.
    public let ggufArchitecture: String
    /// config.json `architectures[0]` and `model_type`.
    public let hfArchitecture: String, hfModelType: String
    /// RMSNorm over each query and key head (weights [head size]) before RoPE.
    public let qkNorm: Bool
    /// Biases on the q, k and v projections.
    public let qkvBias: Bool
    /// An RMSNorm on the attention output and on the MLP output before each residual add.
    public let postNorms: Bool
    /// The embedding is multiplied by √dim (the tied LM head reads the unscaled table).
    public let scaledEmbedding: Bool
    public let activation: MLPActivation
    /// Hugging Face stores the norm weights as w and computes with 1 + w (Gemma); GGUF and distill hold 1 + w.
    public let hfNormOffset: Float
    /// Whether GGUF stores Q and K rows permuted for adjacent-pair RoPE (llama.cpp's converter does so for llama only).
    public let ggufPermutesQK: Bool
    /// Hugging Face name of the norm before the MLP.
    public let ffnNormName: String
    /// Hugging Face module inside a block → GGUF tensor name inside `blk.N.`.
    public let blockTensorNames: [String: String]
    /// Reads the family's own hyper-parameters (beyond the shape every family shares) into `m`; `gguf` tells which
    /// format's keys `meta` looks up. Throws `FamilyError` for a setting distill does not run. Called by ``configure``.
    public let readExtras: @Sendable (_ m: inout ModelConfig, _ meta: FamilyMetadata, _ gguf: Bool) throws -> Void
    /// The family's own GGUF metadata (keys after `ARCH.`) for an exported model: integers.
    public let ggufExtras: @Sendable (ModelConfig) -> [(String, Int)]
    /// The family's own config.json keys for an exported model.
    public let hfExtras: @Sendable (ModelConfig) -> [String: Any]

    /// The family's hyper-parameters from `meta` into `m` (after the shared shape); then, for every family, RoPE
    /// scaling that left no frequency divisors (all but Llama 3's) is refused rather than run wrong.
    public func configure(_ m: inout ModelConfig, _ meta: FamilyMetadata) throws {
        try readExtras(&m, meta, meta.gguf)
        if let s = meta.ropeScaling, s != "none", s != "default", m.ropeFreqFactors == nil {
            throw FamilyError("RoPE scaling '\(s)' is not supported (supported: llama3)")
        }
    }

    /// Every family distill runs: the registry.
    public static let all: [ModelFamily] = [.llama, .gemma3, .qwen2, .qwen3]

    public static func named(_ n: ModelFamilyName) -> ModelFamily { all.first { $0.name == n }! }
    public static func gguf(_ architecture: String) -> ModelFamily? { all.first { $0.ggufArchitecture == architecture } }
    public static func hf(_ architecture: String) -> ModelFamily? {
        all.first { $0.hfArchitecture == architecture || $0.hfModelType == architecture }
    }
    public static var ggufArchitectures: [String] { all.map(\.ggufArchitecture) }
    public static var hfArchitectures: [String] { all.map(\.hfArchitecture) }

    /// The GGUF tensor name of a Hugging Face-style layout name.
    public func ggufName(_ hf: String) -> String {
        if hf == "model.embed_tokens.weight" { return "token_embd.weight" }
        if hf == "model.norm.weight" { return "output_norm.weight" }
        if hf == "lm_head.weight" { return "output.weight" }
        let parts = hf.split(separator: ".")  // model.layers.N.<module>.<weight|bias>
        let module = parts[3..<(parts.count - 1)].joined(separator: ".")
        return "blk.\(parts[2]).\(blockTensorNames[module] ?? module).\(parts.last!)"
    }

    /// Llama's table; families extend it.
    static let llamaNames = [
        "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    ]
    static let qkNormNames = ["self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"]
}

extension ModelConfig {
    /// This shape with only the first `rows` rows of its vocabulary (nil: unchanged): a teacher padded past its
    /// tokenizer, read over the student's ids.
    public func keepingVocabRows(_ rows: Int?) -> ModelConfig {
        guard let rows else { return self }
        precondition(rows <= vocabSize, "keepingVocabRows: \(rows) rows beyond the table's \(vocabSize)")
        var m = self
        m.vocabSize = rows
        return m
    }

    /// This config's family description.
    public var familySpec: ModelFamily { ModelFamily.named(family) }

    /// One line: family, shape, the family's pieces, attention kinds.
    public var modelSummary: String {
        let f = familySpec
        var pieces: [String] = []
        if f.qkvBias { pieces.append("q/k/v biases") }
        if f.qkNorm { pieces.append("q/k head norms") }
        if f.postNorms { pieces.append("post-norms") }
        if f.scaledEmbedding { pieces.append("√dim embedding") }
        pieces.append(f.activation == .silu ? "SwiGLU" : "GeGLU(tanh)")
        var s = "\(family.rawValue): \(layers) layers, dim \(dim), \(heads) heads / \(kvHeads) kv of size \(headSize), ffn \(ffnDim), "
            + "vocab \(vocabSize), rope θ \(ropeTheta) (\(ropeStyle.rawValue)), tied \(tiedEmbeddings); " + pieces.joined(separator: ", ")
        if slidingWindow > 0 {
            let global = (0..<layers).filter { !isSliding($0) }
            s += "; sliding window \(slidingWindow) (rope θ \(ropeThetaLocal)) except global blocks \(global)"
        }
        return s
    }
}

/// A family setting distill does not run, or a key it needs that is missing (the loader adds the file's path).
public struct FamilyError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ message: String) { description = message }
}
