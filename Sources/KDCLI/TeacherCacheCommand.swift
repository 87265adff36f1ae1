// `distill teacher-cache`: the teacher's top-k rows for every corpus window, written once (sharded across ranks),
// and the checks every command that loads teachers shares.
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

struct TeacherCacheCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "teacher-cache",
        abstract: "Write the teacher's top-k log-probabilities and tail mass (or tokens drawn from its distribution) for every window of the config's corpus (sharded across ranks), so training can use `teacher: {cache: DIR}` with no teacher in memory.")

    @Option(help: "YAML run config: its teacher section (path or members), data, train.seq_len and distill.temperature.") var config: String
    @Option(help: "Output folder (replaced when complete).") var out: String
    @Option(help: "k of the top-k rows (default: teacher.top_k).") var topK: Int?
    @Option(help: "topk (the k most likely tokens and the tail mass) or sampled (--samples tokens drawn from the teacher per position: an unbiased forward-KL signal).")
    var signal = "topk"
    @Option(help: "Tokens drawn per position with --signal sampled (4 bytes each).") var samples = 16
    @Option(help: "Seed of the draws with --signal sampled (default: train.seed).") var seed: UInt64?
    @Flag(help: "Store 8-byte entries (Int32 id, Float log-probability) instead of 4-byte ones (17-bit id, 15-bit level).") var wide = false
    @Option(help: "Windows per teacher forward on each rank.") var batch = 4
    @Option(help: "Compute threads (0 = this node's cores shared among its ranks).") var threads = 0

    func validate() throws {
        if let topK, topK < 1 { throw ValidationError("--top-k: expected an integer >= 1, found \(topK)") }
        if batch < 1 { throw ValidationError("--batch: expected an integer >= 1, found \(batch)") }
        guard signal == "topk" || signal == "sampled" else { throw ValidationError("--signal: expected topk or sampled, found '\(signal)'") }
        if samples < 1 || samples >= 1 << 15 { throw ValidationError("--samples: expected an integer in 1 ..< 32768, found \(samples)") }
        if signal == "sampled" && (wide || topK != nil) { throw ValidationError("--signal sampled: expected --samples (compact entries), found --wide or --top-k") }
    }

    func run() throws {
        let c: RunConfig, tc: TeacherConfig
        do {
            c = try RunConfig.load(path: config)
            guard let t = c.teacher, !t.sources.isEmpty, t.selfSource == .none else {
                throw KDError.invalidInput(what: "\(config)", expected: "a teacher section with path or members", found: "none")
            }
            tc = t
        } catch { throw fail(error) }
        try Job.run(threads: threads, precision: c.train.precision, products: c.teacher?.products ?? .auto) { comm in
            let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
            let sources = tc.sources
            let loaded = try openTeachers(sources.map(\.path), studentVocab: c.model.vocabSize, maxSeqLen: c.train.seqLen,
                                          dataTokenizer: corpus.tokenizerHash, crossTokenizer: c.distill.crossTokenizer)
            let cross = try crossTokenizerPairs(c, corpus: corpus, loaded: loaded, others: [])
            if !cross.pairs.isEmpty, loaded.count != 1 {
                throw KDError.invalidInput(what: "teacher-cache with distill.cross_tokenizer", expected: "one teacher (a cache of another tokenizer's "
                                           + "rows holds one teacher)", found: "\(loaded.count) teachers")
            }
            try checkTeachersAgree(loaded, paths: sources.map(\.path))
            if cross.pairs.isEmpty, let t = loaded.first, t.model.config.vocabSize < corpus.vocabSize {
                throw KDError.invalidInput(what: "teacher vocabulary", expected: ">= the data's \(corpus.vocabSize) tokens", found: "\(t.model.config.vocabSize) in \(sources[0].path)")
            }
            let manifest = try sources.flatMap { try teacherFiles($0.path).map { try TeacherManifestEntry(path: $0) } }
            let vocab = loaded[0].model.config.vocabSize, sampled = signal == "sampled"
            if sampled && (vocab > TeacherCache.compactIDs || !cross.pairs.isEmpty) {
                throw KDError.invalidInput(what: "teacher-cache --signal sampled", expected: "a teacher of the student's tokenizer with at most \(TeacherCache.compactIDs) ids (17-bit entries)",
                                           found: cross.pairs.isEmpty ? "\(vocab) ids" : "another tokenizer")
            }
            let k = min(sampled ? samples : topK ?? tc.topK, vocab)
            let compact = !wide && cross.pairs.isEmpty && vocab <= TeacherCache.compactIDs
            let start = monotonicSeconds()
            var last = 0.0, splitStart = start, current = ""
            try TeacherCache.write(dir: out, corpus: corpus, teachers: loaded.map(\.model), weights: sources.map(\.weight),
                                   combine: tc.combine, manifest: manifest, k: k,
                                   temperature: c.distill.temperature, seqLen: c.train.seqLen, batch: batch, comm: comm,
                                   cross: cross.pairs[0], sampledSeed: sampled ? seed ?? c.train.seed : nil, compact: compact) { split, done, total in
                let now = monotonicSeconds()
                if split != current { (current, splitStart) = (split, last == 0 ? start : last) }
                if done == total || now - last > 10 {
                    last = now
                    KDLog.info(String(format: "teacher-cache %@: %d/%d windows, %.0f tok/s", split, done, total,
                                      Double(done * c.train.seqLen) / max(now - splitStart, 1e-9)))
                }
            }
            let bytes = TeacherCache.bytesPerWindow(seqLen: c.train.seqLen, k: k, compact: compact)
            KDLog.info(String(format: "teacher-cache: wrote %@ (%@, %@, %d B/token, %.1f MiB) in %.1f s on %d rank%@", out,
                              sampled ? "\(k) tokens drawn per position" : "top-\(k)", compact ? "4-byte entries" : "8-byte entries", bytes / c.train.seqLen,
                              Double(bytes * ((corpus.train.count - 1) / c.train.seqLen + max(0, corpus.validation.count - 1) / c.train.seqLen)) / 1048576,
                              monotonicSeconds() - start, comm.worldSize, comm.worldSize == 1 ? "" : "s"))
            // what training pays to read it: every training window decoded into top-k rows, as a micro-batch is filled
            if comm.rank == 0 {
                let cache = try TeacherCache(dir: out), windows = cache.info.trainWindows, per = 64
                let rows = TopKBuffer(n: per * c.train.seqLen, k: k), t0 = monotonicSeconds()
                var w = 0
                while w < windows {
                    let chunk = Array(w..<min(windows, w + per))
                    try cache.fill(chunk.count == per ? rows : TopKBuffer(n: chunk.count * c.train.seqLen, k: k), windows: chunk, validationSplit: false)
                    w += per
                }
                let seconds = max(monotonicSeconds() - t0, 1e-9)
                KDLog.info(String(format: "teacher-cache: read back %d windows in %.3f s (%.0f k tokens/s, %.0f MiB/s of cache)", windows, seconds,
                                  Double(windows * c.train.seqLen) / seconds / 1000, Double(windows * bytes) / seconds / 1048576))
            }
        }
    }
}
