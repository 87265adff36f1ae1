// The `distill` executable: a command tree of nested types (swift-argument-parser), validate() apart from run().
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
import KDTrain

@main
struct Distill: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distill",
        abstract: "Distill large language models into small, quantized students (under mpirun).",
        subcommands: [Train.self, TeacherCacheCommand.self, Prepare.self, Eval.self, Generate.self, Tokenize.self, Inspect.self, Export.self, Bench.self, CheckpointCommand.self, Report.self, CommCheck.self])
}

/// Prints `error: …` on one line and exits non-zero; used for every failure past argument validation.
func fail(_ error: any Error) -> ExitCode {
    KDLog.error("error: \(error)")
    return ExitCode.failure
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train or distill a student from a YAML config (cross-entropy, plus a divergence from the teacher when the config has one).")

    @Option(help: "YAML run config (see Configs/).") var config: String
    @Option(help: "Override train.steps.") var steps: Int?
    @Option(help: "Override train.threads (0 = all cores).") var threads: Int?
    @Option(help: "Override train.seed.") var seed: UInt64?
    @Option(parsing: .singleValue, help: "Override data.train (repeatable).") var data: [String] = []
    @Option(help: "Bytes to generate from the trained model at the end (0 = none).") var sampleTokens = 200
    @Flag(help: "Validate the config and print it, without training.") var dryRun = false
    @Option(help: "'auto' (newest checkpoint that verifies, else start fresh), 'none', or a checkpoint folder.") var resume = "none"
    @Option(help: "Override checkpoint.dir.") var checkpointDir: String?
    @Option(help: "Stop after this many steps in this invocation (the run can be resumed).") var stopAfter: Int?
    @Flag(help: "Resume even if the checkpoint was made with other teacher files.") var allowTeacherChange = false

    func validate() throws {
        if let steps, steps < 1 { throw ValidationError("--steps: expected an integer >= 1, found \(steps)") }
        if let threads, threads < 0 { throw ValidationError("--threads: expected an integer >= 0, found \(threads)") }
        if sampleTokens < 0 { throw ValidationError("--sample-tokens: expected an integer >= 0, found \(sampleTokens)") }
        if let stopAfter, stopAfter < 1 { throw ValidationError("--stop-after: expected an integer >= 1, found \(stopAfter)") }
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
        if let checkpointDir { c.checkpoint.dir = checkpointDir }
        if !data.isEmpty { c.data.train = data }
        try c.validate()
        return c
    }

    func run() throws {
        var comm: any Communicator = LocalCommunicator()
        do {
            let c = try resolvedConfig()
            if dryRun {
                print(try c.yaml(), terminator: "")
                return
            }
            if MPICommunicator.launchedByMPI { comm = try MPICommunicator.initialize() }
            KDLog.rank = comm.rank
            KDLog.worldSize = comm.worldSize
            StopSignal.install(grace: UInt32(ProcessInfo.processInfo.environment["DISTILL_STOP_GRACE"].flatMap(Int.init) ?? 600))
            // ranks × threads ≤ cores: `threads: 0` shares this node's cores among its ranks
            let local = Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "1") ?? 1
            configureThreads(c.train.threads > 0 ? c.train.threads : max(1, ProcessInfo.processInfo.activeProcessorCount / max(local, 1)))
            let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
            let sources = c.teacher?.sources ?? []
            let loaded = try sources.map { try openModel(path: $0.path, maxSeqLen: c.train.seqLen) }
            try checkTeachersAgree(loaded, paths: sources.map(\.path))
            let teacher = loaded.first
            var manifest = try sources.flatMap { try teacherFiles($0.path).map { try TeacherManifestEntry(path: $0) } }
            var cache: TeacherCache?
            if let dir = c.teacher?.cache, !dir.isEmpty {
                cache = try TeacherCache(dir: dir)
                manifest = [try TeacherManifestEntry(path: (dir as NSString).appendingPathComponent("cache.json"))]
            }
            // student.init from_teacher: cut from student.teacher, else from the (first) teacher
            var cutFrom: LoadedModel?
            if c.student.initFrom == "from_teacher", !c.student.teacher.isEmpty {
                cutFrom = try openModel(path: c.student.teacher, maxSeqLen: c.train.seqLen)
            }
            let trainer = try Trainer(config: c, corpus: corpus, comm: comm, teachers: loaded.map(\.model), teacherManifest: manifest,
                                      teacherCache: cache, initFrom: cutFrom?.model)
            if c.student.initFrom == "from_teacher", let src = cutFrom?.model ?? loaded.first?.model {
                KDLog.info("  student cut from \(c.student.teacher.isEmpty ? sources[0].path : c.student.teacher): blocks \(c.student.keptLayers(teacherLayers: src.config.layers)) of \(src.config.layers)")
            }
            if c.qat.enabled {
                KDLog.info("  QAT     weights \(c.qat.scheme)\(c.qat.embeddings ? " (embedding and head too)" : ""), activations \(c.qat.activations), from step \(c.qat.startStep)")
            }
            trainer.allowTeacherChange = allowTeacherChange
            // the student speaks the teacher's tokens: its checkpoints carry the tokenizer (generate and eval --text work)
            if let tok = teacher?.tokenizer, corpus.tokenizerHash == tok.hash {
                trainer.extraCheckpointFiles["tokenizer.json"] = try tok.hfTokenizerJSON()
            }
            try resumeIfAsked(trainer, comm: comm)
            if comm.rank == 0 { trainer.metrics = try MetricsLog(dir: c.checkpoint.dir, resumedStep: trainer.step) }
            let m = c.model
            KDLog.info("distill train: \(config) on \(comm.worldSize) rank\(comm.worldSize == 1 ? "" : "s") × \(Parallel.threads) thread\(Parallel.threads == 1 ? "" : "s")")
            KDLog.info("  model   \(m.layers) layers, dim \(m.dim), \(m.heads) heads / \(m.kvHeads) kv, ffn \(m.ffnDim), vocab \(m.vocabSize): "
                       + String(format: "%.2fM parameters", Double(trainer.model.layout.count) / 1e6))
            for (i, t) in loaded.enumerated() {
                let tm = t.model.config, w = loaded.count > 1 ? String(format: ", weight %g", sources[i].weight) : ""
                KDLog.info("  teacher \(sources[i].path) (\(t.kind)): \(tm.layers) layers, dim \(tm.dim)\(w)")
            }
            if let tc = c.teacher {
                if let cache {
                    KDLog.info("  teacher the offline cache \(cache.dir): top-\(cache.info.k) rows of \(cache.info.teachers.map(\.path).joined(separator: ", ")), no teacher in memory")
                }
                if trainer.selfTeacher != nil {
                    KDLog.info("  teacher the student itself (self: \(tc.selfSource)\(tc.selfSource == "ema" ? ", decay \(tc.emaDecay)" : ""))")
                }
                KDLog.info("  objective \(trainer.divergence), kd_ratio \(c.distill.kdRatio), T \(c.distill.temperature)\(loaded.count > 1 ? ", teachers combined by \(tc.combine)" : "")")
                let pipelined = tc.placement == "pipelined" && comm.worldSize > 1, grouped = tc.placement == "groups" && comm.worldSize > 1
                let forward = pipelined ? " \((comm.worldSize - 1) * loaded[0].model.config.dim * 4) B/token along the pipeline," : ""
                let remote = pipelined ? "" : grouped ? " (from \(loaded.count) groups of \(comm.worldSize / loaded.count) ranks)" : " (computed there)"
                KDLog.info("  teacher placement \(tc.placement), exchange \(tc.exchange)\(tc.exchange == "topk" ? " (k = \(tc.topK))" : ""):\(forward) \(trainer.teacherBytesPerToken) B/token to the student's rank\(remote)")
            }
            let shard = trainer.optimizer.shard
            if shard.isSplit {
                KDLog.info(String(format: "  state   sharding %@: each rank keeps AdamW moments%@ for its %@ of %.2fM parameters (%@)%@", c.optimizer.sharding.rawValue,
                                  c.qat.enabled ? " and QAT masters" : "", "1/\(shard.parts)", Double(trainer.model.layout.count) / 1e6,
                                  shard.counts.map { String(format: "%.2fM", Double($0) / 1e6) }.joined(separator: " / "),
                                  c.optimizer.sharding == .gradients ? "; gradients reduce-scattered" : "; gradients all-reduced"))
            }
            KDLog.info("  data    \(corpus.files.count) files, \(corpus.train.count) train / \(corpus.validation.count) validation tokens")
            KDLog.info("  batch   \(c.train.microBatch) × \(c.train.seqLen) tokens × \(c.train.gradAccum) accumulation; \(c.train.steps) steps")
            if trainer.step == 0 { try trainer.evaluateAndLog() }
            let history = try trainer.run(checkpoints: true, stopAfter: stopAfter)
            if comm.worldSize > 1, history.count > 1 {
                let blocking = try trainer.sync.measureBlockingAllReduce()
                let exposed = median(history.dropFirst().map(\.exposedCommSeconds))
                KDLog.info(String(format: "gradient all-reduce: %.1f MiB, %.1f ms blocking; %.1f ms per step left after backward (incl. waiting for the slower rank) → %.0f%% hidden",
                                  Double(trainer.model.layout.count * 4) / 1048576, blocking * 1000, exposed * 1000,
                                  blocking > 0 ? max(0, 100 * (1 - exposed / blocking)) : 0))
            }
            if trainer.step < c.train.steps {
                KDLog.info("stopped after step \(trainer.step) of \(c.train.steps); continue with --resume auto")
                (comm as? MPICommunicator)?.finalize()
                return
            }
            if let v = trainer.evaluate() {
                KDLog.info(String(format: "val loss %.4f | val ppl %.2f | peak RSS %.0f MiB", v, Foundation.exp(v),
                                  Double(ProcessMemory.peakRSSBytes()) / 1048576))
            }
            if sampleTokens > 0, comm.rank == 0, m.vocabSize == 256 {
                let tok = ByteTokenizer()
                let out = trainer.model.generate(
                    prompt: tok.encode("\n"), maxNewTokens: min(sampleTokens, m.maxSeqLen - 1),
                    sampler: Sampler(temperature: 0.8, topK: 40), rng: CounterRNG(seed: c.train.seed, purpose: .sampling))
                KDLog.info("sample (temperature 0.8, top-k 40):\n" + tok.decode(out))
            }
            (comm as? MPICommunicator)?.finalize()
        } catch {
            // a failing rank takes the whole job down instead of leaving the others in a collective
            if comm.worldSize > 1 { comm.abort("error: \(error)", code: 1) }
            throw fail(error)
        }
    }

    /// `--resume`: rank 0 picks the checkpoint (skipping torn ones), every rank receives it.
    func resumeIfAsked(_ trainer: Trainer, comm: any Communicator) throws {
        guard resume != "none" else { return }
        var chosen = [UInt8]()
        if comm.rank == 0 {
            if resume == "auto" {
                if let (dir, _) = trainer.checkpointStore.newestValid(report: { KDLog.info("resume: \($0)") }) {
                    chosen = Array(dir.utf8)
                } else {
                    KDLog.info("resume: no checkpoint in \(trainer.config.checkpoint.dir); starting fresh")
                }
            } else {
                _ = try CheckpointStore.verify(dir: resume)
                chosen = Array(resume.utf8)
            }
        }
        try comm.broadcast(&chosen, root: 0)
        if !chosen.isEmpty { try trainer.resume(from: String(decoding: chosen, as: UTF8.self)) }
    }
}

struct TeacherCacheCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "teacher-cache",
        abstract: "Write the teacher's top-k log-probabilities and tail mass for every window of the config's corpus (sharded across ranks), so training can use `teacher: {cache: DIR}` with no teacher in memory.")

    @Option(help: "YAML run config: its teacher section (path or members), data, train.seq_len and distill.temperature.") var config: String
    @Option(help: "Output folder (replaced when complete).") var out: String
    @Option(help: "k of the top-k rows (default: teacher.top_k).") var topK: Int?
    @Option(help: "Windows per teacher forward on each rank.") var batch = 4
    @Option(help: "Compute threads (0 = this node's cores shared among its ranks).") var threads = 0

    func validate() throws {
        if let topK, topK < 1 { throw ValidationError("--top-k: expected an integer >= 1, found \(topK)") }
        if batch < 1 { throw ValidationError("--batch: expected an integer >= 1, found \(batch)") }
    }

    func run() throws {
        var comm: any Communicator = LocalCommunicator()
        do {
            let c = try RunConfig.load(path: config)
            guard let tc = c.teacher, !tc.sources.isEmpty, tc.selfSource == "none" else {
                throw KDError.invalidInput(what: "\(config)", expected: "a teacher section with path or members", found: "none")
            }
            if MPICommunicator.launchedByMPI { comm = try MPICommunicator.initialize() }
            KDLog.rank = comm.rank
            KDLog.worldSize = comm.worldSize
            let local = Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "1") ?? 1
            configureThreads(threads > 0 ? threads : max(1, ProcessInfo.processInfo.activeProcessorCount / max(local, 1)))
            let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
            let sources = tc.sources
            let loaded = try sources.map { try openModel(path: $0.path, maxSeqLen: c.train.seqLen) }
            try checkTeachersAgree(loaded, paths: sources.map(\.path))
            if let t = loaded.first, t.model.config.vocabSize < corpus.vocabSize {
                throw KDError.invalidInput(what: "teacher vocabulary", expected: ">= the data's \(corpus.vocabSize) tokens", found: "\(t.model.config.vocabSize) in \(sources[0].path)")
            }
            let manifest = try sources.flatMap { try teacherFiles($0.path).map { try TeacherManifestEntry(path: $0) } }
            let k = min(topK ?? tc.topK, loaded[0].model.config.vocabSize)
            let start = monotonicSeconds()
            var last = 0.0
            try TeacherCache.write(dir: out, corpus: corpus, teachers: loaded.map(\.model), weights: sources.map(\.weight),
                                   combine: TeacherCombine(rawValue: tc.combine) ?? .mixture, manifest: manifest, k: k,
                                   temperature: c.distill.temperature, seqLen: c.train.seqLen, batch: batch, comm: comm) { split, done, total in
                let now = monotonicSeconds()
                if done == total || now - last > 10 {
                    last = now
                    KDLog.info(String(format: "teacher-cache %@: %d/%d windows, %.0f tok/s", split, done, total,
                                      Double(done * c.train.seqLen) / max(now - start, 1e-9)))
                }
            }
            let bytes = TeacherCache.bytesPerWindow(seqLen: c.train.seqLen, k: k)
            KDLog.info(String(format: "teacher-cache: wrote %@ (top-%d, %d B/token, %.1f MiB) in %.1f s on %d rank%@", out, k, bytes / c.train.seqLen,
                              Double(bytes * ((corpus.train.count - 1) / c.train.seqLen + max(0, corpus.validation.count - 1) / c.train.seqLen)) / 1048576,
                              monotonicSeconds() - start, comm.worldSize, comm.worldSize == 1 ? "" : "s"))
            (comm as? MPICommunicator)?.finalize()
        } catch {
            if comm.worldSize > 1 { comm.abort("error: \(error)", code: 1) }
            throw fail(error)
        }
    }
}

/// Several teachers must speak the same tokens: the same vocabulary size and, where both carry one, the same tokenizer.
func checkTeachersAgree(_ loaded: [LoadedModel], paths: [String]) throws {
    guard let first = loaded.first else { return }
    for (i, t) in loaded.enumerated().dropFirst() {
        if t.model.config.vocabSize != first.model.config.vocabSize {
            throw KDError.invalidInput(what: "teacher vocabularies", expected: "\(first.model.config.vocabSize) tokens (as \(paths[0]))",
                                       found: "\(t.model.config.vocabSize) tokens in \(paths[i])")
        }
        if let a = first.tokenizer, let b = t.tokenizer, a.hash != b.hash {
            throw KDError.invalidInput(what: "teacher tokenizers", expected: "tokenizer \(a.hash) (as \(paths[0]))", found: "tokenizer \(b.hash) in \(paths[i])")
        }
    }
}

/// The files a teacher path stands for (a GGUF file, or a folder's config and weights).
func teacherFiles(_ path: String) throws -> [String] {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw KDError.fileNotFound(path: path) }
    guard isDir.boolValue else { return [path] }
    return try FileManager.default.contentsOfDirectory(atPath: path).filter { $0 == "config.json" || $0.hasSuffix(".safetensors") }
        .sorted().map { (path as NSString).appendingPathComponent($0) }
}

struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "checkpoint", abstract: "Work with checkpoints.",
                                                    subcommands: [Verify.self])

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a checkpoint's files against its checksums (exit 0 / 1).")
        @Argument(help: "A step_XXXXXXXX folder.") var dir: String

        func run() throws {
            do {
                let s = try CheckpointStore.verify(dir: dir)
                print("ok: \(dir): step \(s.step), sample cursor \(s.sampleCursor), written by \(s.worldSize) rank\(s.worldSize == 1 ? "" : "s")")
            } catch { throw fail(error) }
        }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time a training step and a forward pass on named shapes (build with -c release).")

    @Option(name: .customLong("shape"), parsing: .singleValue,
            help: "Shape to measure (repeatable): \(BenchShape.all.map(\.name).joined(separator: ", ")). Default: smollm2-135m and student-8x384.")
    var shapes: [String] = []
    @Option(help: "Modes: train, forward, kd (distillation step from a smollm2-135m-shaped teacher), both (train + forward), or all; default: each shape's own.")
    var mode: String?
    @Option(help: "Comma-separated thread counts.") var threads = "1,2"
    @Option(help: "Sequences per step.") var batch = 8
    @Option(help: "Tokens per sequence.") var seq = 256
    @Option(help: "Timed repeats per measurement (after one warm-up); the median is reported.") var repeats = 5
    @Flag(help: "One JSON object per measurement.") var json = false
    @Option(help: "Measure the forward pass of this model (GGUF or Hugging Face folder, weights as stored) instead of named shapes.")
    var model: String?

    var threadCounts: [Int] { threads.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    func validate() throws {
        for s in shapes where BenchShape.named(s) == nil {
            throw ValidationError("--shape: expected one of \(BenchShape.all.map(\.name).joined(separator: ", ")), found '\(s)'")
        }
        if let mode, !["train", "forward", "kd", "both", "all"].contains(mode) {
            throw ValidationError("--mode: expected train, forward, kd, both or all, found '\(mode)'")
        }
        let counts = threadCounts
        if counts.isEmpty || counts.contains(where: { $0 < 1 }) || counts.count != threads.split(separator: ",").count {
            throw ValidationError("--threads: expected comma-separated integers >= 1, found '\(threads)'")
        }
        if batch < 1 || seq < 2 || repeats < 1 {
            throw ValidationError("--batch, --seq, --repeats: expected >= 1, >= 2, >= 1, found \(batch), \(seq), \(repeats)")
        }
    }

    func run() throws {
        var chosen = (shapes.isEmpty ? ["smollm2-135m", "student-8x384"] : shapes).compactMap(BenchShape.named)
        var load: (() throws -> Transformer)?
        if let model {
            let probe = try openModel(path: model, maxSeqLen: seq)
            chosen = [BenchShape(name: (model as NSString).lastPathComponent, model: probe.model.config, defaultModes: [.forward])]
            load = { try openModel(path: model, maxSeqLen: self.seq).model }
        }
        #if DEBUG
        KDLog.error("warning: debug build; figures are meaningless. Build with: swift build -c release")
        #endif
        for t in threadCounts {
            configureThreads(t)
            let peak = measureSGEMMPeak()
            for s in chosen {
                let modes: [BenchMode] = load != nil ? [.forward] : mode.map {
                    $0 == "both" ? [.train, .forward] : $0 == "all" ? BenchMode.allCases : [BenchMode(rawValue: $0)!]
                } ?? s.defaultModes
                for md in modes {
                    let r = try runBenchmark(shape: s, mode: md, threads: t, batch: batch, seq: seq, repeats: repeats, sgemmPeak: peak, load: load)
                    if json {
                        let enc = JSONEncoder()
                        enc.outputFormatting = [.sortedKeys]
                        print(String(decoding: try enc.encode(r), as: UTF8.self))
                    } else {
                        print(String(format: "%-14@ %-7@ threads %d | %7.0f tok/s | %6.1f GFLOP/s (%.1f MFLOP/token) | sgemm peak %6.1f | MFU %4.1f%% | peak RSS %5.0f MiB",
                                     s.name, md.rawValue, t, r.tokensPerS, r.gflops, r.flopsPerToken / 1e6, r.sgemmPeakGflops,
                                     100 * r.mfu, Double(r.peakRSSBytes) / 1048576))
                    }
                    fflush(stdout)
                }
            }
        }
    }
}
