// The training loop: micro-batches from the global sample cursor, gradient accumulation, loss normalized by the
// global loss-token count, clipping, AdamW with warmup + cosine, progress lines. Single process for now; every
// cross-rank step already goes through the Communicator so the MPI issue only swaps the implementation.
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDData
import KDFormats
import KDModel
import KDLoss
import KDOps
import KDQuant

/// What one optimizer step did.
public struct StepStats: Sendable {
    public var step: Int
    public var loss: Double
    public var tokens: Int
    public var lr: Float
    public var gradNorm: Double
    public var seconds: Double
    /// Time this step spent waiting for gradient all-reduces after backward (the part not hidden behind it).
    public var exposedCommSeconds: Double = 0
    /// Mean cross-entropy and mean divergence per loss token (loss = (1 − r)·ce + r·[T²]·kd); kd is 0 without a teacher.
    public var ce: Double = 0
    public var kd: Double = 0
    /// Where the step's sequences came from, and for rollouts the mean per-token reward log p − log q.
    public var source: StepSource = .corpus
    public var reward: Double = 0
    /// Share of loss tokens where the student's most likely token was the teacher's (0 without a teacher).
    public var agreement: Double = 0
    /// Mean hidden-state loss per loss token and block pair (`distill.hidden_weight`; 0 when off).
    public var hidden: Double = 0
    /// Rank 0's clock says a time-based checkpoint (`checkpoint.every_minutes`) is due after this step.
    public var checkpointDue = false
}

/// Trains a student on next-token cross-entropy.
public final class Trainer {
    /// The run's config; a student cut from a sliding-window teacher gets its blocks' attention kinds in model.global_layers.
    public private(set) var config: RunConfig
    public let model: Transformer
    /// The teacher blocks a student cut from its teacher kept (listed or measured, `student.select`); empty otherwise.
    public private(set) var cutBlocks: [Int] = []
    /// The teacher's residual-stream channels a student cut narrower kept (hidden-dim pruning); nil otherwise.
    public private(set) var cutChannels: [Int]?
    /// Hidden-state distillation: (student block, teacher block) pairs whose outputs are matched; empty when off.
    public private(set) var hiddenPairs: [(student: Int, teacher: Int)] = []
    /// The teacher's block outputs for the current micro-batch (aligned with hiddenPairs), and this step's loss sum.
    var teacherBlockOutputs: [UnsafePointer<Float>] = []
    var hiddenSum = 0.0
    /// For a student cut narrower: the teacher's block outputs on the kept channels, one [rows, dim] buffer per pair.
    var narrowedBlockOutputs: [Slab] = []
    /// For a student of another width not cut from its teacher: the learned projections to the teacher's width.
    var hiddenProjection: HiddenProjection?
    public let comm: any Communicator
    let sampler: WindowSampler
    let validation: WindowSampler?
    /// AdamW over this rank's range of the slab (all of it unless `optimizer.sharding` splits it).
    public let optimizer: Optimizer
    /// The gradient exchange: all-reduce, or reduce-scatter with `sharding: gradients`.
    public let sync: GradientSync
    /// QAT masters, masks and scales (nil without QAT).
    public let qat: QATState?
    /// Next global sample index; every rank advances it by the global batch each step.
    public internal(set) var sampleCursor = 0
    /// Optimizer steps completed.
    public internal(set) var step = 0
    /// Learning rate of the last step.
    public internal(set) var lastLR: Float = 0
    /// Some rank received SIGINT/SIGTERM/SIGUSR1: `run` stops after this step with a checkpoint.
    public internal(set) var stopRequested = false
    /// When the last checkpoint was written or loaded, or training began (for `checkpoint.every_minutes`).
    var lastCheckpointTime = monotonicSeconds()
    /// Rank 0's metrics log (`metrics.jsonl` and TensorBoard events); nil = not written.
    public var metrics: MetricsLog?
    let inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>
    /// Per-row teacher routes from the data (−1 = all teachers combined), when the corpus routes examples.
    let routeBuffer: UnsafeMutablePointer<Int32>
    public let routing: Bool
    /// Per-row cross-entropy weights of rollout steps (the policy-gradient coefficients).
    let ceWeightBuffer: UnsafeMutablePointer<Float>
    /// distillm's threshold, replay buffer and last validation loss (nil for other policy modes).
    public let distillm: DistiLLMState?
    /// distillm: the probability of a student-generated step.
    public var policyThreshold: Float { distillm?.threshold ?? 0 }
    /// distillm: student-generated sequences kept for replay.
    public var replay: ReplayBuffer? { distillm?.replay }

    /// The teachers from files (every rank holds them; with `groups` each rank runs only its group's), their weights,
    /// and their files, for the checkpoint manifest.
    public let teachers: [Transformer]
    /// Where the teachers run and what reaches this rank (nil: no teacher, plain cross-entropy).
    public let placement: (any TeacherPlacement)?
    public let teacherManifest: [TeacherManifestEntry]
    public var allowTeacherChange = false
    /// Files every checkpoint carries besides the tensors (the data's tokenizer), by ``CheckpointFile`` name.
    public var extraCheckpointFiles: [String: Data] = [:]

    /// Self-distillation: the student's own frozen initial weights, or an EMA of them.
    public var selfTeacher: Transformer? { (placement as? SelfTeacherPlacement)?.model }
    /// Whether the loss has a distillation term.
    public var hasTeacher: Bool { placement != nil }
    /// The first teacher (the only one unless the config lists members).
    public var teacher: Transformer? { selfTeacher ?? teachers.first }
    var combine: TeacherCombine { config.teacher?.combine ?? .mixture }
    /// Bytes of teacher output that reach a student rank per token (the exchange's size).
    public var teacherBytesPerToken: Int { placement?.bytesPerToken ?? 0 }
    /// Teachers (by index) with another tokenizer than the student's (`distill.cross_tokenizer`).
    public let crossTeachers: Set<Int>
    /// Alignment figures of this rank's training micro-batches so far (cross-tokenizer teachers run on this rank).
    public internal(set) var alignment = AlignmentStats()
    /// Whether the micro-batches being scored are training ones (their alignment figures are counted).
    var countingAlignment = false

    /// One teacher: `init(…, teacher:)`; several (`teacher.members`): `teachers`, in the config's order.
    public convenience init(config: RunConfig, corpus: TokenCorpus, comm: any Communicator = LocalCommunicator(),
                            teacher: Transformer?, teacherManifest: [TeacherManifestEntry] = []) throws {
        try self.init(config: config, corpus: corpus, comm: comm, teachers: teacher.map { [$0] } ?? [], teacherManifest: teacherManifest)
    }

    public init(config: RunConfig, corpus: TokenCorpus, comm: any Communicator = LocalCommunicator(),
                teachers: [Transformer] = [], teacherManifest: [TeacherManifestEntry] = [], teacherCache: TeacherCache? = nil,
                initFrom: Transformer? = nil, crossTokenizers: [Int: CrossTokenizerPair] = [:]) throws {
        try config.validate()
        self.config = config
        self.comm = comm
        let sources = config.teacher?.sources ?? []
        crossTeachers = Set(crossTokenizers.keys)
        try checkCrossTokenizer(config, cross: crossTokenizers, teachers: teachers, initFrom: initFrom, cache: teacherCache)
        if !teachers.isEmpty, teachers.count != sources.count {
            throw KDError.invalidInput(what: "teachers", expected: "\(sources.count) (the config's teacher section)", found: "\(teachers.count) models")
        }
        for (i, teacher) in teachers.enumerated() {
            let name = i < sources.count ? sources[i].path : "teacher \(i + 1)"
            if crossTokenizers[i] == nil, teacher.config.vocabSize != config.model.vocabSize {
                throw KDError.invalidInput(what: "teacher vocabulary", expected: "\(config.model.vocabSize) tokens (model.vocab_size of the student)",
                                           found: "\(teacher.config.vocabSize) tokens in \(name)")
            }
            if teacher.config.maxSeqLen < config.train.seqLen {
                throw KDError.invalidInput(what: "context of \(name)", expected: ">= train.seq_len (\(config.train.seqLen))", found: "\(teacher.config.maxSeqLen)")
            }
        }
        self.teachers = teachers
        self.teacherManifest = teacherManifest
        let t = config.train
        guard corpus.vocabSize <= config.model.vocabSize else {
            throw KDError.invalidInput(what: "model.vocab_size", expected: ">= the data's vocabulary (\(corpus.vocabSize) tokens)",
                                       found: "\(config.model.vocabSize)")
        }
        if let cache = teacherCache {
            try cache.check(corpus: corpus, seqLen: t.seqLen, temperature: config.distill.temperature)
            if cache.isCrossTokenizer, config.distill.crossTokenizer == .off {
                throw KDError.invalidInput(what: "teacher.cache \(cache.dir)", expected: "distill.cross_tokenizer uld or gold (the cache holds a teacher "
                                           + "with another tokenizer)", found: "off")
            }
        } else if let c = config.teacher?.cache, !c.isEmpty {
            throw KDError.invalidInput(what: "teacher.cache", expected: "the cache \(c) opened", found: "none given to the trainer")
        }
        sampler = try WindowSampler(stream: corpus.train, mask: corpus.trainMask, seqLen: t.seqLen, seed: t.seed, bos: corpus.bos)
        validation = corpus.validation.count > t.seqLen
            ? try WindowSampler(stream: corpus.validation, mask: corpus.validationMask, seqLen: t.seqLen, seed: t.seed, split: "validation", bos: corpus.bos) : nil
        let cutSource = config.student.initFrom == .fromTeacher ? initFrom ?? teachers.first : nil
        if config.student.initFrom == .fromTeacher {
            guard let cutSource else {
                throw KDError.invalidInput(what: "student.init from_teacher", expected: "a teacher to cut the student from", found: "none loaded")
            }
            try checkCut(config, source: cutSource)
        }
        try checkHiddenLayers(config, teacher: teachers.first)
        var kept: [Int] = []
        if let cutSource {
            kept = try studentBlocks(from: cutSource, config: config, calibration: sampler, comm: comm)
            var resolved = config
            resolved.model = try cutModelConfig(config.model, teacher: cutSource.config, kept: kept)
            self.config = resolved
        }
        let config = self.config
        model = Transformer(config: config.model, needsGrad: true, lmHeadChunk: t.lmHeadChunk)
        model.initialize(seed: t.seed)
        if let cutSource {
            let cut = try cutStudent(model, from: cutSource, config: config, kept: kept, calibration: sampler, comm: comm)
            (cutBlocks, cutChannels) = (cut.blocks, cut.channels)
        }
        // sharded state: each rank owns a contiguous, row-aligned range of the slab (ZeRO-1/2)
        let sharding = config.optimizer.sharding
        let shard = sharding == .none ? SlabShard(whole: model.layout.count) : SlabShard(layout: model.layout, worldSize: comm.worldSize, rank: comm.rank)
        optimizer = Optimizer(config: config.optimizer, layout: model.layout, shard: shard, comm: comm, totalSteps: t.steps)
        sync = GradientSync(comm: comm, model: model, shard: shard, scatter: sharding == .gradients)
        qat = config.qat.enabled ? QATState(config: config.qat, model: model, shard: shard, comm: comm) : nil
        let rows = t.gradAccum * t.microBatch * t.seqLen
        inputs = .allocate(capacity: rows)
        targets = .allocate(capacity: rows)
        ceWeightBuffer = .allocate(capacity: rows)
        ceWeightBuffer.initialize(repeating: 0, count: rows)
        routeBuffer = .allocate(capacity: rows)
        routeBuffer.initialize(repeating: -1, count: rows)
        let maxRoute = [sampler.maxRoute, validation?.maxRoute].compactMap { $0 }.max()
        routing = maxRoute != nil && (teachers.count > 1 || teacherCache != nil)
        if routing, !crossTokenizers.isEmpty {
            throw KDError.invalidInput(what: "the data's \"teacher\" routes", expected: "teachers that share the student's tokenizer",
                                       found: "a teacher with another tokenizer (distill.cross_tokenizer)")
        }
        if let maxRoute, !teachers.isEmpty, maxRoute >= teachers.count {
            throw KDError.invalidInput(what: "the data's \"teacher\" routes", expected: "member indices below \(teachers.count) (teacher.members)",
                                       found: "index \(maxRoute)")
        }
        distillm = config.policy.mode == .distillm ? DistiLLMState(policy: config.policy, seqLen: t.seqLen) : nil
        placement = try makeTeacherPlacement(config: config, teachers: teachers, cache: teacherCache, student: model, comm: comm,
                                             cross: crossTokenizers)
        if config.distill.hiddenWeight > 0 {
            switch config.distill.hiddenLayers {
            case .auto: hiddenPairs = cutBlocks.enumerated().map { ($0, $1) }
            case .pairs(let p): hiddenPairs = p.map { ($0[0], $0[1]) }
            }
            guard let placement else {
                throw KDError.invalidInput(what: "distill.hidden_weight", expected: "a teacher whose block outputs to match", found: "no teacher")
            }
            try placement.captureBlockOutputs(hiddenPairs.map(\.teacher))
            let teacherDim = teachers[0].config.dim
            if cutChannels != nil {
                narrowedBlockOutputs = hiddenPairs.map { _ in Slab(count: t.microBatch * t.seqLen * config.model.dim) }
            } else if teacherDim != config.model.dim {
                let p = HiddenProjection(pairs: hiddenPairs.count, studentDim: config.model.dim, teacherDim: teacherDim, rows: t.microBatch * t.seqLen, comm: comm)
                KDLog.info(String(format: "  hidden-state loss through learned projections %d → %d, one per pair (%d pairs, %.2fM parameters, not exported)",
                                  config.model.dim, teacherDim, hiddenPairs.count, Double(p.parameterCount) / 1e6))
                hiddenProjection = p
            }
        }
        try refreshWeights()
    }

    /// QAT: whether the current step trains with quantization (from qat.start_step on).
    public var qatActive: Bool { qat?.active(step: step) ?? false }

    /// QAT: the model's weights of this rank's range from its masters; then, with a split slab, every rank's range
    /// all-gathered (collective).
    func refreshWeights() throws {
        guard let qat else { return }
        qat.refresh(step: step)
        try gatherWeights()
    }

    /// Every rank's range of the model's weights to every rank, when the slab is split (collective).
    func gatherWeights() throws {
        if optimizer.shard.isSplit { try comm.allGather(model.params.base, counts: optimizer.shard.counts) }
    }

    deinit {
        inputs.deallocate()
        targets.deallocate()
        ceWeightBuffer.deallocate()
        routeBuffer.deallocate()
    }

    /// Samples per optimizer step over all ranks.
    public var globalBatch: Int { config.train.microBatch * config.train.gradAccum * comm.worldSize }

    /// One optimizer step (llm.c's forward, zero_grad, backward, update; each part owns its state):
    public func trainStep() throws -> StepStats {
        let start = monotonicSeconds()
        let batch = try nextBatch()                                // corpus | rollouts | replay; the global token count
        model.grads!.zero()
        let local = try forwardBackward(batch)                     // teacher target, forward, backward per micro-batch
        try sync.finish()                                          // all-reduced (or reduce-scattered) gradient
        let totals = try agree(local, batch)                       // losses, stop flag, checkpoint clock across ranks
        let g = model.grads!.base
        qat?.prepareGradient(g, step: step)                        // LSQ scale gradient, straight-through masks
        let norm = try optimizer.clip(grads: g)                    // global norm over every rank's range
        guard totals.loss.isFinite else { throw KDError.nonFinite(what: "training loss", step: step + 1) }
        guard norm.isFinite else { throw KDError.nonFinite(what: "gradient norm", step: step + 1) }
        let lr = optimizer.learningRate(step: step)
        optimizer.step(params: ownedWeights, grads: g, lr: lr, t: step + 1)  // AdamW on this rank's range
        try hiddenProjection?.step(lr: lr, optimizer: config.optimizer, t: step + 1)  // the hidden-state loss's maps
        qat?.updateScales(lr: lr, optimizer: config.optimizer, step: step)
        try placement?.afterUpdate(weights: ownedWeights, shard: optimizer.shard, comm: comm)  // the EMA teacher
        step += 1
        lastLR = lr
        qat?.refresh(step: step)                                   // fake-quantized weights from the masters
        try gatherWeights()                                        // every rank's range to every rank (sharded)
        sampleCursor += globalBatch
        return StepStats(step: step, loss: totals.loss, tokens: batch.tokens, lr: lr, gradNorm: norm, seconds: monotonicSeconds() - start,
                         exposedCommSeconds: sync.exposedSeconds, ce: totals.ce, kd: totals.kd, source: batch.source, reward: batch.reward,
                         agreement: totals.agreement, hidden: totals.hidden, checkpointDue: totals.checkpointDue)
    }

    /// This rank's step: where its samples start in the global batch, where they came from, and the global count of
    /// loss tokens the loss is normalized by.
    struct StepBatch {
        let rankFirst: Int, source: StepSource, reward: Double, routed: Bool, tokens: Int
    }

    /// The full-precision weights of this rank's range (QAT masters, or the model's own).
    var ownedWeights: UnsafeMutablePointer<Float> { qat?.weights ?? model.params.base + optimizer.shard.range.lowerBound }

    /// Fills this rank's micro-batches (corpus windows, or student-generated sequences) and counts the loss tokens of
    /// the whole global batch before any forward.
    func nextBatch() throws -> StepBatch {
        let t = config.train, rows = t.microBatch * t.gradAccum
        // this rank's samples: a contiguous slice of the global batch, so the cursor is world-size independent
        let rankFirst = sampleCursor + comm.rank * rows
        sampler.fill(inputs: inputs, targets: targets, first: rankFirst, count: rows)
        let source = stepSource(step)
        let reward = try prepareOnPolicyBatch(source, rankFirst: rankFirst)
        let routed = routing && source == .corpus
        if routed { sampler.fillRoutes(routeBuffer, first: rankFirst, count: rows) }
        var counts = [Double((0..<(rows * t.seqLen)).reduce(0) { $0 + (targets[$1] >= 0 ? 1 : 0) })]
        try comm.allReduceSum(&counts)
        return StepBatch(rankFirst: rankFirst, source: source, reward: reward, routed: routed, tokens: Int(counts[0]))
    }

    /// Every micro-batch's teacher target, forward and backward (accumulating into the gradient slab); the last one
    /// hands each finished gradient region to the exchange while backward goes on.
    func forwardBackward(_ batch: StepBatch) throws -> LossSum {
        let t = config.train, perMicro = t.microBatch * t.seqLen
        let scale = Float(1 / Double(max(batch.tokens, 1)))
        var local = LossSum()
        let hooks = sync.hooks
        for micro in 0..<t.gradAccum {
            let first = batch.rankFirst + micro * t.microBatch
            // the offline cache reads rows by corpus window
            let windows = (0..<t.microBatch).map { sampler.windowStart(sample: first + $0) / t.seqLen }
            countingAlignment = true
            var target = try distillTarget(TeacherBatch(tokens: inputs + micro * perMicro, b: t.microBatch, t: t.seqLen, windows: windows,
                                                        validation: false, route: batch.routed ? UnsafePointer(routeBuffer + micro * perMicro) : nil,
                                                        targets: targets + micro * perMicro))
            countingAlignment = false
            if batch.source != .corpus {
                // student-generated sequences: the divergence only (cross-entropy on its own samples would teach nothing),
                // plus the policy-gradient term on rollouts
                target?.kdRatio = 1
                if batch.source == .rollout { target?.ceWeights = UnsafePointer(ceWeightBuffer + micro * perMicro) }
            }
            model.forward(tokens: inputs + micro * perMicro, b: t.microBatch, t: t.seqLen)
            let last = micro == t.gradAccum - 1 && sync.active
            local = local + model.backward(
                targets: targets + micro * perMicro, lossScale: scale, deferEmbedding: last, distill: target,
                onHeadDone: last ? hooks.head : nil, onBlockDone: last ? hooks.block : nil, progress: last ? hooks.progress : nil,
                blockOutputGradient: hiddenPairs.isEmpty ? nil : { l, dx in self.addHiddenStateGradient(block: l, dx: dx, micro: micro, scale: scale) })
        }
        return local
    }

    /// Hidden-state distillation at student block l: w/pairs · lossScale · ∂/∂h of ‖h − h_teacher‖²/‖h_teacher‖² into dx,
    /// the loss into this step's sum.
    func addHiddenStateGradient(block l: Int, dx: UnsafeMutablePointer<Float>, micro: Int, scale: Float) {
        let t = config.train, n = t.microBatch * t.seqLen, w = config.distill.hiddenWeight / Float(hiddenPairs.count)
        for (k, pair) in hiddenPairs.enumerated() where pair.student == l {
            if let p = hiddenProjection {
                hiddenSum += p.loss(pair: k, student: model.blockOutput(l), teacher: teacherBlockOutputs[k], rows: n, targets: targets + micro * n,
                                    dx: dx, scale: w * scale)
            } else {
                hiddenSum += hiddenStateLoss(student: model.blockOutput(l), teacher: teacherBlockOutputs[k], rows: n, c: config.model.dim,
                                             targets: targets + micro * n, grad: dx, scale: w * scale)
            }
        }
    }

    /// The step's figures summed over ranks. The stop flag and rank 0's checkpoint clock ride on the same all-reduce,
    /// so every rank acts after the same step.
    func agree(_ local: LossSum, _ batch: StepBatch) throws -> (loss: Double, ce: Double, kd: Double, agreement: Double, checkpointDue: Bool, hidden: Double) {
        let minutes = config.checkpoint.everyMinutes
        let due = comm.rank == 0 && minutes > 0 && monotonicSeconds() - lastCheckpointTime >= 60 * minutes
        var sums = [local.sum, local.kdSum, StopSignal.requested ? 1 : 0, Double(local.agree), due ? 1 : 0, hiddenSum]
        hiddenSum = 0
        try comm.allReduceSum(&sums)
        if sums[2] > 0 { stopRequested = true }
        let n = Double(max(batch.tokens, 1)), ce = sums[0] / n, kd = sums[1] / n
        let d = config.distill, t2 = Double(d.t2Scale ? d.temperature * d.temperature : 1)
        let hidden = hiddenPairs.isEmpty ? 0 : sums[5] / n / Double(hiddenPairs.count)
        let loss = (!hasTeacher ? ce : batch.source != .corpus ? t2 * kd : Double(1 - d.kdRatio) * ce + Double(d.kdRatio) * t2 * kd)
            + Double(d.hiddenWeight) * hidden
        return (loss, ce, kd, sums[3] / n, sums[4] > 0, hidden)
    }

    /// The divergence term's name in progress lines and metrics: the objective, or with teachers of another tokenizer
    /// `uld` or `gold_<objective>` (gold's buckets use the objective).
    public var kdLabel: String {
        let d = config.distill
        let cross = !crossTeachers.isEmpty || (placement as? OfflineTeacher)?.cache.isCrossTokenizer == true
        guard cross else { return d.objective.rawValue }
        switch d.crossTokenizer {
        case .uld: return "uld"
        case .gold, .off: return "gold_\(d.objective.rawValue)"
        }
    }

    /// The divergence named by the config.
    public var divergence: Divergence {
        let d = config.distill
        switch d.objective {
        case .fkl: return .forwardKL
        case .rkl: return .reverseKL
        case .skewFKL: return .skewForwardKL(lambda: d.skewLambda)
        case .skewRKL: return .skewReverseKL(lambda: d.skewLambda)
        case .jsd: return .jsd(beta: d.jsdBeta)
        case .tvd: return .tvd
        case .fklRKL: return .mixedKL(alpha: d.mixAlpha)
        }
    }

    /// The distillation target of one micro-batch from the teacher side (collective when teachers are spread over
    /// ranks); nil without a teacher.
    func distillTarget(_ batch: TeacherBatch) throws -> DistillTarget? {
        guard let placement else { return nil }
        let out = try placement.output(for: batch), d = config.distill
        teacherBlockOutputs = out.blockOutputs
        if let channels = cutChannels, !teacherBlockOutputs.isEmpty {
            // a student cut narrower matches the teacher's stream on the channels it kept
            let wide = teachers[0].config.dim, rows = config.train.microBatch * config.train.seqLen
            for (k, src) in teacherBlockOutputs.enumerated() {
                let dst = narrowedBlockOutputs[k].base
                for r in 0..<rows { for (j, c) in channels.enumerated() { dst[r * channels.count + j] = src[r * wide + c] } }
                teacherBlockOutputs[k] = UnsafePointer(dst)
            }
        }
        var target = DistillTarget(teachers: out.members.isEmpty ? nil : TeacherEnsemble(members: out.members, combine: combine, route: batch.route),
                                   divergence: divergence, temperature: d.temperature, kdRatio: d.kdRatio, t2Scale: d.t2Scale)
        target.topK = out.topK
        if !out.cross.isEmpty {
            target.cross = out.cross
            target.sameWeight = out.sameWeight
            target.crossLoss = d.crossTokenizer == .uld ? .uld : .gold
            target.uldWeight = d.uldWeight
            if countingAlignment { alignment = alignment + out.alignment }
        }
        return target
    }
}
