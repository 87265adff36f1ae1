// `distill train`: a run from its YAML config on every rank of the job; resume, checkpoints, progress, the sample.
import ArgumentParser
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
import KDTrain

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train or distill a student from a YAML config (cross-entropy, plus a divergence from the teacher when the config has one).")

    @Option(help: "YAML run config (see Configs/).") var config: String
    @Option(help: "Override train.steps.") var steps: Int?
    @Option(help: "Override train.threads (0 = all cores).") var threads: Int?
    @Option(help: "Override train.seed.") var seed: UInt64?
    @Option(help: "Override train.precision (f32 or bf16).") var precision: String?
    @Option(parsing: .singleValue, help: "Override data.train (repeatable).") var data: [String] = []
    @Option(help: "Bytes to generate from the trained model at the end (0 = none).") var sampleTokens = 200
    @Flag(help: "Validate the config and print it and each rank's memory plan, without training.") var dryRun = false
    @Option(help: "With --dry-run: plan for this many ranks.") var ranks = 1
    @Option(help: "With --dry-run: ranks sharing this machine's memory (default: all of them).") var ranksPerNode: Int?
    @Option(help: "With --dry-run: plan against this much memory per rank (e.g. 8G, 512M) instead of this machine's.")
    var memoryPerRank: String?
    @Option(help: "'auto' (newest checkpoint that verifies, else start fresh), 'none', or a checkpoint folder.") var resume = ResumeChoice.none
    @Option(help: "Override checkpoint.dir.") var checkpointDir: String?
    @Option(help: "Stop after this many steps in this invocation (the run can be resumed).") var stopAfter: Int?
    @Flag(help: "Resume even if the checkpoint was made with other teacher files.") var allowTeacherChange = false

    func validate() throws {
        if let steps, steps < 1 { throw ValidationError("--steps: expected an integer >= 1, found \(steps)") }
        if let threads, threads < 0 { throw ValidationError("--threads: expected an integer >= 0, found \(threads)") }
        if sampleTokens < 0 { throw ValidationError("--sample-tokens: expected an integer >= 0, found \(sampleTokens)") }
        if let precision, Precision(rawValue: precision) == nil {
            throw ValidationError("--precision: expected \(Precision.choices), found '\(precision)'")
        }
        if let stopAfter, stopAfter < 1 { throw ValidationError("--stop-after: expected an integer >= 1, found \(stopAfter)") }
        if ranks < 1 || (ranksPerNode ?? 1) < 1 {
            throw ValidationError("--ranks, --ranks-per-node: expected integers >= 1, found \(ranks), \(ranksPerNode ?? 1)")
        }
        if let memoryPerRank { _ = try parseBytes(memoryPerRank) }
        if !dryRun && (ranks != 1 || ranksPerNode != nil || memoryPerRank != nil) {
            throw ValidationError("--ranks, --ranks-per-node, --memory-per-rank: expected with --dry-run only (a run plans for its own ranks and memory)")
        }
    }

    /// The config file with command-line overrides applied and validated again.
    func resolvedConfig() throws -> RunConfig {
        var c = try RunConfig.load(path: config)
        if let steps {
            c.train.steps = steps
            // a shorter run from the command line keeps a valid schedule
            c.optimizer.warmupSteps = min(c.optimizer.warmupSteps, steps)
        }
        if let threads { c.train.threads = threads }
        if let seed { c.train.seed = seed }
        if let precision { c.train.precision = Precision(rawValue: precision)! }
        if let checkpointDir { c.checkpoint.dir = checkpointDir }
        if !data.isEmpty { c.data.train = data }
        try c.validate()
        return c
    }

    func run() throws {
        let c: RunConfig
        do {
            c = try resolvedConfig()
            if dryRun {
                print(try c.yaml(), terminator: "")
                try printMemoryPlans(c)
                return
            }
        } catch { throw fail(error) }
        try Job.run(threads: c.train.threads, precision: c.train.precision, products: c.teacher?.products ?? .auto) { comm in
            StopSignal.install(grace: UInt32(ProcessInfo.processInfo.environment["DISTILL_STOP_GRACE"].flatMap(Int.init) ?? 600))
            let setup = try RunSetup.open(c, rank: (comm.rank, comm.worldSize))
            let trainer = try setup.makeTrainer(comm: comm, allowTeacherChange: allowTeacherChange)
            try resumeIfAsked(trainer, comm: comm)
            Watchdog.progress(step: trainer.step)
            Watchdog.start(timeout: c.train.hangTimeout, rank: comm.rank)
            if comm.rank == 0 { trainer.metrics = try MetricsLog(dir: c.checkpoint.dir, resumedStep: trainer.step) }
            printHeader(setup, trainer, comm: comm)
            if trainer.step == 0 { try trainer.evaluateAndLog() }
            let history = try trainer.run(checkpoints: true, stopAfter: stopAfter)
            try printAfterTraining(trainer, history, plan: setup.memoryPlan, comm: comm)
            if trainer.step < c.train.steps {
                KDLog.info("stopped after step \(trainer.step) of \(c.train.steps); continue with --resume auto")
                return
            }
            if let v = try trainer.evaluate(teacher: false)?.mean {
                KDLog.info(String(format: "val loss %.4f | val ppl %.2f | peak RSS %.0f MiB", v, Foundation.exp(v),
                                  Double(ProcessMemory.peakRSSBytes()) / 1048576))
            }
            if sampleTokens > 0, comm.rank == 0, c.model.vocabSize == 256 {
                let tok = ByteTokenizer()
                let out = trainer.model.generate(
                    prompt: tok.encode("\n"), maxNewTokens: min(sampleTokens, c.model.maxSeqLen - 1),
                    sampler: Sampler(temperature: 0.8, topK: 40), rng: CounterRNG(seed: c.train.seed, purpose: .sampling))
                KDLog.info("sample (temperature 0.8, top-k 40):\n" + tok.decode(out))
            }
        }
    }

    /// `--dry-run`: every rank's memory plan for `--ranks` ranks (`--ranks-per-node` of them sharing this machine's
    /// memory), the data counted by its files' sizes; exits non-zero when a rank's plan does not fit.
    func printMemoryPlans(_ c: RunConfig) throws {
        let data = c.data.train.reduce(0) { $0 + fileBytes($1) }
        let baseline = ProcessMemory.currentRSSBytes() + data
        let limit: (bytes: Int, source: String) = try memoryPerRank.map { (try parseBytes($0), "--memory-per-rank \($0)") }
            ?? ProcessMemory.rankLimit(ranksOnNode: ranksPerNode ?? ranks)
        let plans: [MemoryPlan]
        do { plans = try makeMemoryPlans(c, ranks: ranks, baseline: baseline) } catch {
            // the config is valid; the files it names may not be here yet (a dry run before fetching them)
            print("# no memory plan: \(oneLine(error))")
            return
        }
        var refusal: (any Error)?
        for plan in plans {
            print("# " + plan.table(limit: limit).joined(separator: "\n# "))
            refusal = refusal ?? plan.refusal(limit: limit.bytes, config: c)
        }
        if let refusal { throw refusal }
    }

    /// "8G", "512M", "64K" or a number of bytes.
    func parseBytes(_ s: String) throws -> Int {
        guard let v = parseQuantity(s, binary: true) else {
            throw ValidationError("--memory-per-rank: expected a size such as 8G, 512M or 1073741824, found '\(s)'")
        }
        return v
    }

    /// Bytes of a file, or of every file under a folder.
    func fileBytes(_ path: String) -> Int {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else { return 0 }
        let files = isDir.boolValue ? (fm.subpaths(atPath: path) ?? []).map { (path as NSString).appendingPathComponent($0) } : [path]
        return files.reduce(0) { $0 + ((try? fm.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0) }
    }

    /// What the run is: ranks, kernels, the student, its teachers and where they run, the objective, data and batch.
    func printHeader(_ setup: RunSetup, _ trainer: Trainer, comm: any Communicator) {
        let c = trainer.config, m = c.model, sources = c.teacher?.sources ?? []
        if let (path, src) = setup.cutSource {
            KDLog.info("  student cut from \(path): blocks \(trainer.cut.blocks) of \(src.config.layers)"
                        + (trainer.cut.channels.map { ", \($0.count) of \(src.config.dim) residual channels (largest mean |normalized activation|)" } ?? ""))
        }
        if c.qat.enabled {
            let model = trainer.model, plan = model.quantPlan(c.qat)
            let what = c.qat.preset.map { "llama.cpp's \($0) preset" } ?? "\(c.qat.scheme)\(c.qat.embeddings ? " (embedding and head \(c.qat.tableScheme == c.qat.scheme ? "too" : "\(c.qat.tableScheme)"))" : "")"
                + (c.qat.tensorTypes == nil ? "" : ", \(c.qat.tensorTypesSummary)")
            KDLog.info("  QAT     weights \(what)\(c.qat.scheme.isBlockFormat ? ": \(plan.summary(model.layout))" : ""), activations \(c.qat.activations), from step \(c.qat.startStep)")
        }
        KDLog.info("distill train: \(config) on \(comm.worldSize) rank\(comm.worldSize == 1 ? "" : "s") × \(Parallel.threads) thread\(Parallel.threads == 1 ? "" : "s"), OpenBLAS \(BLASCore.current) kernels"
                    + (BF16.kernel.map { ", bf16 matmuls (\($0) kernel\(BF16.activeProducts == .fma ? ", fma products" : ""))" } ?? "")
                    + (QuantizedMatrix.int8Label.map { ", \($0)" } ?? ""))
        KDLog.info("  model   \(m.layers) layers, dim \(m.dim), \(m.heads) heads / \(m.kvHeads) kv, ffn \(m.ffnDim), vocab \(m.vocabSize): "
                   + String(format: "%.2fM parameters", Double(trainer.model.layout.count) / 1e6))
        for (i, t) in setup.teachers.enumerated() {
            let tm = t.model.config, w = setup.teachers.count > 1 ? String(format: ", weight %g", sources[i].weight) : ""
            KDLog.info("  teacher \(sources[i].path) (\(t.kind)): \(tm.layers) layers, dim \(tm.dim)\(w)")
        }
        if let tc = c.teacher, let placement = trainer.placement {
            KDLog.info("  teacher \(placement.summary)")
            KDLog.info("  objective \(c.distill.divergence), kd_ratio \(c.distill.kdRatio), T \(c.distill.temperature)"
                       + (setup.teachers.count > 1 ? ", teachers combined by \(tc.combine)" : ""))
            KDLog.info("  exchange \(tc.exchange)\(tc.exchange == .topk ? " (k = \(tc.topK))" : ""): \(placement.bytesPerToken) B/token to the student's rank")
        }
        KDLog.info("  data    \(setup.corpus.files.count) files, \(setup.corpus.train.count) train / \(setup.corpus.validation.count) validation tokens")
        KDLog.info("  batch   \(c.train.microBatch) × \(c.train.seqLen) tokens × \(c.train.gradAccum) accumulation; \(c.train.steps) steps")
    }

    /// What the run measured: cross-tokenizer alignment, every rank's peak memory, how much of the exchange was hidden.
    /// Collective.
    func printAfterTraining(_ trainer: Trainer, _ history: [StepStats], plan: MemoryPlan?, comm: any Communicator) throws {
        if !trainer.crossTeachers.isEmpty, !history.isEmpty {
            // every position is aligned once per teacher of another tokenizer, on whichever rank runs it
            var v = trainer.alignment.values
            try comm.allReduceSum(&v)
            let a = AlignmentStats(values: v), steps = Double(history.count), step = median(history.map(\.seconds))
            let perStep = a.seconds / Double(comm.worldSize) / steps
            KDLog.info(String(format: "cross-tokenizer: %.1f%% of loss positions aligned, %.1f%% matched (same next token); "
                              + "%.2f teacher tokens per student token; aligning %.1f ms per step per rank (%.2f%% of a %.2f s step)",
                              100 * a.alignedShare, 100 * a.matchedShare, Double(a.teacherTokens) / Double(max(a.studentTokens, 1)),
                              1000 * perStep, 100 * perStep / max(step, 1e-9), step))
        }
        guard comm.worldSize > 1 else { return }
        // every rank's high-water mark of the training (sharded state and the teacher placement change it per rank),
        // before the all-reduce measurement below allocates a copy of the gradient
        func perRank(_ bytes: Int) throws -> String {
            try comm.allGather(Double(bytes) / 1048576).map { String(format: "%.0f", $0) }.joined(separator: " / ") + " MiB"
        }
        let peaks = try perRank(ProcessMemory.peakRSSBytes()), planned = try perRank(plan?.total ?? 0)
        let space = try perRank(ProcessMemory.peakAddressSpaceBytes()), now = try perRank(ProcessMemory.addressSpaceBytes())
        KDLog.info("peak RSS per rank (training): \(peaks); planned \(planned); peak address space \(space), at the end \(now)")
        guard history.count > 1 else { return }
        let blocking = try trainer.sync.measureBlockingAllReduce()
        let exposed = median(history.dropFirst().map(\.exposedCommSeconds))
        KDLog.info(String(format: "gradient all-reduce: %.1f MiB, %.1f ms blocking; %.1f ms per step left after backward (incl. waiting for the slower rank) → %.0f%% hidden",
                          Double(trainer.model.layout.count * 4) / 1048576, blocking * 1000, exposed * 1000,
                          blocking > 0 ? max(0, 100 * (1 - exposed / blocking)) : 0))
    }

    /// `--resume`: rank 0 picks the checkpoint (skipping torn ones), every rank receives it.
    func resumeIfAsked(_ trainer: Trainer, comm: any Communicator) throws {
        switch resume {
        case .none:
            break
        case .folder(let dir):
            try trainer.resumeChosenByRankZero(folder: dir)
        case .auto:
            if try trainer.resumeChosenByRankZero(report: { KDLog.info("resume: \($0)") }) == nil, comm.rank == 0 {
                KDLog.info("resume: no checkpoint in \(trainer.config.checkpoint.dir); starting fresh")
            }
        }
    }
}

/// `--resume`: the newest checkpoint that verifies, none, or a checkpoint folder.
enum ResumeChoice: ExpressibleByArgument, Equatable {
    case auto, none
    case folder(String)

    init?(argument: String) {
        switch argument {
        case "auto": self = .auto
        case "none": self = .none
        case "": return nil
        default: self = .folder(argument)
        }
    }

    var defaultValueDescription: String {
        switch self {
        case .auto: return "auto"
        case .none: return "none"
        case .folder(let d): return d
        }
    }
}
