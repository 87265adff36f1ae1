// The `distill` section of a run config (the objective). Keys are snake_case, every field has a default,
// unknown keys and out-of-range values fail while decoding.

/// `distill.objective`: the divergence between teacher and student.
public enum Objective: String, ConfigVocabulary {
    case fkl, rkl, skewFKL = "skew_fkl", skewRKL = "skew_rkl", jsd, tvd, fklRKL = "fkl_rkl"
}

/// The distillation objective: loss = (1 − kd_ratio)·CE + kd_ratio·[T²]·D(p_teacher, q_student), p and q at T.
public struct DistillConfig: Codable, Equatable, Sendable {
    /// fkl, rkl, skew_fkl, skew_rkl, jsd or tvd. Default fkl.
    public var objective = Objective.fkl
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
        try c.require((0...1).contains(kdRatio), .kdRatio, expected: "a number in [0, 1]", found: kdRatio)
        try c.require(temperature > 0, .temperature, expected: "a number > 0", found: temperature)
        try c.require(skewLambda >= 0 && skewLambda < 1, .skewLambda, expected: "a number in [0, 1)", found: skewLambda)
        try c.require((0...1).contains(jsdBeta), .jsdBeta, expected: "a number in [0, 1]", found: jsdBeta)
    }
}
