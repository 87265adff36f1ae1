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
    let adamM: Slab, adamV: Slab
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
    /// QAT: full-precision master weights (the model's slab holds their fake-quantized values) and the straight-through
    /// masks of the last quantization.
    public let qatScheme: FakeQuantScheme?
    public private(set) var master: Slab?
    var steMask: Slab?
    /// QAT with explicit scales (`qat.scales: learned`, or `freeze_step`): the scales once taken from the weights, and
    /// for learned scales their gradient and AdamW moments.
    public private(set) var qatScales: QATScales?
    var scalesReady = false
    var scaleGrad: Slab?, scaleM: Slab?, scaleV: Slab?, scaleTheta: Slab?
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
    /// Every rank's embedding-output gradient and tokens, all-gathered each step.
    var gathered = Slab(count: 0)
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
        qatScheme = FakeQuantScheme(rawValue: config.qat.scheme)
        if config.qat.enabled {
            master = Slab(count: model.layout.count)
            master!.base.update(from: model.params.base, count: model.layout.count)
            if qatScheme != nil { steMask = Slab(count: model.layout.count) }
            if let qatScheme, config.qat.scales == "learned" || config.qat.freezeStep > 0 {
                let qs = QATScales(model: model, scheme: qatScheme, embeddings: config.qat.embeddings)
                qatScales = qs
                if config.qat.scales == "learned" {
                    let n = qs.values.count
                    (scaleGrad, scaleM, scaleV, scaleTheta) = (Slab(count: n), Slab(count: n), Slab(count: n), Slab(count: n))
                }
            }
        }
        adamM = Slab(count: model.layout.count)
        adamV = Slab(count: model.layout.count)
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
        refreshQuantized()
    }

    /// QAT: whether the current step trains with quantization (from qat.start_step on).
    public var qatActive: Bool { config.qat.enabled && step >= config.qat.startStep }

    /// LSQ: this step trains the scales (learned, in use, and before freeze_step).
    var learningScalesNow: Bool {
        config.qat.scales == "learned" && scalesReady && qatActive && (config.qat.freezeStep == 0 || step < config.qat.freezeStep)
    }

    /// The explicit QAT scales (and learned ones' moments) as a safetensors file for checkpoints.
    func qatScalesFile() throws -> Data? {
        guard let qs = qatScales, scalesReady else { return nil }
        var tensors: [SafetensorsEntry] = []
        for i in qs.entries.indices {
            tensors.append(SafetensorsEntry(name: qs.name(i), shape: qs.shape(i), data: qs.values.base + qs.offsets[i]))
            if let m = scaleM, let v = scaleV {
                tensors.append(SafetensorsEntry(name: "exp_avg." + qs.name(i), shape: qs.shape(i), data: m.base + qs.offsets[i]))
                tensors.append(SafetensorsEntry(name: "exp_avg_sq." + qs.name(i), shape: qs.shape(i), data: v.base + qs.offsets[i]))
            }
        }
        return try safetensorsData(tensors: tensors, metadata: ["scheme": qs.scheme.rawValue, "scales": config.qat.scales])
    }

    /// QAT: the model's weights ← fake-quantized master weights (or the master weights before the start step), and
    /// activation fake quantization on or off.
    func refreshQuantized() {
        guard let master else { return }
        if let qs = qatScales, config.qat.explicitScales(atStep: step) {
            // learned scales start from the absmax ones, frozen ones are the absmax ones of the freeze step
            if !scalesReady { qs.capture(master: master.base); scalesReady = true }
            model.writeFakeQuantized(scales: qs, master: master.base, mask: steMask!.base)
        } else if let qatScheme, qatActive {
            model.writeFakeQuantized(qatScheme, embeddings: config.qat.embeddings, master: master.base, mask: steMask!.base)
        } else {
            model.params.base.update(from: master.base, count: model.layout.count)
        }
        model.quantizeActivations = qatActive && config.qat.activations == "int8"
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
        let t = config.train, o = config.optimizer
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
        let g = model.grads!
        var pending: [any PendingReduce] = []
        var commError: (any Error)?
        let layout = model.layout
        let firstBlock = layout.blockRange(0).lowerBound, afterBlocks = layout.blockRange(model.config.layers - 1).upperBound
        func reduce(_ lo: Int, _ hi: Int) {
            do {
                if hi > lo { pending.append(try comm.startAllReduceSum(g.base + lo, count: hi - lo)) }
                for p in pending { _ = try p.test() }  // MPI progresses only inside MPI calls
            } catch { commError = commError ?? error }
        }
        let parallel = comm.worldSize > 1
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
            let last = micro == t.gradAccum - 1 && parallel
            // On the last micro-batch every gradient region is reduced as soon as it is final: the embedding table and
            // the tail (final norm, untied head) right after the LM head, each block after its backward. The
            // embedding lookup's own gradient is sparse, so it is all-gathered afterwards instead (n·c floats/rank).
            local = local + model.backward(
                targets: targets + micro * perMicro, lossScale: scale, deferEmbedding: last, distill: target,
                onHeadDone: last ? { reduce(0, firstBlock); reduce(afterBlocks, g.count) } : nil,
                onBlockDone: last ? { l in let r = layout.blockRange(l); reduce(r.lowerBound, r.upperBound) } : nil,
                progress: last ? { reduce(0, 0) } : nil)
        }
        if let commError { throw commError }
        let waitStart = monotonicSeconds()
        if parallel {
            for p in pending { try p.wait() }
            let (dout, toks, n) = model.embeddingInputGradient!
            let c = model.config.dim, ws = comm.worldSize
            // one buffer for every rank's (n·c floats, n tokens), kept between steps
            if gathered.count < ws * n * (c + 1) { gathered = Slab(count: ws * n * (c + 1)) }
            let allD = gathered.base, allT = UnsafeMutableRawPointer(gathered.base + ws * n * c).assumingMemoryBound(to: Int32.self)
            try comm.allGather(UnsafeRawPointer(dout), bytes: n * c * 4, into: UnsafeMutableRawPointer(allD))
            try comm.allGather(UnsafeRawPointer(toks), bytes: n * 4, into: UnsafeMutableRawPointer(allT))
            for r in 0..<ws { model.applyEmbeddingGradient(dout: allD + r * n * c, tokens: allT + r * n, n: n) }
        }
        let exposed = monotonicSeconds() - waitStart
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
        let learningScales = learningScalesNow
        if learningScales, let qs = qatScales, let sg = scaleGrad, let master {
            // LSQ: the scales' gradient from the all-reduced gradient of the quantized weights (same on every rank)
            sg.zero()
            Parallel.forRanges(qs.entries.count) { lo, hi in
                for i in lo..<hi {
                    let e = qs.entries[i]
                    fakeQuantizeScaleGradient(qs.scheme, src: master.base + e.offset, rows: e.shape[0], c: e.shape[1], scales: qs.values.base + qs.offsets[i],
                                              dOut: g.base + e.offset, dScales: sg.base + qs.offsets[i])
                }
            }
        }
        if let steMask, qatActive {
            // straight-through: the gradient of a clipped weight is zero
            let m = steMask.base
            Parallel.forRanges(g.count, minPerThread: 1 << 16) { lo, hi in for i in lo..<hi { g.base[i] *= m[i] } }
        }
        let norm = clipGradNorm(g.base, count: g.count, maxNorm: o.gradClip)
        guard loss.isFinite else { throw KDError.nonFinite(what: "training loss", step: step + 1) }
        guard norm.isFinite else { throw KDError.nonFinite(what: "gradient norm", step: step + 1) }
        let lr = o.learningRate(step: step, total: t.steps)
        let weights = (master ?? model.params).base
        for e in model.layout.entries {
            adamWUpdate(param: weights + e.offset, grad: g.base + e.offset, m: adamM.base + e.offset,
                        v: adamV.base + e.offset, count: e.count,
                        step: AdamWStep(lr: lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps,
                                        weightDecay: e.isMatrix ? o.weightDecay : 0, t: step + 1))
        }
        if learningScales, let qs = qatScales, let sg = scaleGrad, let sm = scaleM, let sv = scaleV, let theta = scaleTheta {
            // AdamW moves every parameter by about lr per step, far more than a scale of 1e-3 can take: it trains
            // θ = log|s| instead (steps relative to the scale, ∂L/∂θ = s·∂L/∂s); the sign stays (Q4_0's scales start
            // negative where a block's extreme value is positive)
            let n = qs.values.count, sp = qs.values.base, gp = sg.base
            for i in 0..<n {
                theta.base[i] = Foundation.log(max(abs(sp[i]), 1e-30))
                gp[i] *= sp[i]
            }
            adamWUpdate(param: theta.base, grad: gp, m: sm.base, v: sv.base, count: n,
                        step: AdamWStep(lr: lr * config.qat.scaleLRRatio, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: 0,
                                          t: step + 1 - config.qat.startStep))
            for i in 0..<n { sp[i] = (sp[i] < 0 ? -1 : 1) * Foundation.exp(theta.base[i]) }
        }
        if let st = selfTeacher, config.teacher?.selfSource == "ema" {
            // θ_T ← d·θ_T + (1 − d)·θ after the update
            let dcy = config.teacher!.emaDecay, p = weights, q = st.params.base
            Parallel.forRanges(model.layout.count, minPerThread: 1 << 16) { lo, hi in
                for i in lo..<hi { q[i] = dcy * q[i] + (1 - dcy) * p[i] }
            }
        }
        step += 1
        lastLR = lr
        refreshQuantized()
        sampleCursor += globalBatch
        return StepStats(step: step, loss: loss, tokens: Int(counts[0]), lr: lr, gradNorm: norm,
                         seconds: monotonicSeconds() - start, exposedCommSeconds: exposed, ce: ce, kd: kd, source: source, reward: reward,
                         agreement: lossSum[3] / max(counts[0], 1), checkpointDue: lossSum[4] > 0)
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

    /// Rank 0 writes a checkpoint of the current step; every rank waits until it is complete.
    @discardableResult
    public func saveCheckpoint() throws -> String? {
        var path: String?
        if comm.rank == 0 {
            let start = monotonicSeconds()
            var state = TrainingState(step: step, sampleCursor: sampleCursor, worldSize: comm.worldSize, lr: lastLR, config: try config.yaml(),
                                      teachers: teacherManifest)
            var files = extraCheckpointFiles
            if let scales = try qatScalesFile() { files["qat_scales.safetensors"] = scales }
            if let replay {
                state.extra["policy_threshold"] = "\(policyThreshold)"
                if let v = lastValLoss { state.extra["last_val_loss"] = "\(v)" }
                files["replay.bin"] = replay.serialized()
            }
            // the checkpoint holds the full-precision weights; QAT re-quantizes them from its config when read
            if let master { model.params.base.update(from: master.base, count: model.layout.count) }
            defer { refreshQuantized() }
            path = try checkpointStore.save(model: model, adamM: adamM, adamV: adamV, state: state, extraFiles: files,
                                            extraWeights: emaWeights)
            KDLog.info(String(format: "checkpoint %@ written in %.2f s", path!, monotonicSeconds() - start))
        }
        try comm.barrier()
        lastCheckpointTime = monotonicSeconds()
        return path
    }

    /// Rank 0 loads the checkpoint in `dir` (verified) and broadcasts weights, moments and position to every rank,
    /// so ranks need no shared file system. Resuming at another world size keeps the global sample cursor.
    public func resume(from dir: String) throws {
        var header = [0.0, 0.0, 0.0, 0.0, .nan]
        let start = monotonicSeconds()
        var written = 0
        var replayBytes: [UInt8] = []
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
            try CheckpointStore.load(dir: dir, model: model, adamM: adamM, adamV: adamV, extraWeights: emaWeights)
            if qatScales != nil, let loaded = try loadQATScales(dir: dir, model: model, qat: config.qat,
                                                                 moments: scaleM.flatMap { m in scaleV.map { (m, $0) } }) {
                qatScales = loaded
                scalesReady = true
            } else {
                scalesReady = false
            }
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
        for slab in [model.params, adamM, adamV] + emaWeights.values { try broadcastFloats(slab.base, count: slab.count) }
        if let qs = qatScales {
            var ready = [scalesReady ? 1.0 : 0.0]
            try comm.broadcast(&ready, root: 0)
            scalesReady = ready[0] > 0
            if scalesReady { for slab in [qs.values] + [scaleM, scaleV].compactMap({ $0 }) { try broadcastFloats(slab.base, count: slab.count) } }
        }
        KDLog.info(String(format: "resumed from %@: step %d, sample cursor %d (written by %d rank%@), verified and loaded in %.2f s",
                          dir, Int(header[0]), Int(header[1]), written, written == 1 ? "" : "s", monotonicSeconds() - start))
        step = Int(header[0])
        sampleCursor = Int(header[1])
        lastLR = Float(header[2])
        if let master {
            master.base.update(from: model.params.base, count: model.layout.count)
            refreshQuantized()
        }
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

    /// Median seconds of a blocking all-reduce of the whole gradient slab (what overlapping hides), over `repeats`.
    public func measureBlockingAllReduce(repeats: Int = 3) throws -> Double {
        guard comm.worldSize > 1, let g = model.grads else { return 0 }
        let copy = Slab(count: g.count)
        var times: [Double] = []
        for _ in 0..<repeats {
            copy.base.update(from: g.base, count: g.count)
            try comm.barrier()
            let t0 = monotonicSeconds()
            try comm.allReduceSum(copy.base, count: copy.count)
            times.append(monotonicSeconds() - t0)
        }
        return median(times)
    }

    func broadcastFloats(_ p: UnsafeMutablePointer<Float>, count: Int) throws {
        guard comm.worldSize > 1 else { return }
        var off = 0
        while off < count {
            let n = min(count - off, 1 << 26)
            try comm.broadcast(UnsafeMutableRawPointer(p + off), bytes: n * 4, root: 0)
            off += n
        }
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
