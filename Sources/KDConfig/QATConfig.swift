// The `qat` section of a run config (quantization-aware training). Keys are snake_case, every field has a default,
// unknown keys and out-of-range values fail while decoding.

/// `qat.scheme`: the weight format QAT trains for.
public enum QATScheme: String, ConfigVocabulary {
    case none, q8_0, q4_0, q4_1, q5_0, q5_1
    /// The k-quants (super-blocks of 256); rows they do not divide take llama.cpp's fallback (Q2_K, Q3_K → Q4_0;
    /// Q4_K → Q5_0; Q5_K → Q5_1; Q6_K → Q8_0), in training and in the exported file alike.
    case q2_K = "q2_k", q3_K = "q3_k", q4_K = "q4_k", q5_K = "q5_k", q6_K = "q6_k"
    /// IQ4_NL: Q4_0's bytes (blocks of 32, an F16 scale), 16 levels spaced like the weights instead of evenly.
    case iq4_nl
    /// MXFP4: blocks of 32 E2M1 codes times a power-of-two scale byte, 4.25 bits a weight (a quarter bit under Q4_0).
    case mxfp4
    case int8Channel = "int8_channel", int4Channel = "int4_channel"

    /// The GGUF block formats.
    public var isBlockFormat: Bool {
        switch self {
        case .none, .int8Channel, .int4Channel: return false
        default: return true
        }
    }

    /// The block formats' names, for messages.
    public static var blockFormatNames: String { allCases.filter(\.isBlockFormat).map(\.rawValue).joined(separator: ", ") }

    /// Schemes whose scales can be learned or frozen (one scale per 32 or per row, no minimum, no sub-block scales).
    public var takesGivenScales: Bool { [.q8_0, .q4_0, .int8Channel, .int4Channel].contains(self) }

    /// Schemes whose scale search an importance matrix weighs, as llama-quantize --imatrix does: every block format
    /// but Q8_0 and MXFP4 (which ggml quantizes without one).
    public var isWeighedByImportance: Bool { isBlockFormat && self != .q8_0 && self != .mxfp4 }
}

/// `qat.preset`: one of llama.cpp's k-quant file types, whose per-tensor choice of types the student trains for
/// (blocks in the preset's k-quant, some attn_v / ffn_down / attn_output layers in more bits, the tables in Q6_K).
public enum QuantPreset: String, ConfigVocabulary {
    case q2_K = "q2_k", q3_K_S = "q3_k_s", q3_K_M = "q3_k_m", q3_K_L = "q3_k_l", q4_K_S = "q4_k_s", q4_K_M = "q4_k_m"
    case q5_K_S = "q5_k_s", q5_K_M = "q5_k_m", q6_K = "q6_k"

    /// The k-quant of the preset's ordinary matrices (what `scheme` holds beside it).
    public var base: QATScheme {
        switch self {
        case .q2_K: return .q2_K
        case .q3_K_S, .q3_K_M, .q3_K_L: return .q3_K
        case .q4_K_S, .q4_K_M: return .q4_K
        case .q5_K_S, .q5_K_M: return .q5_K
        case .q6_K: return .q6_K
        }
    }
}

/// A matrix of every block as llama.cpp names it in a GGUF file and in its quantizer's `--tensor-type NAME=TYPE`:
/// the keys of `qat.tensor_types`.
public enum BlockMatrix: String, ConfigVocabulary, CodingKeyRepresentable {
    case attnQ = "attn_q", attnK = "attn_k", attnV = "attn_v", attnOutput = "attn_output"
    case ffnGate = "ffn_gate", ffnUp = "ffn_up", ffnDown = "ffn_down"
}

/// `qat.activations`.
public enum ActivationQuant: String, ConfigVocabulary {
    case none, int8
}

/// `qat.scales`: where the quantization scales come from.
public enum ScaleSource: String, ConfigVocabulary {
    case absmax, learned
}

/// `qat.importance`: what weighs each weight in IQ4_NL's, Q4_0's and Q5_0's scale search.
public enum ImportanceSource: String, ConfigVocabulary {
    /// x², as llama-quantize without an importance matrix.
    case none
    /// The mean square of each input channel of the matrix, measured on the student's own activations over the first
    /// `importance_windows` training windows before step 0 — what llama-imatrix collects, weighed as llama-quantize
    /// --imatrix weighs it; the tied head takes the final norm's outputs (llama-imatrix collects nothing for it).
    case activations
}

/// Quantization-aware training: the student's linear layers see their weights quantized as they will be exported
/// (fake quantization, straight-through gradients into full-precision master weights).
public struct QATConfig: Codable, Equatable, Sendable {
    /// `none`, `q8_0`, `q4_0`, `q4_1`, `q5_0`, `q5_1`, the k-quants `q2_k` … `q6_k`, `iq4_nl`, `mxfp4` (exactly the GGUF formats,
    /// bit for bit as ggml quantizes them) or `int8_channel`, `int4_channel`. Default none.
    public var scheme = QATScheme.none
    /// Also quantize the token embedding and LM head (else they stay full precision). Default false.
    public var embeddings = false
    /// With `embeddings`: the block format of the embedding and LM head when it is not `scheme`'s (as llama.cpp's
    /// presets keep them at higher precision than the blocks, e.g. blocks q4_0 and tables q8_0). Default: `scheme`.
    public var embeddingScheme: QATScheme?
    /// `none` or `int8`: per-token dynamic int8 fake quantization of the activations entering the linear layers
    /// (with a 4-bit scheme: "8da4w"). Default none.
    public var activations = ActivationQuant.none
    /// Full precision before this step. Default 0.
    public var startStep = 0
    /// `absmax`: the scales follow the weights every step, as ggml picks them; `learned`: LSQ — one trained scale per
    /// block of 32 (per row for the per-channel schemes), starting from the absmax ones at start_step (not q4_1).
    /// Default absmax.
    public var scales = ScaleSource.absmax
    /// Learned scales: their learning rate as a multiple of the weights' (AdamW on log|s|, so lr·ratio is roughly the
    /// relative change of a scale per step; at 1 they barely move in a short run). Default 30.
    public var scaleLRRatio: Float = 30
    /// From this step on the scales stop changing (absmax: frozen at their values then; learned: no more updates);
    /// 0 = never. Default 0.
    public var freezeStep = 0
    /// One of llama.cpp's k-quant file types (`q4_k_m`, …): each tensor trains in the type llama.cpp's quantizer picks
    /// for it in that preset (then `scheme` is the preset's k-quant and the tables are quantized; set neither
    /// `embeddings` nor `embedding_scheme`). Default none.
    public var preset: QuantPreset?
    /// Per block matrix, a block format other than `scheme` (e.g. `{ffn_down: q3_k}` beside `scheme: iq4_nl`: the one
    /// matrix whose rows — ffn_dim wide — a k-quant's 256-blocks can divide in a model 576 wide): every block's matrix
    /// of that name trains and exports in it (with llama.cpp's fallback on rows it does not divide). Default none.
    public var tensorTypes: [BlockMatrix: QATScheme]?
    /// `none` or `activations`: weigh the IQ4_NL, Q4_0 and Q5_0 tensors' scale search by an importance matrix of the
    /// student's own activations, in training and in the exported file alike, as llama-quantize --imatrix does (needs
    /// one of them somewhere in the plan, and absmax scales). Default none.
    public var importance = ImportanceSource.none
    /// With `importance: activations`: how many training windows (of train.seq_len tokens, the first ones) it is
    /// measured on. Default (nil) 64: ``measuredWindows``.
    public var importanceWindows: Int?
    /// The windows `importance: activations` measures on.
    public var measuredWindows: Int { importanceWindows ?? 64 }

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case preset, scheme, embeddings, embeddingScheme = "embedding_scheme", activations, startStep = "start_step", scales, scaleLRRatio = "scale_lr_ratio", freezeStep = "freeze_step"
        case tensorTypes = "tensor_types", importance, importanceWindows = "importance_windows"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        scheme = try c.value(.scheme, or: scheme)
        embeddings = try c.value(.embeddings, or: embeddings)
        if c.contains(.preset) {
            let p: QuantPreset = try c.value(.preset, or: .q4_K_M)
            preset = p
            try c.require(!c.contains(.scheme) || scheme == p.base, .scheme, expected: "no scheme beside preset '\(p)' (or its own, \(p.base))", found: "'\(scheme)'")
            try c.require(!c.contains(.embeddings) || embeddings, .embeddings, expected: "no embeddings key beside a preset (its tables are quantized)", found: "false")
            try c.require(!c.contains(.embeddingScheme), .embeddingScheme, expected: "none beside a preset (it picks the tables' type)", found: "a value")
            scheme = p.base
            embeddings = true
        }
        embeddingScheme = c.contains(.embeddingScheme) ? try c.value(.embeddingScheme, or: QATScheme.none) : nil
        activations = try c.value(.activations, or: activations)
        startStep = try c.value(.startStep, or: startStep)
        scales = try c.value(.scales, or: scales)
        freezeStep = try c.value(.freezeStep, or: freezeStep)
        scaleLRRatio = try c.value(.scaleLRRatio, or: scaleLRRatio)
        try c.require(scaleLRRatio > 0 && scaleLRRatio.isFinite, .scaleLRRatio, expected: "a number > 0", found: scaleLRRatio)
        try c.require(scales == .absmax || scheme.takesGivenScales || scheme == .none, .scales,
                      expected: "absmax with \(scheme.rawValue) (learned scales are for q8_0, q4_0 and the per-channel schemes)", found: "'learned'")
        try c.require(freezeStep >= 0, .freezeStep, expected: "an integer >= 0 (0 = never)", found: freezeStep)
        try c.require(freezeStep == 0 || scheme.takesGivenScales || scheme == .none, .freezeStep,
                      expected: "0 with \(scheme.rawValue) (frozen scales are for q8_0, q4_0 and the per-channel schemes)", found: freezeStep)
        try c.require(startStep >= 0, .startStep, expected: "an integer >= 0", found: startStep)
        if let e = embeddingScheme {
            try c.require(embeddings, .embeddingScheme, expected: "embeddings: true with it (the tables are not quantized otherwise)", found: "'\(e.rawValue)' with embeddings: false")
            try c.require(e.isBlockFormat && scheme.isBlockFormat, .embeddingScheme, expected: "a block format (\(QATScheme.blockFormatNames)) beside a block-format scheme",
                          found: "'\(e.rawValue)' beside scheme '\(scheme.rawValue)'")
            try c.require(e == scheme || (scales == .absmax && freezeStep == 0), .embeddingScheme,
                          expected: "scheme's own format with learned or frozen scales (one set of scales per run)", found: "'\(e.rawValue)'")
        }
        if c.contains(.tensorTypes) {
            try c.require(preset == nil, .tensorTypes, expected: "none beside a preset (it picks every tensor's type)", found: "a value")
            let m = try c.nestedContainer(keyedBy: AnyKey.self, forKey: .tensorTypes)
            for key in m.allKeys {
                guard let matrix = BlockMatrix(rawValue: key.stringValue) else {
                    throw DecodingError.dataCorruptedError(forKey: key, in: m, debugDescription: "expected a block matrix (\(BlockMatrix.choices)), found '\(key.stringValue)'")
                }
                let t: QATScheme = try m.value(key, or: .none)
                try m.require(t.isBlockFormat && scheme.isBlockFormat, key, expected: "a block format (\(QATScheme.blockFormatNames)) beside a block-format scheme",
                              found: "'\(t.rawValue)' beside scheme '\(scheme.rawValue)'")
                try m.require(t == scheme || (scales == .absmax && freezeStep == 0), key,
                              expected: "scheme's own format with learned or frozen scales (one set of scales per run)", found: "'\(t.rawValue)'")
                tensorTypes = (tensorTypes ?? [:]).merging([matrix: t]) { $1 }
            }
        }
        importance = try c.value(.importance, or: importance)
        if c.contains(.importanceWindows) {
            let n: Int = try c.value(.importanceWindows, or: 64)
            try c.require(n >= 1, .importanceWindows, expected: "an integer >= 1", found: n)
            importanceWindows = n
        }
        let planned = [scheme] + [embeddingScheme].compactMap { $0 } + (tensorTypes.map { Array($0.values) } ?? [])
        try c.require(importance == .none || planned.contains(where: \.isWeighedByImportance), .importance,
                      expected: "a block format other than q8_0 and mxfp4 in scheme, embedding_scheme or tensor_types beside it (ggml weighs no other format's scale search by one)",
                      found: "'\(importance.rawValue)' with scheme '\(scheme.rawValue)'")
        try c.require(importance == .none || (scales == .absmax && freezeStep == 0), .importance,
                      expected: "scales: absmax and no freeze_step beside it (it weighs the search for the scales that learned or frozen ones replace)",
                      found: "'\(importance.rawValue)' with scales '\(scales.rawValue)', freeze_step \(freezeStep)")
        try c.require(!c.contains(.importanceWindows) || importance != .none, .importanceWindows, expected: "importance: activations beside it", found: "importance: none")
    }

    /// `qat.tensor_types` as the config spells it ("ffn_down: q3_k, …", in the keys' order), empty without it.
    public var tensorTypesSummary: String {
        BlockMatrix.allCases.compactMap { m in tensorTypes?[m].map { "\(m): \($0)" } }.joined(separator: ", ")
    }

    /// The format of the embedding and LM head: `none` unless `embeddings`.
    public var tableScheme: QATScheme { preset != nil ? .q6_K : embeddings ? (embeddingScheme ?? scheme) : .none }

    public var enabled: Bool { scheme != .none || activations != .none }

    /// The weights are quantized with explicit scales at `step` (learned, or frozen absmax ranges).
    public func explicitScales(atStep step: Int) -> Bool {
        scheme != .none && step >= startStep && (scales == .learned || (freezeStep > 0 && step >= freezeStep))
    }
}
