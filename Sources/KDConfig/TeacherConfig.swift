// The `teacher` section of a run config (the model(s) the student learns from and where they run). Keys are snake_case, every field has a default,
// unknown keys and out-of-range values fail while decoding.

/// `teacher.combine`: how several teachers become one target.
public enum TeacherCombine: String, ConfigVocabulary {
    /// Weighted mixture in probability space.
    case mixture
    /// Softmax of the weighted mean of the logits.
    case logits
}

/// `teacher.placement`: where the teacher's forward passes run.
public enum Placement: String, ConfigVocabulary {
    case replicated, pipelined, groups
}

/// `teacher.exchange`: what of the teacher's distribution reaches the student's rank.
public enum Exchange: String, ConfigVocabulary {
    case full, topk
}

/// `teacher.self`: self-distillation's teacher.
public enum SelfTeacher: String, ConfigVocabulary {
    case none, initial, ema, checkpoint
}

/// `teacher.products`: how a GGUF teacher's block-quantized matrices (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K)
/// multiply on a CPU with AVX512-VNNI.
public enum TeacherProducts: String, ConfigVocabulary {
    /// In 8-bit integers (activations quantized per block of 32, as llama.cpp does) where matmuls are bf16, else dequantized.
    case auto
    /// In 8-bit integers in f32 runs too.
    case int8
    /// Always dequantized to the run's matmul precision.
    case float
}

/// One member of a multi-teacher ensemble.
public struct TeacherMember: Codable, Equatable, Sendable {
    /// A GGUF file or a Hugging Face folder. Required.
    public var path = ""
    /// Its weight in the combination (normalized over the members). Default 1.
    public var weight: Float = 1

    public init(path: String = "", weight: Float = 1) { self.path = path; self.weight = weight }

    enum CodingKeys: String, CodingKey, CaseIterable { case path, weight }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        path = try c.value(.path, or: path)
        weight = try c.value(.weight, or: weight)
        try c.require(!path.isEmpty, .path, expected: "a GGUF file or a Hugging Face folder", found: "nothing")
        try c.require(weight >= 0 && weight.isFinite, .weight, expected: "a number >= 0", found: weight)
    }
}

/// The teacher(s) a student is distilled from: one model (`path`), several (`members`), or the student itself (`self`).
public struct TeacherConfig: Codable, Equatable, Sendable {
    /// A GGUF file or a Hugging Face folder (one teacher); with `self: checkpoint`, the checkpoint folder.
    public var path = ""
    /// Several teachers with weights (instead of `path`); they must share the vocabulary.
    public var members: [TeacherMember] = []
    /// A folder written by `distill teacher-cache` (instead of `path`): the teacher's top-k rows for every window of the
    /// corpus, read instead of running a teacher.
    public var cache = ""
    /// How several teachers become one target: `mixture` (weighted mixture of the distributions, in log space) or
    /// `logits` (softmax of the weighted mean of the logits). Default mixture.
    public var combine = TeacherCombine.mixture
    /// Self-distillation: `none` (default), `initial` (a frozen copy of the student's initial weights), `ema` (an
    /// exponential moving average of the student's weights, updated every step and saved in checkpoints) or
    /// `checkpoint` (the student weights of the checkpoint folder in `path`).
    public var selfSource = SelfTeacher.none
    /// Decay of the EMA teacher (`self: ema`): θ_T ← d·θ_T + (1 − d)·θ. Default 0.99.
    public var emaDecay: Float = 0.99
    /// `replicated`: every rank runs every teacher on its micro-batches. `pipelined`: the teacher's layers are split
    /// in contiguous stages across the ranks and every micro-batch flows through all of them (for a teacher that does
    /// not fit one rank). `groups` (several teachers): each teacher lives on its own group of world/teachers ranks,
    /// every group scores the whole global batch, and the results are exchanged. Default replicated.
    public var placement = Placement.replicated
    /// What reaches the student's rank: `full` (the whole distribution; remote teachers return final hidden states)
    /// or `topk` (top_k log-probabilities + the tail mass, 8·k + 4 bytes per token per teacher). Default full.
    public var exchange = Exchange.full
    /// k of the top-k exchange. Default 64.
    public var topK = 64
    /// How the teacher's quantized matrices multiply: `auto` (8-bit integer products where matmuls are bf16 and the CPU
    /// has AVX512-VNNI), `int8` (also in f32 runs), `float` (dequantized). Default auto.
    public var products = TeacherProducts.auto

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case path, members, cache, combine, selfSource = "self", emaDecay = "ema_decay", placement, exchange, topK = "top_k", products
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        path = try c.value(.path, or: path)
        members = try c.value(.members, or: members)
        cache = try c.value(.cache, or: cache)
        combine = try c.value(.combine, or: combine)
        selfSource = try c.value(.selfSource, or: selfSource)
        emaDecay = try c.value(.emaDecay, or: emaDecay)
        placement = try c.value(.placement, or: placement)
        exchange = try c.value(.exchange, or: exchange)
        topK = try c.value(.topK, or: topK)
        products = try c.value(.products, or: products)
        try c.require(topK >= 1, .topK, expected: "an integer >= 1", found: topK)
        try c.require(emaDecay >= 0 && emaDecay < 1, .emaDecay, expected: "a number in [0, 1)", found: emaDecay)
        switch selfSource {
        case .none where !cache.isEmpty:
            try c.require(path.isEmpty && members.isEmpty && placement == .replicated, .cache,
                          expected: "a cache alone (no path, members or placement: the cache replaces the teacher)", found: "'\(cache)' with more")
        case .none:
            try c.require(path.isEmpty != members.isEmpty, path.isEmpty ? .members : .path,
                          expected: "either path (one teacher) or members (several), not both", found: path.isEmpty ? "neither" : "both")
        case .checkpoint:
            try c.require(!path.isEmpty && members.isEmpty, .path, expected: "the checkpoint folder of the self-teacher (and no members)",
                          found: path.isEmpty ? "nothing" : "members as well")
        case .initial, .ema:
            try c.require(path.isEmpty && members.isEmpty, path.isEmpty ? .members : .path,
                          expected: "no teacher files with self: \(selfSource.rawValue) (the student is its own teacher)", found: "'\(path.isEmpty ? "members" : path)'")
        }
        if selfSource == .initial || selfSource == .ema {
            try c.require(placement == .replicated, .placement, expected: "replicated with a self-teacher", found: "'\(placement.rawValue)'")
        }
        if placement == .groups {
            try c.require(members.count >= 2, .placement, expected: "groups only with two or more members", found: "\(members.count) teacher")
        }
        if placement == .pipelined {
            try c.require(members.isEmpty, .placement, expected: "one teacher with pipelined (use groups for several)", found: "\(members.count) members")
        }
    }

    /// The teacher files with their weights: the members, or the one path (none for a self-teacher).
    public var sources: [TeacherMember] {
        if selfSource == .initial || selfSource == .ema || !cache.isEmpty { return [] }
        return members.isEmpty ? [TeacherMember(path: path, weight: 1)] : members
    }
}
