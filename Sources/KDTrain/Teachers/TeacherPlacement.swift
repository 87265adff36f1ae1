// Where the teacher's forward passes run and what of them reaches the student's rank: one type per placement
// (swift-nio's Channel implementations, our own Communicator), chosen once from the config by the registry below and
// never re-tested per micro-batch. Adding a placement is one new file in this folder plus one line in the registry.
import KDComm
import KDConfig
import KDCore
import KDLoss
import KDModel

/// One micro-batch for the teacher side.
public struct TeacherBatch {
    /// Tokens of the micro-batch. - Shapes: [b, t]
    public let tokens: UnsafePointer<Int32>
    public let b: Int, t: Int
    /// Its corpus windows (the offline cache reads rows by window), of the validation split when `validation`.
    public let windows: [Int]
    public let validation: Bool
    /// Per-row teacher routes (−1 = all teachers combined), when the data routes examples.
    public let route: UnsafePointer<Int32>?
    /// The next token of every position (−1: no loss there); a cross-tokenizer teacher reads the last one. - Shapes: [b, t]
    public var targets: UnsafePointer<Int32>? = nil
}

/// What the student's head needs from the teacher side for one micro-batch: teachers' final hidden states with their
/// LM heads (projected chunk by chunk at the student's rank), and/or top-k rows (log-probabilities + tail mass).
public struct TeacherOutput {
    public var members: [TeacherSource]
    public var topK: TopKRows?
    /// The first teacher's block outputs the hidden-state loss asks for (`distill.hidden_weight`), in the order of
    /// the placement's `hiddenBlocks`. - Shapes: each [b·t, dim]
    public var blockOutputs: [UnsafePointer<Float>] = []
    /// Teachers with other vocabularies (`distill.cross_tokenizer`): their top-k rows aligned to the student's rows.
    public var cross: [CrossTeacherRows] = []
    /// The weight of `members`/`topK` in the divergence term when cross-tokenizer teachers share it (else 1).
    public var sameWeight: Float = 1
    /// This micro-batch's alignment figures (cross-tokenizer teachers run here).
    public var alignment = AlignmentStats()
}

/// A way of running the teacher(s) for the student's micro-batches. As a part of the trainer it may carry state in
/// checkpoints and work after each update (the EMA self-teacher).
public protocol TeacherPlacement: TrainerPart {
    /// Scores one micro-batch. Collective where teachers are spread over ranks: every rank calls it, in step, with
    /// its own micro-batch.
    func output(for batch: TeacherBatch) throws -> TeacherOutput
    /// Bytes of teacher output that reach the student's rank per token (the exchange's size).
    var bytesPerToken: Int { get }
    /// Teachers in this process that can score sequences on demand (on-policy sampling), with their weights.
    var localTeachers: [(model: Transformer, weight: Float)] { get }
    /// One line for the log: where the teacher runs and what crosses to the student.
    var summary: String { get }
    /// Asks for the first teacher's outputs of `blocks` with every micro-batch (`TeacherOutput.blockOutputs`, the
    /// hidden-state loss); throws where the placement has none (the offline cache, self-teachers).
    func captureBlockOutputs(_ blocks: [Int]) throws
}

extension TeacherPlacement {
    public func captureBlockOutputs(_ blocks: [Int]) throws {
        throw KDError.invalidInput(what: "distill.hidden_weight", expected: "a live teacher (placement replicated, pipelined or groups; the offline cache and "
                                   + "self-teachers keep no block outputs)", found: summary)
    }
    public var localTeachers: [(model: Transformer, weight: Float)] { [] }
}

/// The teachers a run was handed against its config, before anything is allocated: one per source, the student's
/// vocabulary (unless aligned across tokenizers), a context of at least seq_len, and a cache that fits the objective.
func checkTeachers(_ config: RunConfig, teachers: [Transformer], cross: [Int: CrossTokenizerPair], initFrom: Transformer?,
                   cache: TeacherCache?) throws {
    let sources = config.teacher?.sources ?? []
    try checkCrossTokenizer(config, cross: cross, teachers: teachers, initFrom: initFrom, cache: cache)
    if !teachers.isEmpty, teachers.count != sources.count {
        throw KDError.invalidInput(what: "teachers", expected: "\(sources.count) (the config's teacher section)", found: "\(teachers.count) models")
    }
    for (i, teacher) in teachers.enumerated() {
        let name = i < sources.count ? sources[i].path : "teacher \(i + 1)"
        if cross[i] == nil, teacher.config.vocabSize != config.model.vocabSize {
            throw KDError.invalidInput(what: "teacher vocabulary", expected: "\(config.model.vocabSize) tokens (model.vocab_size of the student)",
                                       found: "\(teacher.config.vocabSize) tokens in \(name)")
        }
        if teacher.config.maxSeqLen < config.train.seqLen {
            throw KDError.invalidInput(what: "context of \(name)", expected: ">= train.seq_len (\(config.train.seqLen))", found: "\(teacher.config.maxSeqLen)")
        }
    }
    if let cache {
        if cache.isCrossTokenizer, config.distill.crossTokenizer == .off {
            throw KDError.invalidInput(what: "teacher.cache \(cache.dir)", expected: "distill.cross_tokenizer uld or gold (the cache holds a teacher "
                                       + "with another tokenizer)", found: "off")
        }
    } else if let c = config.teacher?.cache, !c.isEmpty {
        throw KDError.invalidInput(what: "teacher.cache", expected: "the cache \(c) opened", found: "none given to the trainer")
    }
}

/// The registry: the teacher side a config asks for (nil: no teacher, plain cross-entropy). `teachers` are the
/// loaded files in the config's order, `student` the freshly initialized student (a self-teacher copies it).
func makeTeacherPlacement(config: RunConfig, teachers: [Transformer], cache: TeacherCache?, student: Transformer,
                          comm: any Communicator, cross: [Int: CrossTokenizerPair] = [:]) throws -> (any TeacherPlacement)? {
    guard let tc = config.teacher else { return nil }
    let topK: (k: Int, temperature: Float)? = tc.exchange == .topk ? (min(tc.topK, config.model.vocabSize), config.distill.temperature) : nil
    if let cache { return OfflineTeacher(cache: cache) }
    switch tc.selfSource {
    case .initial, .ema:
        return SelfTeacherPlacement(student: student, ema: tc.selfSource == .ema ? tc.emaDecay : nil, topK: topK, lmHeadChunk: config.train.lmHeadChunk,
                                        comm: comm)
    case .none, .checkpoint:
        break
    }
    guard !teachers.isEmpty else { return nil }
    let weights = tc.sources.map(\.weight)
    // the placement asked for is the placement that runs (config validation refuses groups of one teacher and
    // pipelines of several); one rank's pipeline is one stage holding every block
    switch tc.placement {
    case .pipelined:
        guard cross.isEmpty else {
            throw KDError.invalidInput(what: "teacher.placement pipelined", expected: "a teacher with the student's tokenizer (cross_tokenizer runs "
                                       + "with replicated or groups)", found: "a teacher with another tokenizer")
        }
        guard teachers[0].config.layers >= comm.worldSize else {
            throw KDError.invalidInput(what: "teacher.placement pipelined", expected: "at least one teacher block per rank (\(comm.worldSize))",
                                       found: "\(teachers[0].config.layers) blocks")
        }
        return TeacherPipeline(teacher: teachers[0], comm: comm, topK: topK)
    case .groups:
        guard teachers.count > 1, comm.worldSize % teachers.count == 0 else {
            throw KDError.invalidInput(what: "teacher.placement groups", expected: "two or more teachers and a world size divisible by their number",
                                       found: "\(teachers.count) teacher\(teachers.count == 1 ? "" : "s") on \(comm.worldSize) rank\(comm.worldSize == 1 ? "" : "s")")
        }
        if topK != nil, tc.combine == .logits {
            throw KDError.invalidInput(what: "teacher.combine with groups and the top-k exchange", expected: "mixture (top-k rows carry no logits to average)",
                                       found: "logits")
        }
        return TeacherGroups(teachers: teachers, weights: weights, comm: comm, topK: topK, cross: cross.mapValues {
            CrossTokenizerTeacherSpec(pair: $0, k: tc.topK, temperature: config.distill.temperature) })
    case .replicated:
        return ReplicatedTeachers(teachers: teachers, weights: weights, combine: tc.combine, topK: topK, vocabSize: config.model.vocabSize,
                                  cross: cross.mapValues { CrossTokenizerTeacherSpec(pair: $0, k: tc.topK, temperature: config.distill.temperature) })
    }
}

extension Transformer {
    /// `forwardStage` over `layers`, handing the residual stream to `capture` right after each block of `stops` in
    /// the range (ascending): the same blocks in the same order as one call, so the result is bitwise the same.
    func forwardStage(_ layers: Range<Int>, capturingAfter stops: [Int], tokens: UnsafePointer<Int32>?, hidden: UnsafePointer<Float>?,
                      b: Int, t: Int, finalNorm: Bool, capture: (Int, UnsafePointer<Float>) -> Void) -> UnsafePointer<Float> {
        var next = layers.lowerBound, first = true
        for l in Set(stops).sorted() where layers.contains(l) {
            // later pieces continue on the stream in place (neither tokens nor hidden)
            capture(l, forwardStage(next..<(l + 1), tokens: first ? tokens : nil, hidden: first ? hidden : nil, b: b, t: t, finalNorm: false))
            (next, first) = (l + 1, false)
        }
        return forwardStage(next..<layers.upperBound, tokens: first ? tokens : nil, hidden: first ? hidden : nil, b: b, t: t, finalNorm: finalNorm)
    }
}
