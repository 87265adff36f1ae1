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
    /// Rank 0's clock says a time-based checkpoint (`checkpoint.every_minutes`) is due after this step.
    public var checkpointDue = false
}

/// Trains a student on next-token cross-entropy.
public final class Trainer {
    public let config: RunConfig
    public let model: Transformer
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
    public private(set) var sampleCursor = 0
    /// Optimizer steps completed.
    public private(set) var step = 0
    /// Learning rate of the last step.
    public private(set) var lastLR: Float = 0
    /// Some rank received SIGINT/SIGTERM/SIGUSR1: `run` stops after this step with a checkpoint.
    public private(set) var stopRequested = false
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
    /// distillm: the probability of a student-generated step, the replay buffer, the last validation loss.
    public internal(set) var policyThreshold: Float = 0
    public internal(set) var replay: ReplayBuffer?
    var lastValLoss: Double?

    /// The teachers from files (every rank holds them; with `groups` each rank runs only its group's), their weights,
    /// and their files, for the checkpoint manifest.
    public let teachers: [Transformer]
    public let teacherWeights: [Float]
    /// Self-distillation: the student's own frozen initial weights, an EMA of them, or an earlier checkpoint's.
    public let selfTeacher: Transformer?
    public let teacherManifest: [TeacherManifestEntry]
    public var allowTeacherChange = false
    /// Files every checkpoint carries besides the tensors (the tokenizer.json of the data's tokenizer).
    public var extraCheckpointFiles: [String: Data] = [:]
    var pipeline: TeacherPipeline?
    var groups: TeacherGroups?
    /// The offline teacher: top-k rows per corpus window (`teacher.cache`).
    public let teacherCache: TeacherCache?
    /// Replicated placement with the top-k exchange computes its top-k rows locally, into here.
    var localTopK: TopKBuffer?

    /// The models that act as teachers on this rank (the files' teachers, or the self-teacher).
    var activeTeachers: [Transformer] { selfTeacher.map { [$0] } ?? teachers }
    /// Whether the loss has a distillation term.
    public var hasTeacher: Bool { !activeTeachers.isEmpty || teacherCache != nil }
    /// The first teacher (the only one unless the config lists members).
    public var teacher: Transformer? { activeTeachers.first }

    var topKSpec: (k: Int, temperature: Float)? {
        if let c = teacherCache { return (c.info.k, c.info.temperature) }
        guard let tc = config.teacher, tc.exchange == "topk" else { return nil }
        return (min(tc.topK, config.model.vocabSize), config.distill.temperature)
    }

    var combine: TeacherCombine { TeacherCombine(rawValue: config.teacher?.combine ?? "mixture") ?? .mixture }

    /// Bytes of teacher output that reach a student rank per token (the exchange's size).
    public var teacherBytesPerToken: Int {
        if let p = pipeline { return p.returnBytesPerToken }
        if let g = groups { return g.receivedBytesPerToken }
        return topKSpec.map { TopK.bytesPerToken(k: $0.k) } ?? config.model.vocabSize * 4
    }

    /// One teacher: `init(…, teacher:)`; several (`teacher.members`): `teachers`, in the config's order.
    public convenience init(config: RunConfig, corpus: TokenCorpus, comm: any Communicator = LocalCommunicator(),
                            teacher: Transformer?, teacherManifest: [TeacherManifestEntry] = []) throws {
        try self.init(config: config, corpus: corpus, comm: comm, teachers: teacher.map { [$0] } ?? [], teacherManifest: teacherManifest)
    }

    public init(config: RunConfig, corpus: TokenCorpus, comm: any Communicator = LocalCommunicator(),
                teachers: [Transformer] = [], teacherManifest: [TeacherManifestEntry] = [], teacherCache: TeacherCache? = nil,
                initFrom: Transformer? = nil) throws {
        try config.validate()
        self.teacherCache = teacherCache
        self.config = config
        self.comm = comm
        let sources = config.teacher?.sources ?? []
        if !teachers.isEmpty, teachers.count != sources.count {
            throw KDError.invalidInput(what: "teachers", expected: "\(sources.count) (the config's teacher section)", found: "\(teachers.count) models")
        }
        for (i, teacher) in teachers.enumerated() {
            let name = i < sources.count ? sources[i].path : "teacher \(i + 1)"
            if teacher.config.vocabSize != config.model.vocabSize {
                throw KDError.invalidInput(what: "teacher vocabulary", expected: "\(config.model.vocabSize) tokens (model.vocab_size of the student)",
                                           found: "\(teacher.config.vocabSize) tokens in \(name)")
            }
            if teacher.config.maxSeqLen < config.train.seqLen {
                throw KDError.invalidInput(what: "context of \(name)", expected: ">= train.seq_len (\(config.train.seqLen))", found: "\(teacher.config.maxSeqLen)")
            }
        }
        self.teachers = teachers
        teacherWeights = teachers.isEmpty ? [] : sources.map(\.weight)
        self.teacherManifest = teacherManifest
        let t = config.train
        guard corpus.vocabSize <= config.model.vocabSize else {
            throw KDError.invalidInput(what: "model.vocab_size", expected: ">= the data's vocabulary (\(corpus.vocabSize) tokens)",
                                       found: "\(config.model.vocabSize)")
        }
        if let cache = teacherCache {
            try cache.check(corpus: corpus, seqLen: t.seqLen, temperature: config.distill.temperature)
        } else if let c = config.teacher?.cache, !c.isEmpty {
            throw KDError.invalidInput(what: "teacher.cache", expected: "the cache \(c) opened", found: "none given to the trainer")
        }
        sampler = try WindowSampler(stream: corpus.train, mask: corpus.trainMask, seqLen: t.seqLen, seed: t.seed)
        validation = corpus.validation.count > t.seqLen
            ? try WindowSampler(stream: corpus.validation, mask: corpus.validationMask, seqLen: t.seqLen, seed: t.seed, split: "validation") : nil
        model = Transformer(config: config.model, needsGrad: true, lmHeadChunk: t.lmHeadChunk)
        model.initialize(seed: t.seed)
        if config.student.initFrom == "from_teacher" {
            guard let source = initFrom ?? teachers.first else {
                throw KDError.invalidInput(what: "student.init from_teacher", expected: "a teacher to cut the student from", found: "none loaded")
            }
            let kept = config.student.keptLayers(teacherLayers: source.config.layers)
            // width pruning ranks the teacher's FFN channels and query heads by mean |activation| on the first windows
            let sampler = self.sampler, cb = max(1, config.student.calibrationBatches), b = t.microBatch, seqLen = t.seqLen
            func calibrated(_ measure: (UnsafePointer<Int32>) -> [[Double]]) -> [[Double]] {
                let toks = UnsafeMutablePointer<Int32>.allocate(capacity: cb * b * seqLen), tg = UnsafeMutablePointer<Int32>.allocate(capacity: cb * b * seqLen)
                defer { toks.deallocate(); tg.deallocate() }
                sampler.fillSequential(inputs: toks, targets: tg, first: 0, count: cb * b)
                var sum: [[Double]] = []
                for i in 0..<cb {
                    let imp = measure(toks + i * b * seqLen)
                    sum = sum.isEmpty ? imp : zip(sum, imp).map { zip($0, $1).map(+) }
                }
                return sum
            }
            var channels: [[Int]]?
            if config.model.ffnDim < source.config.ffnDim {
                let importance = calibrated { source.ffnChannelImportance(tokens: $0, b: b, t: seqLen) }
                channels = kept.map { l in
                    importance[l].indices.sorted { importance[l][$0] > importance[l][$1] }.prefix(config.model.ffnDim).sorted()
                }
            }
            var heads: [[Int]]?
            if config.model.heads < source.config.heads {
                // in every key/value group, the query heads with the largest mean |output|
                let importance = calibrated { source.attentionHeadImportance(tokens: $0, b: b, t: seqLen) }
                let perGroup = source.config.heads / source.config.kvHeads, keep = config.model.heads / max(config.model.kvHeads, 1)
                heads = kept.map { l in
                    (0..<source.config.kvHeads).flatMap { g in
                        Array(g * perGroup..<(g + 1) * perGroup).sorted { importance[l][$0] > importance[l][$1] }.prefix(keep).sorted()
                    }
                }
            }
            try model.copyPruned(from: source, layers: kept, ffnChannels: channels, queryHeads: heads)
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
        if let maxRoute, !teachers.isEmpty, maxRoute >= teachers.count {
            throw KDError.invalidInput(what: "the data's \"teacher\" routes", expected: "member indices below \(teachers.count) (teacher.members)",
                                       found: "index \(maxRoute)")
        }
        if config.policy.mode == "distillm" {
            policyThreshold = config.policy.thresholdInit
            replay = ReplayBuffer(capacity: config.policy.replayCapacity, length: t.seqLen + 1)
        }
        // self-distillation: a second copy of the student's shape, never trained by gradients (`self: checkpoint` is an
        // ordinary teacher: the checkpoint folder is a Hugging Face model)
        switch config.teacher?.selfSource ?? "none" {
        case "initial", "ema":
            let st = Transformer(config: config.model, needsGrad: false, lmHeadChunk: t.lmHeadChunk)
            st.params.base.update(from: model.params.base, count: model.layout.count)
            selfTeacher = st
        default:
            selfTeacher = nil
        }
        if let teacher = teachers.first, config.teacher?.placement == "pipelined", comm.worldSize > 1 {
            guard teacher.config.layers >= comm.worldSize else {
                throw KDError.invalidInput(what: "teacher.placement pipelined", expected: "at least one teacher block per rank (\(comm.worldSize))",
                                           found: "\(teacher.config.layers) blocks")
            }
            pipeline = TeacherPipeline(teacher: teacher, comm: comm, topK: topKSpec)
        }
        if teachers.count > 1, config.teacher?.placement == "groups" {
            guard comm.worldSize % teachers.count == 0 else {
                throw KDError.invalidInput(what: "teacher.placement groups", expected: "a world size divisible by the \(teachers.count) teachers",
                                           found: "\(comm.worldSize) ranks")
            }
            if topKSpec != nil, combine == .logits {
                throw KDError.invalidInput(what: "teacher.combine with groups and the top-k exchange", expected: "mixture (top-k rows carry no logits to average)",
                                           found: "logits")
            }
            groups = TeacherGroups(teachers: teachers, weights: teacherWeights, comm: comm, topK: topKSpec)
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

    /// One optimizer step: every micro-batch's forward and backward, all-reduce, clip, AdamW.
    public func trainStep() throws -> StepStats {
        let t = config.train
        let start = monotonicSeconds()
        let perMicro = t.microBatch * t.seqLen
        // this rank's samples: a contiguous slice of the global batch, so the cursor is world-size independent
        let rankFirst = sampleCursor + comm.rank * t.microBatch * t.gradAccum
        sampler.fill(inputs: inputs, targets: targets, first: rankFirst, count: t.microBatch * t.gradAccum)
        let source = stepSource(step)
        let reward = try prepareOnPolicyBatch(source, rankFirst: rankFirst)
        let routed = routing && source == .corpus
        if routed { sampler.fillRoutes(routeBuffer, first: rankFirst, count: t.microBatch * t.gradAccum) }
        // normalize by the global number of loss tokens, counted before any forward
        var counts = [Double((0..<(perMicro * t.gradAccum)).reduce(0) { $0 + (targets[$1] >= 0 ? 1 : 0) })]
        try comm.allReduceSum(&counts)
        let scale = Float(1 / max(counts[0], 1))
        model.grads!.zero()
        var local = LossSum()
        let hooks = sync.hooks
        for micro in 0..<t.gradAccum {
            // the offline cache reads rows by corpus window; nothing else needs them
            let windows = teacherCache == nil ? [] : (0..<t.microBatch).map { sampler.windowStart(sample: rankFirst + micro * t.microBatch + $0) / t.seqLen }
            var target = try distillTarget(tokens: inputs + micro * perMicro, windows: windows,
                                           route: routed ? UnsafePointer(routeBuffer + micro * perMicro) : nil)
            if source != .corpus {
                // student-generated sequences: the divergence only (cross-entropy on its own samples would teach nothing),
                // plus the policy-gradient term on rollouts
                target?.kdRatio = 1
                if source == .rollout { target?.ceWeights = UnsafePointer(ceWeightBuffer + micro * perMicro) }
            }
            model.forward(tokens: inputs + micro * perMicro, b: t.microBatch, t: t.seqLen)
            // the last micro-batch exchanges each gradient region as soon as backward has finished it
            let last = micro == t.gradAccum - 1 && sync.active
            local = local + model.backward(
                targets: targets + micro * perMicro, lossScale: scale, deferEmbedding: last, distill: target,
                onHeadDone: last ? hooks.head : nil, onBlockDone: last ? hooks.block : nil, progress: last ? hooks.progress : nil)
        }
        try sync.finish()
        let exposed = sync.exposedSeconds
        // the stop flag and rank 0's checkpoint clock ride on the loss all-reduce: every rank acts after the same step
        let minutes = config.checkpoint.everyMinutes
        let due = comm.rank == 0 && minutes > 0 && monotonicSeconds() - lastCheckpointTime >= 60 * minutes
        var lossSum = [local.sum, local.kdSum, StopSignal.requested ? 1 : 0, Double(local.agree), due ? 1 : 0]
        try comm.allReduceSum(&lossSum)
        if lossSum[2] > 0 { stopRequested = true }
        let ce = lossSum[0] / max(counts[0], 1), kd = lossSum[1] / max(counts[0], 1)
        let d = config.distill
        let t2 = Double(d.t2Scale ? d.temperature * d.temperature : 1)
        let loss = !hasTeacher ? ce : source != .corpus ? t2 * kd : Double(1 - d.kdRatio) * ce + Double(d.kdRatio) * t2 * kd
        let g = model.grads!.base
        qat?.prepareGradient(g, step: step)
        let norm = try optimizer.clip(grads: g)
        guard loss.isFinite else { throw KDError.nonFinite(what: "training loss", step: step + 1) }
        guard norm.isFinite else { throw KDError.nonFinite(what: "gradient norm", step: step + 1) }
        let lr = optimizer.learningRate(step: step)
        let range = optimizer.shard.range
        optimizer.step(params: qat?.weights ?? model.params.base + range.lowerBound, grads: g, lr: lr, t: step + 1)
        qat?.updateScales(lr: lr, optimizer: config.optimizer, step: step)
        try updateSelfTeacher()
        step += 1
        lastLR = lr
        qat?.refresh(step: step)
        try gatherWeights()
        sampleCursor += globalBatch
        return StepStats(step: step, loss: loss, tokens: Int(counts[0]), lr: lr, gradNorm: norm,
                         seconds: monotonicSeconds() - start, exposedCommSeconds: exposed, ce: ce, kd: kd, source: source, reward: reward,
                         agreement: lossSum[3] / max(counts[0], 1), checkpointDue: lossSum[4] > 0)
    }

    /// Self-distillation with `self: ema`: θ_T ← d·θ_T + (1 − d)·θ after the update, on this rank's range, then every
    /// rank's range gathered.
    func updateSelfTeacher() throws {
        guard let st = selfTeacher, config.teacher?.selfSource == "ema" else { return }
        let r = optimizer.shard.range
        let dcy = config.teacher!.emaDecay, p = UnsafePointer(qat?.weights ?? model.params.base + r.lowerBound), q = st.params.base + r.lowerBound
        Parallel.forRanges(r.count, minPerThread: 1 << 16) { lo, hi in
            for i in lo..<hi { q[i] = dcy * q[i] + (1 - dcy) * p[i] }
        }
        if optimizer.shard.isSplit { try comm.allGather(st.params.base, counts: optimizer.shard.counts) }
    }

    /// The divergence named by the config.
    public var divergence: Divergence {
        let d = config.distill
        switch d.objective {
        case "rkl": return .reverseKL
        case "skew_fkl": return .skewForwardKL(lambda: d.skewLambda)
        case "skew_rkl": return .skewReverseKL(lambda: d.skewLambda)
        case "jsd": return .jsd(beta: d.jsdBeta)
        case "tvd": return .tvd
        case "fkl_rkl": return .mixedKL(alpha: d.mixAlpha)
        default: return .forwardKL
        }
    }

    /// Runs the teacher(s) on `tokens` (one micro-batch; collective when pipelined or in groups) and returns what the
    /// student's head needs; nil without a teacher.
    /// `windows` are the micro-batch's corpus windows (for the offline cache), of the validation split when `validationSplit`.
    /// `route` picks one teacher per row (−1: all combined).
    func distillTarget(tokens: UnsafePointer<Int32>, windows: [Int] = [], validationSplit: Bool = false,
                       route: UnsafePointer<Int32>? = nil) throws -> DistillTarget? {
        guard hasTeacher else { return nil }
        let t = config.train, d = config.distill
        let n = t.microBatch * t.seqLen
        var rows: TopKRows?
        var members: [TeacherSource]
        if let cache = teacherCache {
            if localTopK?.n != n { localTopK = TopKBuffer(n: n, k: cache.info.k) }
            cache.fill(localTopK!, windows: windows, validationSplit: validationSplit)
            var target = DistillTarget(teachers: nil, divergence: divergence, temperature: d.temperature, kdRatio: d.kdRatio, t2Scale: d.t2Scale)
            target.topK = localTopK!.rows
            return target
        } else if let pipeline {
            let hidden = try pipeline.forward(tokens: tokens, b: t.microBatch, t: t.seqLen)
            rows = pipeline.topKRows
            members = [TeacherSource(head: teachers[0].lmHeadWeight, hidden: hidden)]
        } else if let groups {
            members = try groups.forward(tokens: tokens, b: t.microBatch, t: t.seqLen, route: route)
            rows = groups.topKRows
        } else {
            let active = activeTeachers
            members = []
            for (i, teacher) in active.enumerated() {
                teacher.forward(tokens: tokens, b: t.microBatch, t: t.seqLen)
                members.append(TeacherSource(head: teacher.lmHeadWeight, hidden: teacher.finalHidden, weight: selfTeacher == nil ? teacherWeights[i] : 1))
            }
            if let (k, T) = topKSpec {
                if localTopK?.n != n { localTopK = TopKBuffer(n: n, k: k) }
                localTopK!.fill(ensemble: TeacherEnsemble(members: members, combine: combine, route: route), temperature: T, chunk: 256)
                rows = localTopK!.rows
            }
        }
        var target = DistillTarget(teachers: TeacherEnsemble(members: members, combine: combine, route: route), divergence: divergence,
                                   temperature: d.temperature, kdRatio: d.kdRatio, t2Scale: d.t2Scale)
        target.topK = rows
        return target
    }

    /// Validation cross-entropy and (with a teacher) divergence over `evalBatches` sequential micro-batches.
    public func evaluateDetailed() throws -> LossSum? {
        guard let validation else { return nil }
        let t = config.train
        var total = LossSum()
        for i in 0..<t.evalBatches {
            validation.fillSequential(inputs: inputs, targets: targets, first: i * t.microBatch, count: t.microBatch)
            if routing { validation.fillRoutes(routeBuffer, first: i * t.microBatch, count: t.microBatch, sequential: true) }
            let target = try distillTarget(tokens: inputs, windows: (0..<t.microBatch).map { (i * t.microBatch + $0) % validation.windows },
                                           validationSplit: true, route: routing ? UnsafePointer(routeBuffer) : nil)
            model.forward(tokens: inputs, b: t.microBatch, t: t.seqLen)
            total = total + (target.map { model.distillLoss(targets: targets, target: $0) } ?? model.loss(targets: targets))
        }
        return total
    }

    /// ``evaluateDetailed()`` at the current step, printed and written to the metrics log.
    @discardableResult
    public func evaluateAndLog() throws -> LossSum? {
        guard let v = try evaluateDetailed() else { return nil }
        let objective = config.distill.objective
        let kd = hasTeacher ? String(format: " | val %@ %.4f | agree %.1f%%", objective, v.kdMean, 100 * v.agreement) : ""
        KDLog.info(String(format: "eval  step %5d | val ce %.4f | val ppl %.2f%@", step, v.mean, Foundation.exp(v.mean), kd))
        var vals: [(String, Double)] = [("ce", v.mean), ("ppl", Foundation.exp(v.mean))]
        if hasTeacher { vals += [(objective, v.kdMean), ("agreement", v.agreement)] }
        metrics?.write(MetricRecord(step: step, kind: "eval", values: vals))
        return v
    }

    /// Mean cross-entropy over `config.train.evalBatches` sequential validation micro-batches (nil without a split).
    public func evaluate() -> Double? {
        guard let validation else { return nil }
        let t = config.train
        var total = LossSum()
        for i in 0..<t.evalBatches {
            validation.fillSequential(inputs: inputs, targets: targets, first: i * t.microBatch, count: t.microBatch)
            model.forward(tokens: inputs, b: t.microBatch, t: t.seqLen)
            total = total + model.loss(targets: targets)
        }
        return total.mean
    }

    // MARK: - Checkpoints

    /// Weights besides the student's that a checkpoint must carry: the EMA self-teacher.
    var emaWeights: [String: Slab] {
        guard let st = selfTeacher, config.teacher?.selfSource == "ema" else { return [:] }
        return ["ema_teacher": st.params]
    }

    public var checkpointStore: CheckpointStore { CheckpointStore(root: config.checkpoint.dir, keep: config.checkpoint.keep) }

    /// Rank 0 writes a checkpoint of the current step (every rank hands it its range of the sharded state); every
    /// rank waits until it is complete.
    @discardableResult
    public func saveCheckpoint() throws -> String? {
        var path: String?
        let start = monotonicSeconds()
        let shard = optimizer.shard
        let moments = try optimizer.gatheredMoments(root: 0)
        let scales = try qat?.scalesFile(root: 0)
        if let qat {
            // the checkpoint holds the full-precision weights; QAT re-quantizes them from its config when read
            if shard.isSplit {
                try comm.gather(qat.masters.base, counts: shard.counts, into: comm.rank == 0 ? model.params.base : nil, root: 0)
            } else if comm.rank == 0 {
                model.params.base.update(from: qat.masters.base, count: model.layout.count)
            }
        }
        if comm.rank == 0, let moments {
            var state = TrainingState(step: step, sampleCursor: sampleCursor, worldSize: comm.worldSize, lr: lastLR, config: try config.yaml(),
                                      teachers: teacherManifest)
            var files = extraCheckpointFiles
            if let scales { files["qat_scales.safetensors"] = scales }
            if let replay {
                state.extra["policy_threshold"] = "\(policyThreshold)"
                if let v = lastValLoss { state.extra["last_val_loss"] = "\(v)" }
                files["replay.bin"] = replay.serialized()
            }
            path = try checkpointStore.save(model: model, adamM: moments.m, adamV: moments.v, state: state, extraFiles: files,
                                            extraWeights: emaWeights)
            KDLog.info(String(format: "checkpoint %@ written in %.2f s", path!, monotonicSeconds() - start))
        }
        try comm.barrier()
        // rank 0's weights are the masters now: quantize again (and gather the ranges when split)
        if qat != nil, comm.rank == 0 || shard.isSplit { try refreshWeights() }
        lastCheckpointTime = monotonicSeconds()
        return path
    }

    /// Rank 0 loads the checkpoint in `dir` (verified) and sends weights, moments and position to every rank (each
    /// rank its range of sharded state), so ranks need no shared file system. A checkpoint resumes at any world size
    /// and sharding: the global sample cursor carries on, and checkpoints always hold the whole slab.
    public func resume(from dir: String) throws {
        var header = [0.0, 0.0, 0.0, 0.0, .nan]
        let start = monotonicSeconds()
        var written = 0
        var replayBytes: [UInt8] = []
        let shard = optimizer.shard
        var moments: (m: Slab, v: Slab)?
        if comm.rank == 0 {
            let state = try CheckpointStore.verify(dir: dir)
            if state.teachers != teacherManifest, !allowTeacherChange {
                func show(_ m: [TeacherManifestEntry]) -> String { m.isEmpty ? "none" : m.map { "\($0.path) (\($0.bytes) bytes, \($0.checksum))" }.joined(separator: ", ") }
                throw CheckpointError.teacherMismatch(dir: dir, expected: show(teacherManifest), found: show(state.teachers))
            }
            // tensors are read by name, so a shallower model would silently take the first blocks of a deeper one
            if let saved = try? RunConfig.parse(yaml: state.config, source: dir + "/state.json"), saved.model != config.model {
                let a = saved.model, b = config.model
                let diff = [("layers", a.layers, b.layers), ("dim", a.dim, b.dim), ("heads", a.heads, b.heads), ("head_dim", a.headSize, b.headSize),
                            ("kv_heads", a.kvHeads, b.kvHeads),
                            ("ffn_dim", a.ffnDim, b.ffnDim), ("vocab_size", a.vocabSize, b.vocabSize), ("max_seq_len", a.maxSeqLen, b.maxSeqLen)]
                    .filter { $0.1 != $0.2 }.map { "\($0.0) \($0.1), this config \($0.2)" }
                throw CheckpointError.shapeMismatch(dir: dir, reason: "the checkpoint has another model shape (\(diff.isEmpty ? "rope or norm settings differ" : diff.joined(separator: ", "))); "
                    + "point checkpoint.dir at a new folder for this config, or resume with the checkpoint's model section")
            }
            // unsplit moments load in place; split ones pass through whole-slab buffers on rank 0
            let full = shard.isSplit ? (m: Slab(count: model.layout.count), v: Slab(count: model.layout.count)) : (m: optimizer.m, v: optimizer.v)
            try CheckpointStore.load(dir: dir, model: model, adamM: full.m, adamV: full.v, extraWeights: emaWeights)
            moments = full
            header = [Double(state.step), Double(state.sampleCursor), Double(state.lr), 0, .nan]
            written = state.worldSize
            if replay != nil {
                guard let th = state.extra["policy_threshold"].flatMap(Float.init),
                      let data = try? Data(contentsOf: URL(fileURLWithPath: (dir as NSString).appendingPathComponent("replay.bin"))) else {
                    throw CheckpointError.shapeMismatch(dir: dir, reason: "no distillm state (policy_threshold, replay.bin) to resume policy.mode distillm")
                }
                header[3] = Double(th)
                header[4] = state.extra["last_val_loss"].flatMap(Double.init) ?? .nan
                replayBytes = [UInt8](data)
            }
        }
        try comm.broadcast(&header, root: 0)
        if let replay {
            try comm.broadcast(&replayBytes, root: 0)
            try replay.restore(Data(replayBytes))
            policyThreshold = Float(header[3])
            lastValLoss = header[4].isNaN ? nil : header[4]
        }
        for slab in [model.params] + emaWeights.values { try broadcastFloats(comm, slab.base, count: slab.count) }
        try optimizer.restoreMoments(m: moments?.m.base, v: moments?.v.base)
        try qat?.restore(dir: comm.rank == 0 ? dir : nil)
        KDLog.info(String(format: "resumed from %@: step %d, sample cursor %d (written by %d rank%@), verified and loaded in %.2f s",
                          dir, Int(header[0]), Int(header[1]), written, written == 1 ? "" : "s", monotonicSeconds() - start))
        step = Int(header[0])
        sampleCursor = Int(header[1])
        lastLR = Float(header[2])
        try refreshWeights()
    }

    /// distillm: a validation loss that rose by more than the margin since the last evaluation raises the probability
    /// of student-generated steps by threshold_step.
    func adaptPolicy(validationLoss: Double) {
        guard replay != nil else { return }
        let p = config.policy
        if let last = lastValLoss, validationLoss > last + Double(p.margin) {
            policyThreshold = min(1, policyThreshold + p.thresholdStep)
            KDLog.info(String(format: "distillm: validation loss rose %.4f → %.4f; student-generated share now %.2f", last, validationLoss, policyThreshold))
        }
        lastValLoss = validationLoss
    }

    /// Runs the remaining steps, logging every `log_every` steps and evaluating on cadence; returns every step's stats.
    /// `checkpoints` writes them on the config's cadence; `stopAfter` ends the call after that many steps (a stop
    /// mid-run, for tests and for `distill train --stop-after`).
    @discardableResult
    public func run(checkpoints: Bool = false, stopAfter: Int? = nil, onStep: (StepStats) -> Void = { _ in }) throws -> [StepStats] {
        let t = config.train
        var history: [StepStats] = []
        let begin = monotonicSeconds()
        var tokensSeen = 0
        let interactive = KDLog.interactive
        while step < t.steps {
            let s = try trainStep()
            history.append(s)
            tokensSeen += s.tokens
            onStep(s)
            let elapsed = monotonicSeconds() - begin
            let tps = Double(tokensSeen) / elapsed
            let objective = config.distill.objective
            if let metrics {
                var v: [(String, Double)] = [("loss", s.loss)]
                if hasTeacher { v += [("ce", s.ce), (objective, s.kd), ("agreement", s.agreement)] }
                v += [("lr", Double(s.lr)), ("grad_norm", s.gradNorm), ("tokens_per_s", Double(s.tokens) / s.seconds),
                      ("step_seconds", s.seconds), ("peak_rss_mib", Double(ProcessMemory.peakRSSBytes()) / 1048576)]
                if comm.worldSize > 1 { v.append(("comm_exposed_ms", 1000 * s.exposedCommSeconds)) }
                if s.source == .rollout { v.append(("reward", s.reward)) }
                metrics.write(MetricRecord(step: s.step, kind: "train", values: v))
            }
            let logged = s.step % t.logEvery == 0 || s.step == 1 || s.step == t.steps
            if logged || interactive {
                let eta = elapsed / Double(history.count) * Double(t.steps - s.step)
                let comm = self.comm.worldSize > 1 ? String(format: " | comm exposed %.0f ms", 1000 * s.exposedCommSeconds) : ""
                var parts = hasTeacher ? String(format: " (ce %.4f, %@ %.4f, agree %.1f%%)", s.ce, objective, s.kd, 100 * s.agreement) : ""
                if s.source != .corpus { parts += " [\(s.source.rawValue)\(s.source == .rollout ? String(format: ", reward %.3f", s.reward) : "")]" }
                let line = String(format: "step %5d/%d | loss %.4f%@ | lr %.2e | grad norm %.3f | %.0f tok/s | ETA %@%@",
                                  s.step, t.steps, s.loss, parts, s.lr, s.gradNorm, tps, formatDuration(eta), comm)
                // on a terminal the line is redrawn every step; a plain line stays behind every log_every steps
                if interactive && !logged { KDLog.progress(line) } else { KDLog.info(line) }
            }
            if t.evalEvery > 0, s.step % t.evalEvery == 0, let v = try evaluateAndLog() {
                adaptPolicy(validationLoss: hasTeacher ? Double(1 - config.distill.kdRatio) * v.mean + Double(config.distill.kdRatio) * v.kdMean : v.mean)
            }
            let onCadence = config.checkpoint.every > 0 && s.step % config.checkpoint.every == 0
            let written = checkpoints && (onCadence || s.step == t.steps || s.checkpointDue)
            if written { try saveCheckpoint() }
            if stopRequested, step < t.steps {
                if checkpoints, !written { try saveCheckpoint() }
                KDLog.info("stopped by a signal after step \(step) of \(t.steps)\(checkpoints ? " (checkpoint written)" : "")")
                break
            }
            if let stopAfter, history.count >= stopAfter, step < t.steps {
                if checkpoints, !written { try saveCheckpoint() }
                break
            }
        }
        return history
    }
}

/// "1h02m", "3m05s", "12s".
public func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    if s >= 3600 { return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60) }
    if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
    return "\(s)s"
}
