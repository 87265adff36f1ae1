// Where a step's sequences come from: corpus windows at the global sample cursor, or sequences the student writes
// itself (on-policy: gkd, distillm with its replay buffer, minillm's rollouts; see OnPolicy.swift), with the data's
// per-example teacher routes. The part owns the token, target, route and weight buffers and hands the step a batch
// value; every choice is counter-based, so it is the same on every rank and at any world size.
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDData
import KDLoss
import KDModel

/// This rank's share of one step: where its samples start in the global batch, where they came from, and the global
/// count of loss tokens the loss is normalized by.
struct StepBatch {
    let rankFirst: Int, source: StepSource, reward: Double, routed: Bool, tokens: Int
}

/// One micro-batch's rows in the source's buffers. - Shapes: tokens, targets, route, ceWeights [b, t]
struct MicroBatch {
    let tokens: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>
    let b: Int, t: Int
    /// Per-row teacher routes (−1 = all teachers combined) when the data routes examples.
    let route: UnsafePointer<Int32>?
    /// Per-row cross-entropy weights of a rollout step (the policy-gradient coefficients).
    let ceWeights: UnsafePointer<Float>?
    /// Corpus windows of the rows (the offline cache reads rows by window), of the validation split when `validation`.
    let windows: [Int]
    let validation: Bool

    var teacherBatch: TeacherBatch {
        TeacherBatch(tokens: tokens, b: b, t: t, windows: windows, validation: validation, route: route, targets: targets)
    }
}

final class BatchSource: TrainerPart {
    let train: TrainConfig, policy: PolicyConfig
    let comm: any Communicator
    let sampler: WindowSampler
    let validation: WindowSampler?
    let inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>
    let routes: UnsafeMutablePointer<Int32>
    let ceWeights: UnsafeMutablePointer<Float>
    /// Whether examples carry teacher routes (the data routes them and there are teachers to route to).
    let routing: Bool
    /// distillm's threshold, replay buffer and last validation loss (nil for other policy modes).
    let distillm: DistiLLMState?
    /// Next global sample index; every rank advances it by the global batch each step.
    var cursor = 0
    /// Scratch of a vocabulary-wide row for the on-policy sampler's log-softmax.
    var rowScratch: [Float]

    /// `teachers`: teacher files loaded, `cache`: whether an offline cache stands in for them; `cross`: a teacher has
    /// another tokenizer.
    init(config: RunConfig, corpus: TokenCorpus, comm: any Communicator, teachers: Int, cache: Bool, cross: Bool) throws {
        let t = config.train
        train = t
        policy = config.policy
        self.comm = comm
        guard corpus.vocabSize <= config.model.vocabSize else {
            throw KDError.invalidInput(what: "model.vocab_size", expected: ">= the data's vocabulary (\(corpus.vocabSize) tokens)",
                                       found: "\(config.model.vocabSize)")
        }
        sampler = try WindowSampler(stream: corpus.train, mask: corpus.trainMask, seqLen: t.seqLen, seed: t.seed, bos: corpus.bos)
        validation = corpus.validation.count > t.seqLen
            ? try WindowSampler(stream: corpus.validation, mask: corpus.validationMask, seqLen: t.seqLen, seed: t.seed, split: "validation", bos: corpus.bos) : nil
        let maxRoute = [sampler.maxRoute, validation?.maxRoute].compactMap { $0 }.max()
        routing = maxRoute != nil && (teachers > 1 || cache)
        if routing, cross {
            throw KDError.invalidInput(what: "the data's \"teacher\" routes", expected: "teachers that share the student's tokenizer",
                                       found: "a teacher with another tokenizer (distill.cross_tokenizer)")
        }
        if let maxRoute, teachers > 0, maxRoute >= teachers {
            throw KDError.invalidInput(what: "the data's \"teacher\" routes", expected: "member indices below \(teachers) (teacher.members)",
                                       found: "index \(maxRoute)")
        }
        let rows = t.gradAccum * t.microBatch * t.seqLen
        inputs = .allocate(capacity: rows)
        targets = .allocate(capacity: rows)
        ceWeights = .allocate(capacity: rows)
        ceWeights.initialize(repeating: 0, count: rows)
        routes = .allocate(capacity: rows)
        routes.initialize(repeating: -1, count: rows)
        distillm = policy.mode == .distillm ? DistiLLMState(policy: policy, seqLen: t.seqLen) : nil
        rowScratch = policy.mode == .off ? [] : [Float](repeating: 0, count: config.model.vocabSize)
    }

    deinit {
        inputs.deallocate()
        targets.deallocate()
        ceWeights.deallocate()
        routes.deallocate()
    }

    /// Samples per optimizer step over all ranks.
    var globalBatch: Int { train.microBatch * train.gradAccum * comm.worldSize }

    /// Fills this rank's micro-batches for step `step` (corpus windows, or sequences `student` generates, scored by
    /// `teachers` for minillm) and counts the loss tokens of the whole global batch before any forward. Collective.
    func next(step: Int, student: Transformer, teachers: [(model: Transformer, weight: Float)], combine: TeacherCombine) throws -> StepBatch {
        let t = train, rows = t.microBatch * t.gradAccum
        // this rank's samples: a contiguous slice of the global batch, so the cursor is world-size independent
        let rankFirst = cursor + comm.rank * rows
        sampler.fill(inputs: inputs, targets: targets, first: rankFirst, count: rows)
        let source = stepSource(step)
        let reward = try prepareOnPolicyBatch(source, step: step, rankFirst: rankFirst, student: student, teachers: teachers, combine: combine)
        let routed = routing && source == .corpus
        if routed { sampler.fillRoutes(routes, first: rankFirst, count: rows) }
        var counts = [Double((0..<(rows * t.seqLen)).reduce(0) { $0 + (targets[$1] >= 0 ? 1 : 0) })]
        try comm.allReduceSum(&counts)
        return StepBatch(rankFirst: rankFirst, source: source, reward: reward, routed: routed, tokens: Int(counts[0]))
    }

    /// Micro-batch `i` of `batch`.
    func micro(_ i: Int, of batch: StepBatch) -> MicroBatch {
        let t = train, off = i * t.microBatch * t.seqLen, first = batch.rankFirst + i * t.microBatch
        return MicroBatch(tokens: inputs + off, targets: targets + off, b: t.microBatch, t: t.seqLen,
                          route: batch.routed ? UnsafePointer(routes + off) : nil,
                          ceWeights: batch.source == .rollout ? UnsafePointer(ceWeights + off) : nil,
                          windows: (0..<t.microBatch).map { sampler.windowStart(sample: first + $0) / t.seqLen }, validation: false)
    }

    /// Validation micro-batch `i` (sequential windows), in the buffers' first rows; nil without a validation split.
    func validationBatch(_ i: Int) -> MicroBatch? {
        guard let validation else { return nil }
        let b = train.microBatch
        validation.fillSequential(inputs: inputs, targets: targets, first: i * b, count: b)
        if routing { validation.fillRoutes(routes, first: i * b, count: b, sequential: true) }
        return MicroBatch(tokens: inputs, targets: targets, b: b, t: train.seqLen, route: routing ? UnsafePointer(routes) : nil, ceWeights: nil,
                          windows: (0..<b).map { (i * b + $0) % validation.windows }, validation: true)
    }

    /// After the step: the cursor moves on by the global batch.
    func advance() { cursor += globalBatch }

    func save(into contents: inout CheckpointContents?) throws { try distillm?.save(into: &contents) }
    func restore(from source: CheckpointSource?) throws { try distillm?.restore(from: source, comm: comm) }
}
