// The `distill` section of a run config (the objective). Keys are snake_case, every field has a default,
// unknown keys and out-of-range values fail while decoding.

/// `distill.objective`: the divergence between teacher and student.
public enum Objective: String, ConfigVocabulary {
    case fkl, rkl, skewFKL = "skew_fkl", skewRKL = "skew_rkl", jsd, tvd, fklRKL = "fkl_rkl"
}

/// `distill.cross_tokenizer`: teachers whose tokenizer is not the student's.
public enum CrossTokenizer: String, ConfigVocabulary {
    /// Refuse them (a vocabulary mismatch is an error).
    case off
    /// Universal Logit Distillation: Wasserstein-1 between the sorted distributions at byte-aligned positions.
    case uld
    /// Exact buckets for the tokens both vocabularies share (same bytes), the objective over them, ULD on the rest.
    case gold
}

/// `distill.hidden_layers`: which student block outputs are matched to which teacher block outputs.
public enum HiddenLayers: Codable, Equatable, Sendable, CustomStringConvertible {
    /// Each block of a student cut from its teacher ↔ the teacher block it was cut from.
    case auto
    /// Each block of a student cut from its teacher ↔ the teacher block whose output the next kept block reads (the
    /// last one before it; the student's last block ↔ the teacher's last): at a seam of a depth cut the kept block
    /// before it is asked for what the removed run handed on. Without a depth cut the same pairs as `auto`.
    case seams
    /// [student block, teacher block] pairs.
    case pairs([[Int]])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let word = try? c.decode(String.self) {
            switch word {
            case "auto": self = .auto
            case "seams": self = .seams
            default:
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "expected 'auto', 'seams' or a list of [student, teacher] block pairs, found '\(word)'")
            }
            return
        }
        guard let pairs = try? c.decode([[Int]].self), pairs.allSatisfy({ $0.count == 2 && $0.allSatisfy { $0 >= 0 } }) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "expected 'auto', 'seams' or a list of [student, teacher] block pairs of indices >= 0")
        }
        self = .pairs(pairs)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .auto: try c.encode("auto")
        case .seams: try c.encode("seams")
        case .pairs(let p): try c.encode(p)
        }
    }

    public var description: String {
        switch self {
        case .auto: return "auto"
        case .seams: return "seams"
        case .pairs(let p): return p.map { "\($0[0])→\($0[1])" }.joined(separator: ", ")
        }
    }
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
    /// Weight w of the hidden-state loss added to the objective: w · mean over the pairs and tokens of
    /// ‖h_student − h_teacher‖² / ‖h_teacher‖² on block outputs (the residual stream). Default 0 (off).
    public var hiddenWeight: Float = 0
    /// The block pairs the hidden-state loss matches: `auto` (a cut student's blocks ↔ the teacher blocks they were
    /// cut from) or [[student, teacher], …]. Default auto.
    public var hiddenLayers = HiddenLayers.auto
    /// Teachers with another tokenizer than the student's: `off` (refused), `uld` or `gold` (their windows are
    /// re-tokenized from the same bytes and aligned to the student's positions). Default off.
    public var crossTokenizer = CrossTokenizer.off
    /// The student's tokenizer for `cross_tokenizer` (a GGUF file or a Hugging Face folder), when neither a teacher nor
    /// `student.teacher` has the tokenizer the data was prepared with and the data's prepare.json does not name it.
    /// Default none.
    public var studentTokenizer = ""
    /// Weight of gold's ULD part (the teacher's tokens without a student twin against the student's other tokens);
    /// 0 keeps only the exact buckets. Default 1.
    public var uldWeight: Float = 1

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case objective, kdRatio = "kd_ratio", temperature, t2Scale = "t2_scale", skewLambda = "skew_lambda", jsdBeta = "jsd_beta"
        case mixAlpha = "mix_alpha", hiddenWeight = "hidden_weight", hiddenLayers = "hidden_layers"
        case crossTokenizer = "cross_tokenizer", studentTokenizer = "student_tokenizer", uldWeight = "uld_weight"
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
        hiddenWeight = try c.value(.hiddenWeight, or: hiddenWeight)
        hiddenLayers = try c.value(.hiddenLayers, or: hiddenLayers)
        crossTokenizer = try c.value(.crossTokenizer, or: crossTokenizer)
        studentTokenizer = try c.value(.studentTokenizer, or: studentTokenizer)
        uldWeight = try c.value(.uldWeight, or: uldWeight)
        try c.require(uldWeight >= 0 && uldWeight.isFinite, .uldWeight, expected: "a number >= 0", found: uldWeight)
        try c.require(hiddenWeight >= 0, .hiddenWeight, expected: "a number >= 0 (0 = off)", found: hiddenWeight)
        try c.require((0...1).contains(mixAlpha), .mixAlpha, expected: "a number in [0, 1]", found: mixAlpha)
        try c.require((0...1).contains(kdRatio), .kdRatio, expected: "a number in [0, 1]", found: kdRatio)
        try c.require(temperature > 0, .temperature, expected: "a number > 0", found: temperature)
        try c.require(skewLambda >= 0 && skewLambda < 1, .skewLambda, expected: "a number in [0, 1)", found: skewLambda)
        try c.require((0...1).contains(jsdBeta), .jsdBeta, expected: "a number in [0, 1]", found: jsdBeta)
    }
}
