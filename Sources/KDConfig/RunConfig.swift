// Every section of a run's YAML as a typed struct (torchtitan style): snake_case keys, a default for every
// field, unknown keys rejected, ranges checked while decoding, cross-field rules in RunConfig.validate().
import Foundation
import Yams

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
    public var ropeStyle = "half"
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
        try c.require(["half", "adjacent"].contains(ropeStyle), .ropeStyle, expected: "'half' or 'adjacent'", found: "'\(ropeStyle)'")
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

/// The training loop: batch geometry, length, logging.
public struct TrainConfig: Codable, Equatable, Sendable {
    /// Optimizer steps to run. Default 100.
    public var steps = 100
    /// Sequences per micro-batch (per rank). Default 8.
    public var microBatch = 8
    /// Micro-batches accumulated into one optimizer step. Default 1.
    public var gradAccum = 1
    /// Tokens per training sequence. Default 128.
    public var seqLen = 128
    /// Seed of every random stream (init, data order, sampling). Default 1234.
    public var seed: UInt64 = 1234
    /// Print a progress line every this many steps. Default 10.
    public var logEvery = 10
    /// Evaluate on the validation split every this many steps; 0 = only at the end. Default 0.
    public var evalEvery = 0
    /// Validation micro-batches per evaluation. Default 4.
    public var evalBatches = 4
    /// Compute threads for kernels and BLAS; 0 = all cores. Default 0.
    public var threads = 0
    /// Rows of logits materialized at once by the chunked LM head. Default 256.
    public var lmHeadChunk = 256

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case steps, microBatch = "micro_batch", gradAccum = "grad_accum", seqLen = "seq_len", seed
        case logEvery = "log_every", evalEvery = "eval_every", evalBatches = "eval_batches", threads
        case lmHeadChunk = "lm_head_chunk"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        steps = try c.value(.steps, or: steps)
        microBatch = try c.value(.microBatch, or: microBatch)
        gradAccum = try c.value(.gradAccum, or: gradAccum)
        seqLen = try c.value(.seqLen, or: seqLen)
        seed = try c.value(.seed, or: seed)
        logEvery = try c.value(.logEvery, or: logEvery)
        evalEvery = try c.value(.evalEvery, or: evalEvery)
        evalBatches = try c.value(.evalBatches, or: evalBatches)
        threads = try c.value(.threads, or: threads)
        lmHeadChunk = try c.value(.lmHeadChunk, or: lmHeadChunk)
        try c.require(steps >= 1, .steps, expected: "an integer >= 1", found: steps)
        try c.require(microBatch >= 1, .microBatch, expected: "an integer >= 1", found: microBatch)
        try c.require(gradAccum >= 1, .gradAccum, expected: "an integer >= 1", found: gradAccum)
        try c.require(seqLen >= 2, .seqLen, expected: "an integer >= 2", found: seqLen)
        try c.require(logEvery >= 1, .logEvery, expected: "an integer >= 1", found: logEvery)
        try c.require(evalEvery >= 0, .evalEvery, expected: "an integer >= 0", found: evalEvery)
        try c.require(evalBatches >= 1, .evalBatches, expected: "an integer >= 1", found: evalBatches)
        try c.require(threads >= 0, .threads, expected: "an integer >= 0 (0 = all cores)", found: threads)
        try c.require(lmHeadChunk >= 1, .lmHeadChunk, expected: "an integer >= 1", found: lmHeadChunk)
    }
}

/// How the student's optimizer state and gradients are split across ranks (`optimizer.sharding`).
public enum Sharding: String, ConfigVocabulary {
    case none, states, gradients
}

/// AdamW and the learning-rate schedule (linear warmup, then cosine decay to min_lr_ratio·lr).
public struct OptimizerConfig: Codable, Equatable, Sendable {
    /// Peak learning rate. Default 3e-4.
    public var lr: Float = 3e-4
    /// Final learning rate as a fraction of lr. Default 0.1.
    public var minLRRatio: Float = 0.1
    /// Steps of linear warmup from 0 to lr. Default 10.
    public var warmupSteps = 10
    /// Decoupled weight decay, applied to matrices only (not norms). Default 0.1.
    public var weightDecay: Float = 0.1
    /// Adam β1. Default 0.9.
    public var beta1: Float = 0.9
    /// Adam β2. Default 0.95.
    public var beta2: Float = 0.95
    /// Adam ε. Default 1e-8.
    public var eps: Float = 1e-8
    /// Global gradient-norm clip; 0 disables. Default 1.
    public var gradClip: Float = 1
    /// Student state split across ranks: `none` (every rank holds all of it), `states` (ZeRO-1: each rank keeps the
    /// AdamW moments and QAT masters of its 1/N of the parameters, updates that range and all-gathers the weights) or
    /// `gradients` (ZeRO-2: as states, and gradients are reduce-scattered instead of all-reduced). Default none.
    public var sharding = Sharding.none

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case lr, minLRRatio = "min_lr_ratio", warmupSteps = "warmup_steps", weightDecay = "weight_decay"
        case beta1, beta2, eps, gradClip = "grad_clip", sharding
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        lr = try c.value(.lr, or: lr)
        minLRRatio = try c.value(.minLRRatio, or: minLRRatio)
        warmupSteps = try c.value(.warmupSteps, or: warmupSteps)
        weightDecay = try c.value(.weightDecay, or: weightDecay)
        beta1 = try c.value(.beta1, or: beta1)
        beta2 = try c.value(.beta2, or: beta2)
        eps = try c.value(.eps, or: eps)
        gradClip = try c.value(.gradClip, or: gradClip)
        sharding = try c.value(.sharding, or: sharding)
        try c.require(lr > 0 && lr < 1, .lr, expected: "a number in (0, 1)", found: lr)
        try c.require((0...1).contains(minLRRatio), .minLRRatio, expected: "a number in [0, 1]", found: minLRRatio)
        try c.require(warmupSteps >= 0, .warmupSteps, expected: "an integer >= 0", found: warmupSteps)
        try c.require(weightDecay >= 0, .weightDecay, expected: "a number >= 0", found: weightDecay)
        try c.require(beta1 >= 0 && beta1 < 1, .beta1, expected: "a number in [0, 1)", found: beta1)
        try c.require(beta2 >= 0 && beta2 < 1, .beta2, expected: "a number in [0, 1)", found: beta2)
        try c.require(eps > 0, .eps, expected: "a number > 0", found: eps)
        try c.require(gradClip >= 0, .gradClip, expected: "a number >= 0 (0 = off)", found: gradClip)
    }

    /// Learning rate at 0-based `step` of `total`: linear warmup to lr, then cosine to minLRRatio·lr.
    public func learningRate(step: Int, total: Int) -> Float {
        if step < warmupSteps { return lr * Float(step + 1) / Float(warmupSteps) }
        let span = max(1, total - warmupSteps)
        let progress = min(1, Double(step - warmupSteps) / Double(span))
        let cosine = 0.5 * (1 + Foundation.cos(Double.pi * progress))
        return lr * (minLRRatio + (1 - minLRRatio) * Float(cosine))
    }
}

/// Where the training text comes from and how it is tokenized.
public struct DataConfig: Codable, Equatable, Sendable {
    /// Text files or folders (read recursively, tokenized as bytes), or one folder written by `distill prepare`
    /// (its shards carry their tokenizer), relative to the working directory. Required.
    public var train: [String] = []
    /// Tokenizer: `bytes` (UTF-8 bytes, vocabulary 256). Default bytes.
    public var tokenizer = "bytes"
    /// File-name endings skipped inside folders (e.g. fortune's `.dat` indexes). Default [".dat"].
    public var excludeSuffixes: [String] = [".dat"]
    /// Fraction of documents held out for validation. Default 0.05.
    public var valFraction: Double = 0.05

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case train, tokenizer, excludeSuffixes = "exclude_suffixes", valFraction = "val_fraction"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let one = try? c.decode(String.self, forKey: .train) { train = [one] } else { train = try c.value(.train, or: train) }
        tokenizer = try c.value(.tokenizer, or: tokenizer)
        excludeSuffixes = try c.value(.excludeSuffixes, or: excludeSuffixes)
        valFraction = try c.value(.valFraction, or: valFraction)
        try c.require(!train.isEmpty, .train, expected: "at least one text file or folder", found: "none")
        try c.require(tokenizer == "bytes", .tokenizer, expected: "'bytes'", found: "'\(tokenizer)'")
        try c.require(valFraction >= 0 && valFraction < 1, .valFraction, expected: "a number in [0, 1)", found: valFraction)
    }
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
    public var combine = "mixture"
    /// Self-distillation: `none` (default), `initial` (a frozen copy of the student's initial weights), `ema` (an
    /// exponential moving average of the student's weights, updated every step and saved in checkpoints) or
    /// `checkpoint` (the student weights of the checkpoint folder in `path`).
    public var selfSource = "none"
    /// Decay of the EMA teacher (`self: ema`): θ_T ← d·θ_T + (1 − d)·θ. Default 0.99.
    public var emaDecay: Float = 0.99
    /// `replicated`: every rank runs every teacher on its micro-batches. `pipelined`: the teacher's layers are split
    /// in contiguous stages across the ranks and every micro-batch flows through all of them (for a teacher that does
    /// not fit one rank). `groups` (several teachers): each teacher lives on its own group of world/teachers ranks,
    /// every group scores the whole global batch, and the results are exchanged. Default replicated.
    public var placement = "replicated"
    /// What reaches the student's rank: `full` (the whole distribution; remote teachers return final hidden states)
    /// or `topk` (top_k log-probabilities + the tail mass, 8·k + 4 bytes per token per teacher). Default full.
    public var exchange = "full"
    /// k of the top-k exchange. Default 64.
    public var topK = 64

    public init() {}

    public static let placements = ["replicated", "pipelined", "groups"]
    public static let selfSources = ["none", "initial", "ema", "checkpoint"]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case path, members, cache, combine, selfSource = "self", emaDecay = "ema_decay", placement, exchange, topK = "top_k"
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
        try c.require(["full", "topk"].contains(exchange), .exchange, expected: "'full' or 'topk'", found: "'\(exchange)'")
        try c.require(topK >= 1, .topK, expected: "an integer >= 1", found: topK)
        try c.require(["mixture", "logits"].contains(combine), .combine, expected: "'mixture' or 'logits'", found: "'\(combine)'")
        try c.require(TeacherConfig.selfSources.contains(selfSource), .selfSource,
                      expected: "one of \(TeacherConfig.selfSources.joined(separator: ", "))", found: "'\(selfSource)'")
        try c.require(emaDecay >= 0 && emaDecay < 1, .emaDecay, expected: "a number in [0, 1)", found: emaDecay)
        try c.require(TeacherConfig.placements.contains(placement), .placement,
                      expected: "one of \(TeacherConfig.placements.joined(separator: ", "))", found: "'\(placement)'")
        switch selfSource {
        case "none" where !cache.isEmpty:
            try c.require(path.isEmpty && members.isEmpty && placement == "replicated", .cache,
                          expected: "a cache alone (no path, members or placement: the cache replaces the teacher)", found: "'\(cache)' with more")
        case "none":
            try c.require(path.isEmpty != members.isEmpty, path.isEmpty ? .members : .path,
                          expected: "either path (one teacher) or members (several), not both", found: path.isEmpty ? "neither" : "both")
        case "checkpoint":
            try c.require(!path.isEmpty && members.isEmpty, .path, expected: "the checkpoint folder of the self-teacher (and no members)",
                          found: path.isEmpty ? "nothing" : "members as well")
        default:
            try c.require(path.isEmpty && members.isEmpty, path.isEmpty ? .members : .path,
                          expected: "no teacher files with self: \(selfSource) (the student is its own teacher)", found: "'\(path.isEmpty ? "members" : path)'")
        }
        if selfSource == "initial" || selfSource == "ema" {
            try c.require(placement == "replicated", .placement, expected: "replicated with a self-teacher", found: "'\(placement)'")
        }
        if placement == "groups" {
            try c.require(members.count >= 2, .placement, expected: "groups only with two or more members", found: "\(members.count) teacher")
        }
        if placement == "pipelined" {
            try c.require(members.isEmpty, .placement, expected: "one teacher with pipelined (use groups for several)", found: "\(members.count) members")
        }
    }

    /// The teacher files with their weights: the members, or the one path (none for a self-teacher).
    public var sources: [TeacherMember] {
        if selfSource == "initial" || selfSource == "ema" || !cache.isEmpty { return [] }
        return members.isEmpty ? [TeacherMember(path: path, weight: 1)] : members
    }
}

/// The distillation objective: loss = (1 − kd_ratio)·CE + kd_ratio·[T²]·D(p_teacher, q_student), p and q at T.
public struct DistillConfig: Codable, Equatable, Sendable {
    /// fkl, rkl, skew_fkl, skew_rkl, jsd or tvd. Default fkl.
    public var objective = "fkl"
    /// Weight of the divergence against cross-entropy on the data. Default 0.5.
    public var kdRatio: Float = 0.5
    /// Softmax temperature of teacher and student in the divergence. Default 1.
    public var temperature: Float = 1
    /// Multiply the divergence by T². Default false.
    public var t2Scale = false
    /// λ of the skew divergences. Default 0.1.
    public var skewLambda: Float = 0.1
    /// β of JSD (0 = forward KL, 1 = reverse KL). Default 0.5.
    public var jsdBeta: Float = 0.5
    /// α of fkl_rkl: α·KL(p‖q) + (1−α)·KL(q‖p). Default 0.5.
    public var mixAlpha: Float = 0.5

    public init() {}

    public static let objectives = ["fkl", "rkl", "skew_fkl", "skew_rkl", "jsd", "tvd", "fkl_rkl"]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case objective, kdRatio = "kd_ratio", temperature, t2Scale = "t2_scale", skewLambda = "skew_lambda", jsdBeta = "jsd_beta"
        case mixAlpha = "mix_alpha"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        objective = try c.value(.objective, or: objective)
        kdRatio = try c.value(.kdRatio, or: kdRatio)
        temperature = try c.value(.temperature, or: temperature)
        t2Scale = try c.value(.t2Scale, or: t2Scale)
        skewLambda = try c.value(.skewLambda, or: skewLambda)
        jsdBeta = try c.value(.jsdBeta, or: jsdBeta)
        mixAlpha = try c.value(.mixAlpha, or: mixAlpha)
        try c.require((0...1).contains(mixAlpha), .mixAlpha, expected: "a number in [0, 1]", found: mixAlpha)
        try c.require(DistillConfig.objectives.contains(objective), .objective,
                      expected: "one of \(DistillConfig.objectives.joined(separator: ", "))", found: "'\(objective)'")
        try c.require((0...1).contains(kdRatio), .kdRatio, expected: "a number in [0, 1]", found: kdRatio)
        try c.require(temperature > 0, .temperature, expected: "a number > 0", found: temperature)
        try c.require(skewLambda >= 0 && skewLambda < 1, .skewLambda, expected: "a number in [0, 1)", found: skewLambda)
        try c.require((0...1).contains(jsdBeta), .jsdBeta, expected: "a number in [0, 1]", found: jsdBeta)
    }
}

/// Where the training sequences come from: the corpus, or the student's own generations (on-policy distillation).
/// Prompts are the first `prompt_tokens` of corpus windows; the student continues them to train.seq_len + 1 tokens
/// and only the generated tokens carry loss.
public struct PolicyConfig: Codable, Equatable, Sendable {
    /// `off` (corpus only), `gkd` (a fixed fraction of steps on fresh student generations, as GKD), `distillm` (an
    /// adaptive share of steps on student generations, fresh or replayed, as DistiLLM) or `minillm` (policy gradient
    /// on rollouts sampled from a teacher-student mixture, plus the exact per-token reverse KL, as MiniLLM). Default off.
    public var mode = "off"
    /// gkd: the fraction λ of steps on student generations; minillm: the fraction of steps on rollouts (the others
    /// distill on the corpus). Default 0.5.
    public var fraction: Float = 0.5
    /// Prompt length taken from each corpus window. Default 16.
    public var promptTokens = 16
    /// Softmax temperature of the student when it samples (gkd, distillm; minillm samples at 1). Default 1.
    public var sampleTemperature: Float = 1
    /// minillm: α of teacher-mixed sampling, each token drawn from α·p + (1 − α)·q. Default 0.2.
    public var teacherMix: Float = 0.2
    /// minillm: discount γ of the long-term reward. Default 0.95.
    public var gamma: Float = 0.95
    /// minillm: ε of the clipped policy-gradient surrogate min(w·A, clip(w, 1 − ε, 1 + ε)·A). Default 0.2.
    public var clip: Float = 0.2
    /// distillm: the initial probability of a student-generated step. Default 0.
    public var thresholdInit: Float = 0
    /// distillm: how much that probability rises when the validation loss rises at an evaluation. Default 0.1.
    public var thresholdStep: Float = 0.1
    /// distillm: the rise of the validation loss (absolute) that counts. Default 0.
    public var margin: Float = 0
    /// distillm: sequences kept for replay (FIFO). Default 1000.
    public var replayCapacity = 1000

    public init() {}

    public static let modes = ["off", "gkd", "distillm", "minillm"]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case mode, fraction, promptTokens = "prompt_tokens", sampleTemperature = "sample_temperature", teacherMix = "teacher_mix"
        case gamma, clip, thresholdInit = "threshold_init", thresholdStep = "threshold_step", margin, replayCapacity = "replay_capacity"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        mode = try c.value(.mode, or: mode)
        fraction = try c.value(.fraction, or: fraction)
        promptTokens = try c.value(.promptTokens, or: promptTokens)
        sampleTemperature = try c.value(.sampleTemperature, or: sampleTemperature)
        teacherMix = try c.value(.teacherMix, or: teacherMix)
        gamma = try c.value(.gamma, or: gamma)
        clip = try c.value(.clip, or: clip)
        thresholdInit = try c.value(.thresholdInit, or: thresholdInit)
        thresholdStep = try c.value(.thresholdStep, or: thresholdStep)
        margin = try c.value(.margin, or: margin)
        replayCapacity = try c.value(.replayCapacity, or: replayCapacity)
        try c.require(PolicyConfig.modes.contains(mode), .mode, expected: "one of \(PolicyConfig.modes.joined(separator: ", "))", found: "'\(mode)'")
        try c.require((0...1).contains(fraction), .fraction, expected: "a number in [0, 1]", found: fraction)
        try c.require(promptTokens >= 1, .promptTokens, expected: "an integer >= 1", found: promptTokens)
        try c.require(sampleTemperature > 0, .sampleTemperature, expected: "a number > 0", found: sampleTemperature)
        try c.require((0...1).contains(teacherMix), .teacherMix, expected: "a number in [0, 1]", found: teacherMix)
        try c.require((0...1).contains(gamma), .gamma, expected: "a number in [0, 1]", found: gamma)
        try c.require(clip > 0 && clip < 1, .clip, expected: "a number in (0, 1)", found: clip)
        try c.require((0...1).contains(thresholdInit), .thresholdInit, expected: "a number in [0, 1]", found: thresholdInit)
        try c.require((0...1).contains(thresholdStep), .thresholdStep, expected: "a number in [0, 1]", found: thresholdStep)
        try c.require(margin >= 0, .margin, expected: "a number >= 0", found: margin)
        try c.require(replayCapacity >= 1, .replayCapacity, expected: "an integer >= 1", found: replayCapacity)
    }
}

/// Quantization-aware training: the student's linear layers see their weights quantized as they will be exported
/// (fake quantization, straight-through gradients into full-precision master weights).
public struct QATConfig: Codable, Equatable, Sendable {
    /// `none`, `q8_0`, `q4_0`, `q4_1` (exactly the GGUF block formats) or `int8_channel`, `int4_channel`. Default none.
    public var scheme = "none"
    /// Also quantize the token embedding and LM head (else they stay full precision). Default false.
    public var embeddings = false
    /// `none` or `int8`: per-token dynamic int8 fake quantization of the activations entering the linear layers
    /// (with a 4-bit scheme: "8da4w"). Default none.
    public var activations = "none"
    /// Full precision before this step. Default 0.
    public var startStep = 0
    /// `absmax`: the scales follow the weights every step, as ggml picks them; `learned`: LSQ — one trained scale per
    /// block of 32 (per row for the per-channel schemes), starting from the absmax ones at start_step (not q4_1).
    /// Default absmax.
    public var scales = "absmax"
    /// Learned scales: their learning rate as a multiple of the weights' (AdamW on log|s|, so lr·ratio is roughly the
    /// relative change of a scale per step; at 1 they barely move in a short run). Default 30.
    public var scaleLRRatio: Float = 30
    /// From this step on the scales stop changing (absmax: frozen at their values then; learned: no more updates);
    /// 0 = never. Default 0.
    public var freezeStep = 0

    public init() {}

    public static let schemes = ["none", "q8_0", "q4_0", "q4_1", "int8_channel", "int4_channel"]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case scheme, embeddings, activations, startStep = "start_step", scales, scaleLRRatio = "scale_lr_ratio", freezeStep = "freeze_step"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        scheme = try c.value(.scheme, or: scheme)
        embeddings = try c.value(.embeddings, or: embeddings)
        activations = try c.value(.activations, or: activations)
        startStep = try c.value(.startStep, or: startStep)
        scales = try c.value(.scales, or: scales)
        freezeStep = try c.value(.freezeStep, or: freezeStep)
        scaleLRRatio = try c.value(.scaleLRRatio, or: scaleLRRatio)
        try c.require(scaleLRRatio > 0 && scaleLRRatio.isFinite, .scaleLRRatio, expected: "a number > 0", found: scaleLRRatio)
        try c.require(["absmax", "learned"].contains(scales), .scales, expected: "'absmax' or 'learned'", found: "'\(scales)'")
        try c.require(scales == "absmax" || scheme != "q4_1", .scales, expected: "absmax with q4_1 (its blocks also carry a minimum)", found: "'learned'")
        try c.require(freezeStep >= 0, .freezeStep, expected: "an integer >= 0 (0 = never)", found: freezeStep)
        try c.require(freezeStep == 0 || scheme != "q4_1", .freezeStep, expected: "0 with q4_1 (its blocks also carry a minimum)", found: freezeStep)
        try c.require(QATConfig.schemes.contains(scheme), .scheme, expected: "one of \(QATConfig.schemes.joined(separator: ", "))", found: "'\(scheme)'")
        try c.require(["none", "int8"].contains(activations), .activations, expected: "'none' or 'int8'", found: "'\(activations)'")
        try c.require(startStep >= 0, .startStep, expected: "an integer >= 0", found: startStep)
    }

    public var enabled: Bool { scheme != "none" || activations != "none" }

    /// The weights are quantized with explicit scales at `step` (learned, or frozen absmax ranges).
    public func explicitScales(atStep step: Int) -> Bool {
        scheme != "none" && step >= startStep && (scales == "learned" || (freezeStep > 0 && step >= freezeStep))
    }
}

/// How a training run's student starts.
public struct StudentInitConfig: Codable, Equatable, Sendable {
    /// `random` (default) or `from_teacher`: copy the teacher's embedding, final norm, head and the blocks in
    /// `layers` (depth pruning); the model section must then have the teacher's width and len(layers) blocks.
    public var initFrom = "random"
    /// Teacher blocks to keep, in order (e.g. [0, 3, 6, …]); empty with `every` set = every `every`-th block.
    public var layers: [Int] = []
    /// Keep blocks 0, every, 2·every, … (when `layers` is empty). Default 0 (unused).
    public var every = 0
    /// The teacher to cut from (default: the teacher section's path).
    public var teacher = ""
    /// Width pruning (model.ffn_dim below the teacher's, or model.heads below the teacher's with head_dim = its head
    /// size): micro-batches of the first training windows on which the teacher's FFN channels and query heads are
    /// ranked by mean |activation|. Default 4.
    public var calibrationBatches = 4

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case initFrom = "init", layers, every, teacher, calibrationBatches = "calibration_batches" }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        initFrom = try c.value(.initFrom, or: initFrom)
        layers = try c.value(.layers, or: layers)
        every = try c.value(.every, or: every)
        teacher = try c.value(.teacher, or: teacher)
        calibrationBatches = try c.value(.calibrationBatches, or: calibrationBatches)
        try c.require(calibrationBatches >= 1, .calibrationBatches, expected: "an integer >= 1", found: calibrationBatches)
        try c.require(["random", "from_teacher"].contains(initFrom), .initFrom, expected: "'random' or 'from_teacher'", found: "'\(initFrom)'")
        try c.require(every >= 0, .every, expected: "an integer >= 0", found: every)
        try c.require(layers.allSatisfy { $0 >= 0 }, .layers, expected: "block indices >= 0", found: layers)
        if initFrom == "from_teacher" {
            try c.require(!layers.isEmpty || every > 0, .layers, expected: "the teacher blocks to keep (layers: [...] or every: N)", found: "none")
        }
    }
}

/// Where and how often rank 0 writes checkpoints.
public struct CheckpointConfig: Codable, Equatable, Sendable {
    /// Run directory; checkpoints are its step_XXXXXXXX folders. Default Checkpoints/run.
    public var dir = "Checkpoints/run"
    /// Write one every this many steps, and always after the last; 0 = only after the last. Default 0.
    public var every = 0
    /// Also write one when this many minutes have passed since the last (rank 0's clock decides, so every rank
    /// agrees); 0 = off. Default 0.
    public var everyMinutes = 0.0
    /// Checkpoints kept (older ones are deleted once a newer one is complete). Default 3.
    public var keep = 3

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case dir, every, everyMinutes = "every_minutes", keep }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dir = try c.value(.dir, or: dir)
        every = try c.value(.every, or: every)
        everyMinutes = try c.value(.everyMinutes, or: everyMinutes)
        keep = try c.value(.keep, or: keep)
        try c.require(everyMinutes >= 0 && everyMinutes.isFinite, .everyMinutes, expected: "a number of minutes >= 0 (0 = off)", found: everyMinutes)
        try c.require(!dir.isEmpty, .dir, expected: "a folder path", found: "an empty string")
        try c.require(every >= 0, .every, expected: "an integer >= 0 (0 = only at the end)", found: every)
        try c.require(keep >= 1, .keep, expected: "an integer >= 1", found: keep)
    }
}

/// A whole run: one struct per YAML section.
public struct RunConfig: Codable, Equatable, Sendable {
    /// The student (for now: the model being trained).
    public var model = ModelConfig()
    public var train = TrainConfig()
    public var optimizer = OptimizerConfig()
    public var data = DataConfig()
    public var checkpoint = CheckpointConfig()
    /// Absent: plain cross-entropy training.
    public var teacher: TeacherConfig?
    public var distill = DistillConfig()
    /// Corpus or on-policy sequences.
    public var policy = PolicyConfig()
    public var qat = QATConfig()
    public var student = StudentInitConfig()

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case model, train, optimizer, data, checkpoint, teacher, distill, policy, qat, student }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.value(.model, or: model)
        train = try c.value(.train, or: train)
        optimizer = try c.value(.optimizer, or: optimizer)
        checkpoint = try c.value(.checkpoint, or: checkpoint)
        teacher = try c.decodeIfPresent(TeacherConfig.self, forKey: .teacher)
        distill = try c.value(.distill, or: distill)
        policy = try c.value(.policy, or: policy)
        qat = try c.value(.qat, or: qat)
        student = try c.value(.student, or: student)
        guard c.contains(.data) else {
            throw ConfigError.invalid("data", expected: "a data section with a 'train' list of text files", found: "none")
        }
        data = try c.decode(DataConfig.self, forKey: .data)
    }

    /// Cross-field rules, checked before anything is allocated.
    public func validate() throws {
        try model.validate()
        guard train.seqLen <= model.maxSeqLen else {
            throw ConfigError.invalid("train.seq_len", expected: "<= model.max_seq_len (\(model.maxSeqLen))", found: "\(train.seqLen)")
        }
        if data.tokenizer == "bytes", model.vocabSize < 256 {
            throw ConfigError.invalid("model.vocab_size", expected: ">= 256 for the bytes tokenizer", found: "\(model.vocabSize)")
        }
        if ["q8_0", "q4_0", "q4_1"].contains(qat.scheme) {
            // GGUF block formats quantize rows in blocks of 32
            for (name, v) in [("model.dim", model.dim), ("model.ffn_dim", model.ffnDim)] where v % 32 != 0 {
                throw ConfigError.invalid(name, expected: "a multiple of 32 with qat.scheme \(qat.scheme) (rows are quantized in blocks of 32)", found: "\(v)")
            }
        }
        if policy.mode != "off" {
            guard teacher != nil else {
                throw ConfigError.invalid("policy.mode", expected: "a teacher section with on-policy distillation (\(policy.mode))", found: "no teacher")
            }
            guard policy.promptTokens < train.seqLen else {
                throw ConfigError.invalid("policy.prompt_tokens", expected: "< train.seq_len (\(train.seqLen)) so the student generates", found: "\(policy.promptTokens)")
            }
        }
        if policy.mode != "off", let c = teacher?.cache, !c.isEmpty {
            throw ConfigError.invalid("teacher.cache", expected: "a live teacher with policy.mode \(policy.mode) (the cache only covers corpus windows)", found: "'\(c)'")
        }
        if policy.mode == "minillm" {
            guard distill.objective == "rkl" else {
                throw ConfigError.invalid("distill.objective", expected: "rkl with policy.mode minillm (its single-step term is the reverse KL)", found: "'\(distill.objective)'")
            }
            guard teacher?.placement == "replicated" else {
                throw ConfigError.invalid("teacher.placement", expected: "replicated with policy.mode minillm (teacher-mixed sampling needs the teacher on every rank)",
                                          found: "'\(teacher?.placement ?? "")'")
            }
        }
        if policy.mode == "distillm", train.evalEvery == 0 {
            throw ConfigError.invalid("train.eval_every", expected: "> 0 with policy.mode distillm (the threshold adapts at evaluations)", found: "0")
        }
        guard optimizer.warmupSteps <= train.steps else {
            throw ConfigError.invalid("optimizer.warmup_steps", expected: "<= train.steps (\(train.steps))", found: "\(optimizer.warmupSteps)")
        }
    }

    /// Decodes and validates YAML text.
    public static func parse(yaml: String, source: String = "config") throws -> RunConfig {
        let config: RunConfig
        do {
            config = try YAMLDecoder().decode(RunConfig.self, from: yaml)
        } catch let e as DecodingError {
            throw ConfigError(decoding: e, source: source)
        } catch let e as ConfigError {
            throw e
        } catch {
            throw ConfigError.syntax(source: source, message: "\(error)")
        }
        try config.validate()
        return config
    }

    /// Reads, decodes and validates a YAML file. A top-level `base: OTHER.yaml` (relative to this file) is read first
    /// and this file's keys are merged over it, section by section (mappings merge, everything else replaces).
    public static func load(path: String) throws -> RunConfig {
        let node = try loadNode(path: path, seen: [])
        let text: String
        do { text = try Yams.serialize(node: node) } catch { throw ConfigError.syntax(source: path, message: "\(error)") }
        return try parse(yaml: text, source: path)
    }

    static func loadNode(path: String, seen: [String]) throws -> Node {
        guard FileManager.default.fileExists(atPath: path) else { throw ConfigError.fileNotFound(path) }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigError.syntax(source: path, message: "not readable as UTF-8 text")
        }
        let parsed: Node?
        do { parsed = try Yams.compose(yaml: text) } catch {
            // Yams reports over several lines (with a caret under the spot): one line is enough
            let oneLine = "\(error)".split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && $0 != "^" }
            throw ConfigError.syntax(source: path, message: oneLine.joined(separator: " "))
        }
        guard var node = parsed, var map = node.mapping else { return parsed ?? Node("") }
        guard let baseValue = map["base"] else { return node }
        guard let base = baseValue.string else { throw ConfigError.invalid("base", expected: "the path of another config file", found: "\(baseValue)") }
        let basePath = base.hasPrefix("/") ? base : ((path as NSString).deletingLastPathComponent as NSString).appendingPathComponent(base)
        let canonical = (basePath as NSString).standardizingPath
        guard !seen.contains(canonical) else {
            throw ConfigError.invalid("base", expected: "a chain of config files without a cycle", found: (seen + [canonical]).joined(separator: " → "))
        }
        map["base"] = nil
        node = .mapping(map)
        return merge(try loadNode(path: basePath, seen: seen + [(path as NSString).standardizingPath, canonical]), node)
    }

    /// `over` merged onto `under`: mappings key by key (recursively), anything else replaced.
    static func merge(_ under: Node, _ over: Node) -> Node {
        guard var a = under.mapping, let b = over.mapping else { return over }
        for (k, v) in b { a[k] = a[k].map { merge($0, v) } ?? v }
        return .mapping(a)
    }

    /// The config as YAML (stored beside checkpoints and printed by `distill train --dry-run`).
    public func yaml() throws -> String { try YAMLEncoder().encode(self) }
}
