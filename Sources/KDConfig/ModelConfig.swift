// The `model` section of a run config (the student's shape). Keys are snake_case, every field has a default,
// unknown keys and out-of-range values fail while decoding.
import KDCore

/// `model.rope_style`: how RoPE pairs the channels of a head (the enum lives in KDCore, shared with the kernels).
extension RopeStyle: ConfigVocabulary {}

/// `model.family`: which decoder architecture the blocks follow (each family's pieces: `ModelFamily` in KDModel).
public enum ModelFamilyName: String, ConfigVocabulary {
    /// Llama 1–3, SmolLM, Mistral-style: RMSNorm → attention → RMSNorm → SwiGLU.
    case llama
    /// Gemma 3: √dim-scaled embedding, q/k RMSNorm, a norm after attention and after the MLP, GeGLU, sliding-window layers.
    case gemma3
    /// Qwen2 / Qwen2.5: Llama with biases on the q, k, v projections.
    case qwen2
    /// Qwen3: Llama with q/k RMSNorm per head.
    case qwen3
}

/// Shape of a decoder-only transformer of one of the supported families.
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
    /// Architecture family. Default llama.
    public var family = ModelFamilyName.llama
    /// Keys a query sees on sliding-window layers (itself and the window − 1 before it); 0 = every layer attends to the
    /// whole prefix. Default 0 (Gemma 3: 512).
    public var slidingWindow = 0
    /// With a sliding window: every `sliding_pattern`-th block (the 6th, 12th, … for 6) attends globally, the others
    /// through the window; 0 = every block slides. Default 0 (Gemma 3: 6).
    public var slidingPattern = 0
    /// RoPE base of the sliding-window layers; 0 = rope_theta. Default 0 (Gemma 3: 10000, its global layers 1e6).
    public var ropeThetaLocal: Double = 0
    /// With a sliding window: the blocks that attend globally, listed (overrides sliding_pattern). A student cut from a
    /// Gemma teacher gets the kept blocks' own kinds here. Default: none listed.
    public var globalLayers: [Int]? = nil
    /// Per-frequency divisors of RoPE (head size / 2 values): Llama 3.1+ scaling, from GGUF's `rope_freqs.weight` or a
    /// config.json `rope_scaling` of type llama3. Default: none.
    public var ropeFreqFactors: [Double]? = nil

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case layers, dim, heads, headDim = "head_dim", kvHeads = "kv_heads", ffnDim = "ffn_dim", vocabSize = "vocab_size"
        case maxSeqLen = "max_seq_len", ropeTheta = "rope_theta", ropeStyle = "rope_style", rmsEps = "rms_eps"
        case tiedEmbeddings = "tied_embeddings", initStd = "init_std", family, slidingWindow = "sliding_window"
        case slidingPattern = "sliding_pattern", ropeThetaLocal = "rope_theta_local", globalLayers = "global_layers"
        case ropeFreqFactors = "rope_freq_factors"
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
        family = try c.value(.family, or: family)
        slidingWindow = try c.value(.slidingWindow, or: slidingWindow)
        slidingPattern = try c.value(.slidingPattern, or: slidingPattern)
        ropeThetaLocal = try c.value(.ropeThetaLocal, or: ropeThetaLocal)
        globalLayers = try c.decodeIfPresent([Int].self, forKey: .globalLayers)
        ropeFreqFactors = try c.decodeIfPresent([Double].self, forKey: .ropeFreqFactors)
        if let bad = firstOutOfRange { try c.require(false, bad.key, expected: bad.expected, found: bad.found) }
    }

    /// Head size: head_dim, or dim / heads.
    public var headSize: Int { headDim > 0 ? headDim : dim / heads }
    /// Width of the query projection and of the attention output (heads · head size; dim unless heads were pruned).
    public var qDim: Int { heads * headSize }
    /// Width of the key and value projections.
    public var kvDim: Int { kvHeads * headSize }

    /// Whether block l attends through the sliding window (Gemma 3: five local blocks, then one global).
    public func isSliding(_ l: Int) -> Bool {
        guard slidingWindow > 0 else { return false }
        if let g = globalLayers { return !g.contains(l) }
        return slidingPattern == 0 || (l + 1) % slidingPattern != 0
    }
    /// RoPE base of block l.
    public func ropeBase(_ l: Int) -> Double { isSliding(l) && ropeThetaLocal > 0 ? ropeThetaLocal : ropeTheta }

    /// The first field outside its range, for the YAML decoder and for ``validate(path:)`` (a model file supplies these
    /// too). The sizes' upper bounds keep every product of them (the parameter layout) far from overflowing.
    var firstOutOfRange: (key: CodingKeys, expected: String, found: String)? {
        let sizes: [(CodingKeys, Int, ClosedRange<Int>, String)] = [
            (.layers, layers, 1...(1 << 12), ""), (.dim, dim, 2...(1 << 16), ""), (.heads, heads, 1...(1 << 10), ""),
            (.headDim, headDim, 0...(1 << 12), " (0 = dim / heads)"), (.kvHeads, kvHeads, 1...(1 << 10), ""),
            (.ffnDim, ffnDim, 1...(1 << 20), ""), (.vocabSize, vocabSize, 2...(1 << 24), ""), (.maxSeqLen, maxSeqLen, 1...(1 << 20), ""),
            (.slidingWindow, slidingWindow, 0...(1 << 24), " (0 = no window)"), (.slidingPattern, slidingPattern, 0...(1 << 12), ""),
        ]
        for (key, value, range, note) in sizes where !range.contains(value) {
            return (key, "an integer in \(range.lowerBound)...\(range.upperBound)\(note)", "\(value)")
        }
        let numbers: [(CodingKeys, Bool, String, String)] = [
            (.ropeTheta, ropeTheta > 0 && ropeTheta.isFinite, "a finite number > 0", "\(ropeTheta)"),
            (.rmsEps, rmsEps > 0 && rmsEps < 1, "a number in (0, 1)", "\(rmsEps)"),
            (.initStd, initStd > 0 && initStd.isFinite, "a finite number > 0", "\(initStd)"),
            (.ropeThetaLocal, ropeThetaLocal >= 0 && ropeThetaLocal.isFinite, "a finite number >= 0 (0 = rope_theta)", "\(ropeThetaLocal)"),
        ]
        return numbers.first { !$0.1 }.map { ($0.0, $0.2, $0.3) }
    }

    /// Cross-field rules; throws `ConfigError.invalid` naming the fields.
    public func validate(path: String = "model") throws {
        if let bad = firstOutOfRange {
            throw ConfigError.invalid("\(path).\(bad.key.rawValue)", expected: bad.expected, found: bad.found)
        }
        if let g = globalLayers, g.contains(where: { !(0..<layers).contains($0) }) {
            throw ConfigError.invalid("\(path).global_layers", expected: "block indices in 0..<\(layers)", found: "\(g)")
        }
        guard headDim > 0 || dim % heads == 0 else {
            throw ConfigError.invalid("\(path).dim", expected: "a multiple of heads (\(heads)), or a head_dim", found: "\(dim)")
        }
        guard heads % kvHeads == 0 else {
            throw ConfigError.invalid("\(path).kv_heads", expected: "a divisor of heads (\(heads))", found: "\(kvHeads)")
        }
        if let f = ropeFreqFactors, f.count != headSize / 2 || f.contains(where: { !($0 > 0) }) {
            throw ConfigError.invalid("\(path).rope_freq_factors", expected: "\(headSize / 2) positive numbers (head size / 2)", found: "\(f.count) values")
        }
        guard family == .llama || ropeStyle == .half else {
            throw ConfigError.invalid("\(path).rope_style", expected: "half for family \(family.rawValue) (only llama files store adjacent pairs)", found: ropeStyle.rawValue)
        }
        guard slidingWindow == 0 || family == .gemma3 else {
            throw ConfigError.invalid("\(path).sliding_window", expected: "0 for family \(family.rawValue) (sliding-window blocks are Gemma 3's)", found: "\(slidingWindow)")
        }
        guard headSize % 2 == 0 else {
            throw ConfigError.invalid("\(path).\(headDim > 0 ? "head_dim" : "dim")", expected: "an even head size for RoPE", found: "\(headSize)")
        }
    }
}
