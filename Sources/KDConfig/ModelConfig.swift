// The `model` section of a run config (the student's shape). Keys are snake_case, every field has a default,
// unknown keys and out-of-range values fail while decoding.

/// `model.rope_style`: how RoPE pairs the channels of a head.
public enum RopeStyle: String, ConfigVocabulary {
    /// Hugging Face rotate_half: channel i with i + hs/2.
    case half
    /// GGUF (llama.cpp's original layout): channel 2i with 2i + 1.
    case adjacent
}

/// Shape of a Llama-family transformer.
public struct ModelConfig: Codable, Equatable, Sendable {
    /// Number of transformer blocks. Default 4.
    public var layers = 4
    /// Residual width (hidden size). Default 128.
    public var dim = 128
    /// Query heads; dim must be a multiple unless head_dim is given. Default 4.
    public var heads = 4
    /// Size of each attention head; 0 = dim / heads. A student whose attention heads were pruned keeps its teacher's
    /// head size with fewer heads. Default 0.
    public var headDim = 0
    /// Key/value heads (grouped-query attention); heads must be a multiple. Default: heads.
    public var kvHeads = 4
    /// Hidden width of the SwiGLU MLP. Default 344 (≈ 8/3 · 128, as Llama sizes it).
    public var ffnDim = 344
    /// Vocabulary size. Default 256 (the byte tokenizer).
    public var vocabSize = 256
    /// Longest sequence the RoPE table covers, in tokens. Default 512.
    public var maxSeqLen = 512
    /// RoPE base θ. Default 10000.
    public var ropeTheta: Double = 10000
    /// RoPE pairing: `half` (Hugging Face rotate_half) or `adjacent` (GGUF). Default half.
    public var ropeStyle = RopeStyle.half
    /// RMSNorm epsilon. Default 1e-5.
    public var rmsEps: Float = 1e-5
    /// Share the token embedding with the LM head. Default true.
    public var tiedEmbeddings = true
    /// Standard deviation of the normal initialization; output projections are scaled by 1/√(2·layers). Default 0.02.
    public var initStd: Float = 0.02

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case layers, dim, heads, headDim = "head_dim", kvHeads = "kv_heads", ffnDim = "ffn_dim", vocabSize = "vocab_size"
        case maxSeqLen = "max_seq_len", ropeTheta = "rope_theta", ropeStyle = "rope_style", rmsEps = "rms_eps"
        case tiedEmbeddings = "tied_embeddings", initStd = "init_std"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        layers = try c.value(.layers, or: layers)
        dim = try c.value(.dim, or: dim)
        heads = try c.value(.heads, or: heads)
        headDim = try c.value(.headDim, or: headDim)
        kvHeads = try c.value(.kvHeads, or: heads)
        ffnDim = try c.value(.ffnDim, or: ffnDim)
        vocabSize = try c.value(.vocabSize, or: vocabSize)
        maxSeqLen = try c.value(.maxSeqLen, or: maxSeqLen)
        ropeTheta = try c.value(.ropeTheta, or: ropeTheta)
        ropeStyle = try c.value(.ropeStyle, or: ropeStyle)
        rmsEps = try c.value(.rmsEps, or: rmsEps)
        tiedEmbeddings = try c.value(.tiedEmbeddings, or: tiedEmbeddings)
        initStd = try c.value(.initStd, or: initStd)
        try c.require(layers >= 1, .layers, expected: "an integer >= 1", found: layers)
        try c.require(dim >= 2, .dim, expected: "an integer >= 2", found: dim)
        try c.require(heads >= 1, .heads, expected: "an integer >= 1", found: heads)
        try c.require(headDim >= 0, .headDim, expected: "an integer >= 0 (0 = dim / heads)", found: headDim)
        try c.require(kvHeads >= 1, .kvHeads, expected: "an integer >= 1", found: kvHeads)
        try c.require(ffnDim >= 1, .ffnDim, expected: "an integer >= 1", found: ffnDim)
        try c.require(vocabSize >= 2, .vocabSize, expected: "an integer >= 2", found: vocabSize)
        try c.require(maxSeqLen >= 1, .maxSeqLen, expected: "an integer >= 1", found: maxSeqLen)
        try c.require(ropeTheta > 0, .ropeTheta, expected: "a number > 0", found: ropeTheta)
        try c.require(rmsEps > 0 && rmsEps < 1, .rmsEps, expected: "a number in (0, 1)", found: rmsEps)
        try c.require(initStd > 0, .initStd, expected: "a number > 0", found: initStd)
    }

    /// Head size: head_dim, or dim / heads.
    public var headSize: Int { headDim > 0 ? headDim : dim / heads }
    /// Width of the query projection and of the attention output (heads · head size; dim unless heads were pruned).
    public var qDim: Int { heads * headSize }
    /// Width of the key and value projections.
    public var kvDim: Int { kvHeads * headSize }

    /// Cross-field rules; throws `ConfigError.invalid` naming the fields.
    public func validate(path: String = "model") throws {
        guard headDim > 0 || dim % heads == 0 else {
            throw ConfigError.invalid("\(path).dim", expected: "a multiple of heads (\(heads)), or a head_dim", found: "\(dim)")
        }
        guard heads % kvHeads == 0 else {
            throw ConfigError.invalid("\(path).kv_heads", expected: "a divisor of heads (\(heads))", found: "\(kvHeads)")
        }
        guard headSize % 2 == 0 else {
            throw ConfigError.invalid("\(path).\(headDim > 0 ? "head_dim" : "dim")", expected: "an even head size for RoPE", found: "\(headSize)")
        }
    }
}
