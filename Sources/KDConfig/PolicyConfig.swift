// The `policy` section of a run config (corpus or on-policy sequences). Keys are snake_case, every field has a default,
// unknown keys and out-of-range values fail while decoding.

/// `policy.mode`: where training sequences come from.
public enum PolicyMode: String, ConfigVocabulary {
    case off, gkd, distillm, minillm
}

/// Where the training sequences come from: the corpus, or the student's own generations (on-policy distillation).
/// Prompts are the first `prompt_tokens` of corpus windows; the student continues them to train.seq_len + 1 tokens
/// and only the generated tokens carry loss.
public struct PolicyConfig: Codable, Equatable, Sendable {
    /// `off` (corpus only), `gkd` (a fixed fraction of steps on fresh student generations, as GKD), `distillm` (an
    /// adaptive share of steps on student generations, fresh or replayed, as DistiLLM) or `minillm` (policy gradient
    /// on rollouts sampled from a teacher-student mixture, plus the exact per-token reverse KL, as MiniLLM). Default off.
    public var mode = PolicyMode.off
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
