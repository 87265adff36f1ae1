// A teacher with another tokenizer than the student's (`distill.cross_tokenizer`): each student window is decoded to
// its bytes, re-tokenized by the teacher (KDFormats/TokenAlignment.swift), run through the teacher, and the teacher's
// top-k rows at the aligned positions are laid out on the student's rows (an unaligned row gets id −1 first). The
// top-k rows are in the teacher's vocabulary; the student's head maps them (KDLoss/CrossTokenizer.swift).
import Foundation
import KDConfig
import KDCore
import KDFormats
import KDLoss
import KDModel

/// Alignment figures summed over the windows seen (what the log and the metrics report).
public struct AlignmentStats: Sendable {
    /// Student positions with a loss target, those with an aligned teacher position, and those also matched.
    public var positions = 0, aligned = 0, matched = 0
    /// Teacher tokens per student token (the teacher's sequences are this much longer or shorter).
    public var teacherTokens = 0, studentTokens = 0
    /// Seconds spent decoding, re-tokenizing and aligning.
    public var seconds = 0.0

    public var alignedShare: Double { Double(aligned) / Double(max(positions, 1)) }
    public var matchedShare: Double { Double(matched) / Double(max(positions, 1)) }
    public static func + (a: AlignmentStats, b: AlignmentStats) -> AlignmentStats {
        AlignmentStats(positions: a.positions + b.positions, aligned: a.aligned + b.aligned, matched: a.matched + b.matched,
                       teacherTokens: a.teacherTokens + b.teacherTokens, studentTokens: a.studentTokens + b.studentTokens,
                       seconds: a.seconds + b.seconds)
    }
    public static func - (a: AlignmentStats, b: AlignmentStats) -> AlignmentStats {
        AlignmentStats(positions: a.positions - b.positions, aligned: a.aligned - b.aligned, matched: a.matched - b.matched,
                       teacherTokens: a.teacherTokens - b.teacherTokens, studentTokens: a.studentTokens - b.studentTokens,
                       seconds: a.seconds - b.seconds)
    }
    /// As Doubles, for an all-reduce: positions, aligned, matched, teacher tokens, student tokens, seconds.
    public var values: [Double] { [Double(positions), Double(aligned), Double(matched), Double(teacherTokens), Double(studentTokens), seconds] }
    public init(values v: [Double]) {
        (positions, aligned, matched, teacherTokens, studentTokens, seconds) = (Int(v[0]), Int(v[1]), Int(v[2]), Int(v[3]), Int(v[4]), v[5])
    }
    public init(positions: Int = 0, aligned: Int = 0, matched: Int = 0, teacherTokens: Int = 0, studentTokens: Int = 0, seconds: Double = 0) {
        (self.positions, self.aligned, self.matched, self.teacherTokens, self.studentTokens, self.seconds) =
            (positions, aligned, matched, teacherTokens, studentTokens, seconds)
    }
}

/// The student's and one teacher's tokenizers, for a teacher that does not share the student's vocabulary.
public struct CrossTokenizerPair: Sendable {
    public let aligner: TokenAligner
    public let map: VocabularyMap
    public init(student: BPETokenizer, teacher: BPETokenizer, teacherRows: Int) {
        aligner = TokenAligner(student: student, teacher: teacher)
        map = aligner.vocabularyMap(teacherRows: teacherRows)
    }
}

/// What a placement needs to run a teacher with another tokenizer.
struct CrossTokenizerTeacherSpec {
    let pair: CrossTokenizerPair
    /// k of its top-k rows (`teacher.top_k`) and the distillation temperature.
    let k: Int, temperature: Float
}

/// Runs one cross-tokenizer teacher on student micro-batches and returns its top-k rows on the student's rows.
final class CrossTokenizerTeacher {
    let model: Transformer
    let pair: CrossTokenizerPair
    let k: Int, temperature: Float
    let map: UnsafeMutablePointer<Int32>
    var rows: TopKBuffer?
    var gathered: Slab?
    var stats = AlignmentStats()
    /// The figures of the last call.
    var last = AlignmentStats()

    init(model: Transformer, spec: CrossTokenizerTeacherSpec) {
        self.model = model
        pair = spec.pair
        k = min(spec.k, model.config.vocabSize)
        temperature = spec.temperature
        map = .allocate(capacity: pair.map.teacherToStudent.count)
        map.initialize(from: pair.map.teacherToStudent, count: pair.map.teacherToStudent.count)
    }
    deinit { map.deallocate() }

    /// The teacher's top-k rows (its vocabulary) for the b × t student rows of `tokens`; `targets` gives each row's
    /// next tokens (the last position's target extends the window; −1 = no loss there). The figures count the first
    /// `counted` rows (all by default; a cache's short last slice repeats a window it does not write).
    func output(tokens: UnsafePointer<Int32>, targets: UnsafePointer<Int32>?, b: Int, t: Int, counted: Int? = nil) -> TopKBuffer {
        let before = stats
        defer { last = stats - before }
        let start = monotonicSeconds(), n = b * t, cap = model.config.maxSeqLen
        var alignments: [WindowAlignment] = []
        for row in 0..<b {
            let next = targets.map { $0[row * t + t - 1] } ?? -1
            alignments.append(pair.aligner.align(tokens + row * t, t: t, next: next, maxTeacherTokens: cap))
        }
        // rounded up to 16 so the activation buffers are not rebuilt for every length
        let tt = min(cap, (max(1, alignments.map(\.teacherTokens.count).max() ?? 1) + 15) / 16 * 16)
        // pad every row to the longest (positions past a row's end are never read: attention is causal)
        var teacherTokens = [Int32](repeating: pair.aligner.teacher.eos ?? 0, count: b * tt)
        let counted = min(counted ?? b, b)
        for (row, a) in alignments.enumerated() {
            for (j, id) in a.teacherTokens.enumerated() { teacherTokens[row * tt + j] = id }
            if row < counted { stats.teacherTokens += a.teacherTokens.count }
        }
        stats.studentTokens += counted * t
        for row in 0..<counted {
            for i in 0..<t where targets.map({ $0[row * t + i] >= 0 }) ?? true {
                stats.positions += 1
                if alignments[row].teacherPosition[i] >= 0 { stats.aligned += 1 }
                if alignments[row].matched[i] { stats.matched += 1 }
            }
        }
        stats.seconds += monotonicSeconds() - start
        teacherTokens.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: b, t: tt) }
        // the aligned positions' final hidden states on the student's rows (zeros elsewhere), then their top-k rows
        let c = model.config.dim, h = model.finalHidden
        if gathered?.count != n * c { gathered = Slab(count: n * c) }
        let dst = gathered!.base
        for row in 0..<b {
            for i in 0..<t {
                let j = Int(alignments[row].teacherPosition[i])
                if j >= 0 { (dst + (row * t + i) * c).update(from: h + (row * tt + j) * c, count: c) } else { (dst + (row * t + i) * c).update(repeating: 0, count: c) }
            }
        }
        if rows?.n != n { rows = TopKBuffer(n: n, k: k) }
        let out = rows!
        out.fill(head: model.lmHeadWeight, hidden: dst, temperature: temperature, chunk: 256)
        for row in 0..<b {
            for i in 0..<t where alignments[row].teacherPosition[i] < 0 { out.ids[(row * t + i) * k] = -1 }
        }
        return out
    }
}

/// What a run with teachers of another tokenizer cannot combine, refused before anything is allocated.
func checkCrossTokenizer(_ config: RunConfig, cross: [Int: CrossTokenizerPair], teachers: [Transformer], initFrom: Transformer?,
                         cache: TeacherCache?) throws {
    guard !cross.isEmpty else { return }
    func refuse(_ what: String, _ expected: String, _ found: String) throws {
        throw KDError.invalidInput(what: what, expected: expected, found: found)
    }
    if config.distill.crossTokenizer == .off {
        try refuse("distill.cross_tokenizer", "uld or gold for teachers with another tokenizer", "off")
    }
    if config.distill.hiddenWeight > 0, cross[0] != nil {
        try refuse("distill.hidden_weight", "a first teacher with the student's tokenizer (block outputs are matched position by position)",
                   "teacher 1 with another tokenizer")
    }
    if config.student.initFrom == .fromTeacher, initFrom == nil, cross[0] != nil {
        try refuse("student.init from_teacher", "student.teacher naming a model with the student's tokenizer to cut from",
                   "teacher 1, which has another tokenizer")
    }
    if config.policy.mode == .minillm || (config.policy.mode != .off && config.policy.teacherMix > 0) {
        try refuse("policy", "no teacher sampling or scoring in the student's vocabulary (mode minillm, teacher_mix) with a teacher of another tokenizer",
                   "mode \(config.policy.mode.rawValue), teacher_mix \(config.policy.teacherMix)")
    }
}
