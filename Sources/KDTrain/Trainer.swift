// The trainer owns the loop and its parts, nothing else (llm.c's step, torchtitan's components):
//   BatchSource        corpus windows | on-policy sequences | replay, routes, the global sample cursor
//   TeacherPlacement   where the teachers run and what reaches this rank (one type per placement)
//   the student        Transformer: forward, backward as open calls, strung together below
//   HiddenStateObjective  block-output matching (pairs, captured teacher outputs, projections)
//   GradientSync       buckets issued as backward finishes them; all-reduce or reduce-scatter
//   Optimizer          AdamW over this rank's range, clipping by the global norm
//   QATState           fake-quantized weights from full-precision masters, scales
// Every part with state saves and restores it through ``TrainerPart``; a checkpoint is a loop over the parts.
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDData
import KDFormats
import KDLoss
import KDModel
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

/// What resuming checks and what every checkpoint carries besides the parts' state.
public struct CheckpointOptions {
    /// The teacher files the run depends on; a resume refuses a checkpoint made with others unless allowed.
    public var teacherManifest: [TeacherManifestEntry] = []
    public var allowTeacherChange = false
    /// Files every checkpoint carries (the data's tokenizer), by ``CheckpointFile`` name.
    public var extraFiles: [String: Data] = [:]
}

/// Trains a student on next-token cross-entropy, plus a divergence from its teachers when the config has them.
public final class Trainer {
    /// The run's config; a student cut from a sliding-window teacher gets its blocks' attention kinds in model.global_layers.
    public private(set) var config: RunConfig
    public let model: Transformer
    public let comm: any Communicator
    /// The teachers from files (every rank holds them; with `groups` each rank runs only its group's).
    public let teachers: [Transformer]
    /// Where the teachers run and what reaches this rank (nil: no teacher, plain cross-entropy).
    public let placement: (any TeacherPlacement)?
    /// Teachers (by index) with another tokenizer than the student's (`distill.cross_tokenizer`).
    public let crossTeachers: Set<Int>
    let batches: BatchSource
    let hidden: HiddenStateObjective?
    /// AdamW over this rank's range of the slab (all of it unless `optimizer.sharding` splits it).
    public let optimizer: Optimizer
    /// The gradient exchange: all-reduce, or reduce-scatter with `sharding: gradients`.
    public let sync: GradientSync
    /// QAT masters, masks and scales (nil without QAT).
    public let qat: QATState?
    public let cut: StudentCut
    public var checkpointing: CheckpointOptions
    /// Rank 0's metrics log (`metrics.jsonl` and TensorBoard events); nil = not written.
    public var metrics: MetricsLog?
    /// Optimizer steps completed.
    public internal(set) var step = 0
    /// Learning rate of the last step.
    public internal(set) var lastLR: Float = 0
    /// Some rank received SIGINT/SIGTERM/SIGUSR1: `run` stops after this step with a checkpoint.
    public internal(set) var stopRequested = false
    /// When the last checkpoint was written or loaded, or training began (for `checkpoint.every_minutes`).
    var lastCheckpointTime = monotonicSeconds()
    /// Alignment figures of this rank's training micro-batches so far (cross-tokenizer teachers run on this rank).
    public internal(set) var alignment = AlignmentStats()

    /// One teacher: `init(…, teacher:)`; several (`teacher.members`): `teachers`, in the config's order.
    public convenience init(config: RunConfig, corpus: TokenCorpus, comm: any Communicator = LocalCommunicator(),
                            teacher: Transformer?, teacherManifest: [TeacherManifestEntry] = []) throws {
        try self.init(config: config, corpus: corpus, comm: comm, teachers: teacher.map { [$0] } ?? [], teacherManifest: teacherManifest)
    }

    public init(config: RunConfig, corpus: TokenCorpus, comm: any Communicator = LocalCommunicator(),
                teachers: [Transformer] = [], teacherManifest: [TeacherManifestEntry] = [], teacherCache: TeacherCache? = nil,
                initFrom: Transformer? = nil, crossTokenizers: [Int: CrossTokenizerPair] = [:]) throws {
        try config.validate()
        self.comm = comm
        try checkTeachers(config, teachers: teachers, cross: crossTokenizers, initFrom: initFrom, cache: teacherCache)
        self.teachers = teachers
        crossTeachers = Set(crossTokenizers.keys)
        checkpointing = CheckpointOptions(teacherManifest: teacherManifest)
        let t = config.train
        if let cache = teacherCache { try cache.check(corpus: corpus, seqLen: t.seqLen, temperature: config.distill.temperature, vocab: config.model.vocabSize,
                                                       objective: config.distill.objective) }
        batches = try BatchSource(config: config, corpus: corpus, comm: comm, teachers: teachers.count, cache: teacherCache != nil,
                                  cross: !crossTokenizers.isEmpty)
        // student.init from_teacher: the student's blocks (and channels) cut from a teacher, its config resolved
        let cutSource = config.student.initFrom == .fromTeacher ? initFrom ?? teachers.first : nil
        var resolved = config, kept: [Int] = []
        if config.student.initFrom == .fromTeacher {
            guard let cutSource else {
                throw KDError.invalidInput(what: "student.init from_teacher", expected: "a teacher to cut the student from", found: "none loaded")
            }
            // student.target: the depth and FFN width that meet it, measured
            let file = config.student.teacher.isEmpty ? config.teacher?.sources.first?.path ?? "" : config.student.teacher
            let noValidation = KDError.invalidInput(what: "student.target.heal_steps", expected: "a validation split to score the healed cuts on",
                                                    found: "none in data")
            if (config.student.target?.healSteps ?? 0) > 0, batches.validation == nil { throw noValidation }
            // with heal_steps: each finalist trained as a run of its own on the same teachers and corpus
            let heal: (RunConfig, Int) throws -> Double = { c, until in
                guard let v = try Trainer.heal(c, until: until, corpus: corpus, comm: comm, teachers: teachers, teacherCache: teacherCache,
                                               initFrom: initFrom, crossTokenizers: crossTokenizers).divergence else { throw noValidation }
                return v
            }
            resolved = try chooseBudgetCut(config, source: cutSource, overhead: ggufHeaderBytes(file), calibration: batches.sampler, comm: comm,
                                           heal: heal)
            try checkCut(resolved, source: cutSource)
        }
        try checkHiddenLayers(config, teacher: teachers.first)
        if let cutSource {
            kept = try studentBlocks(from: cutSource, config: resolved, calibration: batches.sampler, comm: comm)
            resolved.model = try cutModelConfig(resolved.model, teacher: cutSource.config, kept: kept)
        }
        self.config = resolved
        // a student larger than the machine is one line, not an allocation trap: weights, gradients and both AdamW
        // moments take 16 bytes per parameter
        let parameters = ParameterLayout(config: resolved.model).count, physical = ProcessMemory.physicalBytes
        guard parameters <= physical / 16 else {
            throw KDError.invalidInput(what: "model", expected: String(format: "a student whose weights, gradients and AdamW moments (16 bytes per parameter) fit this machine's %.1f GiB", Double(physical) / 1073741824),
                                       found: "\(parameters) parameters, " + String(format: "%.1f GiB", Double(parameters) * 16 / 1073741824))
        }
        model = Transformer(config: resolved.model, needsGrad: true, lmHeadChunk: t.lmHeadChunk)
        model.initialize(seed: t.seed)
        if let cutSource {
            cut = try cutStudent(model, from: cutSource, config: resolved, kept: kept, calibration: batches.sampler, comm: comm)
        } else {
            cut = StudentCut()
        }
        // sharded state: each rank owns a contiguous, row-aligned range of the slab (ZeRO-1/2)
        let sharding = resolved.optimizer.sharding
        let shard = sharding == .none ? SlabShard(whole: model.layout.count) : SlabShard(layout: model.layout, worldSize: comm.worldSize, rank: comm.rank)
        optimizer = Optimizer(config: resolved.optimizer, layout: model.layout, shard: shard, comm: comm, totalSteps: t.steps)
        sync = GradientSync(comm: comm, model: model, shard: shard, scatter: sharding == .gradients)
        qat = resolved.qat.enabled ? QATState(config: resolved.qat, model: model, shard: shard, comm: comm) : nil
        try qat?.measureImportance(sampler: batches.sampler, b: t.microBatch, t: t.seqLen)
        placement = try makeTeacherPlacement(config: resolved, teachers: teachers, cache: teacherCache, student: model, comm: comm,
                                             cross: crossTokenizers)
        hidden = try HiddenStateObjective(config: resolved, cutBlocks: cut.blocks, channels: cut.channels, teacher: teachers.first,
                                          placement: placement, comm: comm)
        try refreshWeights()
    }

    /// The parts with state or work after updates, in the order they save, restore and update.
    var parts: [any TrainerPart] { ([batches, hidden, qat, placement] as [(any TrainerPart)?]).compactMap { $0 } }

    // MARK: - The step

    /// One optimizer step (llm.c's forward, zero_grad, backward, update; each part owns its state):
    public func trainStep() throws -> StepStats {
        let start = monotonicSeconds()
        let batch = try batches.next(step: step, student: model, teachers: placement?.localTeachers ?? [], combine: combine)
        model.grads!.zero()
        var local = LossSum()
        for i in 0..<config.train.gradAccum {                    // teacher target, forward, backward per micro-batch
            local = local + (try forwardBackward(batches.micro(i, of: batch), batch, last: i == config.train.gradAccum - 1))
        }
        try sync.finish()                                          // all-reduced (or reduce-scattered) gradient
        let totals = try agree(local, batch)                       // losses, stop flag, checkpoint clock across ranks
        let g = model.grads!.base
        qat?.prepareGradient(g, step: step)                        // LSQ scale gradient, straight-through masks
        let norm = try optimizer.clip(grads: g)                    // global norm over every rank's range
        guard totals.loss.isFinite else { throw KDError.nonFinite(what: "training loss", step: step + 1) }
        guard norm.isFinite else { throw KDError.nonFinite(what: "gradient norm", step: step + 1) }
        let lr = optimizer.learningRate(step: step)
        optimizer.step(params: ownedWeights, grads: g, lr: lr, t: step + 1)  // AdamW on this rank's range
        let update = UpdateContext(lr: lr, t: step + 1, optimizer: config.optimizer, weights: ownedWeights, shard: optimizer.shard)
        for part in parts { try part.afterUpdate(update) }        // projections, QAT scales, the EMA teacher
        step += 1
        lastLR = lr
        try refreshWeights()                                       // fake-quantized weights; every rank's range (sharded)
        batches.advance()
        return StepStats(step: step, loss: totals.loss, tokens: batch.tokens, lr: lr, gradNorm: norm, seconds: monotonicSeconds() - start,
                         exposedCommSeconds: sync.exposedSeconds, ce: totals.ce, kd: totals.kd, source: batch.source, reward: batch.reward,
                         agreement: totals.agreement, hidden: totals.hidden, checkpointDue: totals.checkpointDue)
    }

    /// One micro-batch: the teacher's target, the student's forward, and backward as a loop in the open, accumulating
    /// into the gradient slab. The last micro-batch hands each finished region to the exchange while backward goes on.
    func forwardBackward(_ mb: MicroBatch, _ batch: StepBatch, last: Bool) throws -> LossSum {
        let scale = Float(1 / Double(max(batch.tokens, 1)))
        var target = try distillTarget(mb)
        if batch.source != .corpus {
            // student-generated sequences: the divergence only (cross-entropy on its own samples would teach nothing),
            // plus the policy-gradient term on rollouts
            target?.kdRatio = 1
            target?.ceWeights = mb.ceWeights
        }
        model.forward(tokens: mb.tokens, b: mb.b, t: mb.t)
        let exchange = last && sync.active
        let loss = model.headBackward(targets: mb.targets, lossScale: scale, distill: target)
        if exchange { sync.issueHead() }
        for l in (0..<model.config.layers).reversed() {
            hidden?.addGradient(block: l, student: model, into: model.residualGradient, targets: mb.targets, lossScale: scale)
            model.mlpBackward(l)
            if exchange { sync.poll() }
            model.attentionBackward(l)
            if exchange { sync.issueBlock(l) }
        }
        let embedding = model.embeddingLookupGradient()
        if exchange { sync.exchangeEmbedding(embedding) } else { model.applyEmbeddingGradient(embedding) }
        return loss
    }

    /// The step's figures summed over ranks. The stop flag and rank 0's checkpoint clock ride on the same all-reduce,
    /// so every rank acts after the same step.
    func agree(_ local: LossSum, _ batch: StepBatch) throws -> (loss: Double, ce: Double, kd: Double, agreement: Double, checkpointDue: Bool, hidden: Double) {
        let minutes = config.checkpoint.everyMinutes
        let due = comm.rank == 0 && minutes > 0 && monotonicSeconds() - lastCheckpointTime >= 60 * minutes
        var sums = [local.sum, local.kdSum, StopSignal.requested ? 1 : 0, Double(local.agree), due ? 1 : 0, hidden?.takeSum() ?? 0]
        try comm.allReduceSum(&sums)
        if sums[2] > 0 { stopRequested = true }
        let n = Double(max(batch.tokens, 1)), ce = sums[0] / n, kd = sums[1] / n
        let d = config.distill, t2 = Double(d.t2Scale ? d.temperature * d.temperature : 1)
        let hiddenMean = hidden.map { sums[5] / n / Double($0.pairs.count) } ?? 0
        let loss = (!hasTeacher ? ce : batch.source != .corpus ? t2 * kd : Double(1 - d.kdRatio) * ce + Double(d.kdRatio) * t2 * kd)
            + Double(d.hiddenWeight) * hiddenMean
        return (loss, ce, kd, sums[3] / n, sums[4] > 0, hiddenMean)
    }

    /// The distillation target of one micro-batch from the teacher side (collective when teachers are spread over
    /// ranks); nil without a teacher.
    func distillTarget(_ mb: MicroBatch) throws -> DistillTarget? {
        guard let placement else { return nil }
        let out = try placement.output(for: mb.teacherBatch), d = config.distill
        hidden?.capture(out.blockOutputs)
        if !mb.validation { alignment = alignment + out.alignment }
        var target = DistillTarget(teachers: out.members.isEmpty ? nil : TeacherEnsemble(members: out.members, combine: combine, route: mb.route),
                                   divergence: d.divergence, temperature: d.temperature, kdRatio: d.kdRatio, t2Scale: d.t2Scale)
        target.topK = out.topK
        if !out.cross.isEmpty {
            // checkTeachers refused teachers of another tokenizer with cross_tokenizer off before anything loaded
            guard let loss = CrossTokenizerLoss(d.crossTokenizer) else { preconditionFailure("cross-tokenizer rows with distill.cross_tokenizer off") }
            target.cross = out.cross
            target.sameWeight = out.sameWeight
            target.crossLoss = loss
            target.uldWeight = d.uldWeight
        }
        return target
    }

    /// QAT: the model's weights of this rank's range from its masters; then, with a split slab, every rank's range
    /// all-gathered (collective).
    func refreshWeights() throws {
        guard let qat else { return }
        qat.refresh(step: step)
        if optimizer.shard.isSplit { try comm.allGather(model.params.base, counts: optimizer.shard.counts) }
    }

    /// The full-precision weights of this rank's range (QAT masters, or the model's own).
    var ownedWeights: UnsafeMutablePointer<Float> { qat?.weights ?? model.params.base + optimizer.shard.range.lowerBound }

    // MARK: - Evaluation and the loop

    /// Validation cross-entropy and (with a teacher, unless `teacher` is false) divergence over `evalBatches`
    /// sequential micro-batches; nil without a validation split.
    public func evaluate(teacher: Bool = true) throws -> LossSum? {
        guard batches.validation != nil else { return nil }
        var total = LossSum()
        for i in 0..<config.train.evalBatches {
            guard let mb = batches.validationBatch(i) else { return nil }
            let target = teacher ? try distillTarget(mb) : nil
            model.forward(tokens: mb.tokens, b: mb.b, t: mb.t)
            total = total + (target.map { model.distillLoss(targets: mb.targets, target: $0) } ?? model.loss(targets: mb.targets))
        }
        return total
    }

    /// ``evaluate(teacher:)`` at the current step, printed and written to the metrics log.
    @discardableResult
    public func evaluateAndLog() throws -> LossSum? {
        guard let v = try evaluate() else { return nil }
        ProgressLog(trainer: self).evaluation(v)
        Watchdog.progress(step: step)
        return v
    }

    /// Runs the remaining steps, logging every `log_every` steps and evaluating on cadence; returns every step's stats.
    /// `checkpoints` writes them on the config's cadence; `stopAfter` ends the call after that many steps (a stop
    /// mid-run, for tests and for `distill train --stop-after`).
    @discardableResult
    public func run(checkpoints: Bool = false, stopAfter: Int? = nil, onStep: (StepStats) -> Void = { _ in }) throws -> [StepStats] {
        let t = config.train
        var history: [StepStats] = []
        var progress = ProgressLog(trainer: self)
        while step < t.steps {
            let s = try trainStep()
            Watchdog.progress(step: step)
            stopForTestIfAsked()
            history.append(s)
            onStep(s)
            progress.step(s)
            if t.evalEvery > 0, s.step % t.evalEvery == 0, let v = try evaluateAndLog() {
                // distillm: the share of student-generated steps follows the validation loss
                let d = config.distill
                batches.distillm?.adapt(validationLoss: hasTeacher ? Double(1 - d.kdRatio) * v.mean + Double(d.kdRatio) * v.kdMean : v.mean)
            }
            let onCadence = config.checkpoint.every > 0 && s.step % config.checkpoint.every == 0
            let written = checkpoints && (onCadence || s.step == t.steps || s.checkpointDue)
            if written { try saveCheckpoint() }
            let stopping = stopRequested || (stopAfter.map { history.count >= $0 } ?? false)
            guard stopping, step < t.steps else { continue }
            if checkpoints, !written { try saveCheckpoint() }
            if stopRequested { KDLog.info("stopped by a signal after step \(step) of \(t.steps)\(checkpoints ? " (checkpoint written)" : "")") }
            break
        }
        return history
    }

    /// Fault injection for the hang test: with DISTILL_STOP_ONCE=FILE set and FILE absent, rank DISTILL_STOP_RANK (1 if
    /// unset) creates FILE after step DISTILL_STOP_STEP (any step if unset) and stops itself with SIGSTOP, as a rank of a
    /// cluster job that stops answering does; the other ranks then wait in their next collective.
    func stopForTestIfAsked() {
        guard let hook = Trainer.stopHook, comm.rank == hook.rank, hook.step == nil || hook.step == step,
              !FileManager.default.fileExists(atPath: hook.marker) else { return }
        FileManager.default.createFile(atPath: hook.marker, contents: Data())
        kill(getpid(), SIGSTOP)
    }

    /// The hang test's settings, read from the environment once (the step loop asks every step).
    static let stopHook: (marker: String, rank: Int, step: Int?)? = {
        let env = ProcessInfo.processInfo.environment
        guard let marker = env["DISTILL_STOP_ONCE"] else { return nil }
        return (marker, env["DISTILL_STOP_RANK"].flatMap(Int.init) ?? 1, env["DISTILL_STOP_STEP"].flatMap(Int.init))
    }()

    /// One cut's heal in a budget's tournament: the run `c` (a ``healConfig``) trained up to step `until` — from its
    /// checkpoint of the round before if there is one (rank 0 looks, as `--resume auto` does), writing one when `until`
    /// is not its last step — and its validation divergence there (the loss without a teacher; nil without a validation
    /// split), with the step it went on from.
    static func heal(_ c: RunConfig, until: Int, corpus: TokenCorpus, comm: any Communicator, teachers: [Transformer], teacherCache: TeacherCache? = nil,
                     initFrom: Transformer? = nil, crossTokenizers: [Int: CrossTokenizerPair] = [:]) throws -> (divergence: Double?, from: Int) {
        let run = try Trainer(config: c, corpus: corpus, comm: comm, teachers: teachers, teacherCache: teacherCache, initFrom: initFrom,
                              crossTokenizers: crossTokenizers)
        try run.resumeChosenByRankZero(atMost: until)
        let from = run.step
        while run.step < until {
            _ = try run.trainStep()
            Watchdog.progress(step: 0)
        }
        if until < c.train.steps { try run.saveCheckpoint() }
        return (try run.evaluate().map { $0.kdSum != 0 ? $0.kdMean : $0.mean }, from)
    }

    // MARK: - Checkpoints: the core (weights, moments, position) and a loop over the parts

    public var checkpointStore: CheckpointStore { CheckpointStore(root: config.checkpoint.dir, keep: config.checkpoint.keep) }

    /// Goes on from the checkpoint rank 0 picks, which every rank receives: `folder` (verified first) if given, else
    /// the newest in `checkpoint.dir` that verifies (torn ones reported and skipped), if it is at or before step
    /// `atMost`. Returns that folder, or nil (nothing changed) when there is none. `distill train --resume` and a
    /// budget's heal both go on this way.
    @discardableResult
    public func resumeChosenByRankZero(folder: String? = nil, atMost: Int = .max, report: (String) -> Void = { _ in }) throws -> String? {
        var chosen = [UInt8]()
        if comm.rank == 0 {
            if let folder {
                _ = try CheckpointStore.verify(dir: folder)
                chosen = Array(folder.utf8)
            } else if let (dir, state) = checkpointStore.newestValid(report: report), state.step <= atMost {
                chosen = Array(dir.utf8)
            }
        }
        try comm.broadcast(&chosen, root: 0)
        guard !chosen.isEmpty else { return nil }
        let dir = String(decoding: chosen, as: UTF8.self)
        try resume(from: dir)
        return dir
    }

    /// Rank 0 writes a checkpoint of the current step (every rank hands it its range of the sharded state); every
    /// rank waits until it is complete.
    @discardableResult
    public func saveCheckpoint() throws -> String? {
        let start = monotonicSeconds()
        var contents = comm.rank == 0 ? CheckpointContents(
            state: TrainingState(step: step, sampleCursor: batches.cursor, worldSize: comm.worldSize, lr: lastLR, config: try config.yaml(),
                                 teachers: checkpointing.teacherManifest),
            files: checkpointing.extraFiles) : nil
        for part in parts { try part.save(into: &contents) }
        var path: String?
        if let contents {
            path = try checkpointStore.save(model: model, moments: optimizer.momentsToWrite(root: 0), state: contents.state, extraFiles: contents.files,
                                            extraWeights: contents.weights)
            KDLog.info(String(format: "checkpoint %@ written in %.2f s", path!, monotonicSeconds() - start))
        }
        try optimizer.sendMoments(root: 0)
        try comm.barrier()
        // QAT: rank 0's weights are the masters now: quantize again (and gather the ranges when split)
        if qat != nil, comm.rank == 0 || optimizer.shard.isSplit { try refreshWeights() }
        lastCheckpointTime = monotonicSeconds()
        Watchdog.progress(step: step)
        return path
    }

    /// Rank 0 loads the checkpoint in `dir` (verified) and sends weights, moments and position to every rank (each
    /// rank its range of sharded state), so ranks need no shared file system. A checkpoint resumes at any world size
    /// and sharding: the global sample cursor carries on, and checkpoints always hold the whole slab.
    public func resume(from dir: String) throws {
        var header = [0.0, 0.0, 0.0, 0.0]
        let start = monotonicSeconds()
        var source: CheckpointSource?
        if comm.rank == 0 {
            let s = CheckpointSource(dir: dir, state: try CheckpointStore.verify(dir: dir))
            try checkResumable(s, manifest: checkpointing.teacherManifest, allowTeacherChange: checkpointing.allowTeacherChange, model: config.model)
            // unsplit moments load in place; split ones go to their owners tensor by tensor as they are read
            try CheckpointStore.load(dir: dir, model: model, moments: optimizer.momentsToRead(root: 0))
            header = [Double(s.state.step), Double(s.state.sampleCursor), Double(s.state.lr), Double(s.state.worldSize)]
            source = s
        } else {
            try optimizer.receiveMoments(layout: model.layout, root: 0)
        }
        try comm.broadcast(&header, root: 0)
        try broadcastFloats(comm, model.params.base, count: model.params.count)
        try optimizer.broadcastMoments(root: 0)
        for part in parts { try part.restore(from: source) }
        let written = Int(header[3])
        KDLog.info(String(format: "resumed from %@: step %d, sample cursor %d (written by %d rank%@), verified and loaded in %.2f s",
                          dir, Int(header[0]), Int(header[1]), written, written == 1 ? "" : "s", monotonicSeconds() - start))
        step = Int(header[0])
        batches.cursor = Int(header[1])
        lastLR = Float(header[2])
        try refreshWeights()
    }

    // MARK: - What the CLI and the log read

    /// Whether the loss has a distillation term.
    public var hasTeacher: Bool { placement != nil }
    var combine: TeacherCombine { config.teacher?.combine ?? .mixture }
    /// Next global sample index.
    public var sampleCursor: Int { batches.cursor }

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
}
