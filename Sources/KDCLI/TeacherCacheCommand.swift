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
        let c: RunConfig, tc: TeacherConfig
        do {
            c = try RunConfig.load(path: config)
            guard let t = c.teacher, !t.sources.isEmpty, t.selfSource == .none else {
                throw KDError.invalidInput(what: "\(config)", expected: "a teacher section with path or members", found: "none")
            }
            tc = t
        } catch { throw fail(error) }
        try Job.run(threads: threads, precision: c.train.precision) { comm in
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
            let k = min(topK ?? tc.topK, loaded[0].model.config.vocabSize)
            let start = monotonicSeconds()
            var last = 0.0
            try TeacherCache.write(dir: out, corpus: corpus, teachers: loaded.map(\.model), weights: sources.map(\.weight),
                                   combine: tc.combine, manifest: manifest, k: k,
                                   temperature: c.distill.temperature, seqLen: c.train.seqLen, batch: batch, comm: comm,
                                   cross: cross.pairs[0]) { split, done, total in
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
        }
    }
}

/// Opens the teachers for a student of `studentVocab` tokens. A teacher whose vocabulary tables have more rows than
/// that, all of them padding in its tokenizer (Qwen pads 151,665 tokens to 151,936 or 152,064 rows), is reopened with
/// the student's rows: both distill over the shared ids. A teacher whose tokenizer is not the data's (`dataTokenizer`,
/// the hash in the shards) is another tokenizer: with `distill.cross_tokenizer` off it is refused with one line naming
/// both tokenizers and the option; else it is opened whole, with room for a re-tokenized window (`crossSeqLen`).
func openTeachers(_ paths: [String], studentVocab: Int, maxSeqLen: Int, dataTokenizer: UInt64? = nil,
                  crossTokenizer: CrossTokenizer = .off) throws -> [LoadedModel] {
    try paths.map { path in
        let full = try openModel(path: path, maxSeqLen: maxSeqLen)
        let rows = full.model.config.vocabSize
        let tok = full.tokenizer
        func isPadding(_ id: Int) -> Bool {
            guard let tokens = tok?.tokens, id < tokens.count else { return true }
            let t = tokens[id]
            return t.isEmpty || t.hasPrefix("[PAD") || t.hasPrefix("<|PAD") || t.hasPrefix("<pad")
        }
        let realPast = rows > studentVocab ? (studentVocab..<rows).first(where: { !isPadding($0) }) : nil
        let otherTokenizer = (dataTokenizer != nil && tok != nil && tok!.hash != dataTokenizer!) || realPast != nil || rows < studentVocab
        if otherTokenizer {
            let theirs = (tok.map { "\($0.vocabSize) tokens, hash \(String($0.hash, radix: 16))" } ?? "\(rows) rows, no tokenizer in the file")
                + (realPast.map { "; id \($0) is the real token '\(tok!.tokens[$0])'" } ?? "")
            let ours = "\(studentVocab) tokens" + (dataTokenizer.map { ", hash \(String($0, radix: 16))" } ?? "")
            guard crossTokenizer != .off else {
                throw KDError.invalidInput(what: "teacher \(path)", expected: "the student's tokenizer (\(ours)), or distill.cross_tokenizer uld or gold "
                                           + "for a teacher with another one", found: "another tokenizer (\(theirs))")
            }
            guard tok != nil else {
                throw KDError.invalidInput(what: "teacher \(path)", expected: "a tokenizer in the file (distill.cross_tokenizer re-tokenizes the "
                                           + "student's windows with it)", found: "none")
            }
            KDLog.info("  teacher \(path): another tokenizer (\(theirs)); distill.cross_tokenizer \(crossTokenizer.rawValue)")
            // a re-tokenized window may be longer than the student's: room for twice as many tokens
            return try openModel(path: path, maxSeqLen: crossSeqLen(maxSeqLen))
        }
        guard rows > studentVocab else { return full }
        KDLog.info("  teacher \(path): \(rows) vocabulary rows, padding past \(studentVocab); distilling over the \(studentVocab) shared ids")
        return try openModel(path: path, maxSeqLen: maxSeqLen, vocabRows: studentVocab)
    }
}

/// The context a cross-tokenizer teacher is opened with for student windows of `seqLen` tokens.
func crossSeqLen(_ seqLen: Int) -> Int { 2 * seqLen + 16 }

/// Several teachers with the student's tokenizer must speak the same tokens: the same vocabulary size and, where both
/// carry one, the same tokenizer (teachers with another tokenizer, `cross`, are aligned one by one instead).
func checkTeachersAgree(_ loaded: [LoadedModel], paths: [String], cross: Set<Int> = []) throws {
    let same = loaded.indices.filter { !cross.contains($0) }
    guard let f = same.first else { return }
    let first = loaded[f]
    for i in same.dropFirst() {
        let t = loaded[i]
        if t.model.config.vocabSize != first.model.config.vocabSize {
            throw KDError.invalidInput(what: "teacher vocabularies", expected: "\(first.model.config.vocabSize) tokens (as \(paths[f]))",
                                       found: "\(t.model.config.vocabSize) tokens in \(paths[i])")
        }
        if let a = first.tokenizer, let b = t.tokenizer, a.hash != b.hash {
            throw KDError.invalidInput(what: "teacher tokenizers", expected: "tokenizer \(a.hash) (as \(paths[f]))", found: "tokenizer \(b.hash) in \(paths[i])")
        }
    }
}

/// The teachers with another tokenizer than the data's, paired with the student's tokenizer (`distill.cross_tokenizer`).
/// The student's tokenizer is `distill.student_tokenizer`, else the one of a loaded model (a teacher, `student.teacher`)
/// with the data's hash, else the file the data's prepare.json names. `cross_tokenizer` set with every teacher on the
/// student's tokenizer runs plain distillation, with a warning.
func crossTokenizerPairs(_ c: RunConfig, corpus: TokenCorpus, loaded: [LoadedModel],
                         others: [LoadedModel]) throws -> (pairs: [Int: CrossTokenizerPair], student: BPETokenizer?) {
    // (a cache run loads no teacher: the cache says what it holds)
    guard c.distill.crossTokenizer != .off, !loaded.isEmpty else { return ([:], nil) }
    let sources = c.teacher?.sources ?? []
    let cross = loaded.indices.filter { i in
        guard let tok = loaded[i].tokenizer else { return false }
        return tok.hash != corpus.tokenizerHash || loaded[i].model.config.vocabSize != c.model.vocabSize
    }
    if cross.isEmpty {
        KDLog.info("warning: distill.cross_tokenizer \(c.distill.crossTokenizer.rawValue), but every teacher has the student's tokenizer: plain distillation")
        return ([:], nil)
    }
    guard let hash = corpus.tokenizerHash else {
        throw KDError.invalidInput(what: "distill.cross_tokenizer", expected: "data prepared with a tokenizer (its windows are decoded to bytes)",
                                   found: "byte-level data")
    }
    var student: BPETokenizer?
    if !c.distill.studentTokenizer.isEmpty {
        student = try loadTokenizer(c.distill.studentTokenizer)
        guard student!.hash == hash else {
            throw KDError.invalidInput(what: "distill.student_tokenizer \(c.distill.studentTokenizer)",
                                       expected: "the tokenizer the data was prepared with (hash \(String(hash, radix: 16)))",
                                       found: "hash \(String(student!.hash, radix: 16))")
        }
    } else if let t = (loaded + others).compactMap(\.tokenizer).first(where: { $0.hash == hash }) {
        student = t
    } else if let named = corpus.preparedWith, FileManager.default.fileExists(atPath: named), let t = try? loadTokenizer(named), t.hash == hash {
        student = t
    }
    guard let student else {
        throw KDError.invalidInput(what: "distill.cross_tokenizer", expected: "the student's tokenizer (hash \(String(hash, radix: 16)), the data's): "
                                   + "distill.student_tokenizer, a teacher or student.teacher with it, or data whose prepare.json names it",
                                   found: "none of these")
    }
    var pairs: [Int: CrossTokenizerPair] = [:]
    for i in cross {
        let pair = CrossTokenizerPair(student: student, teacher: loaded[i].tokenizer!, teacherRows: loaded[i].model.config.vocabSize)
        KDLog.info(String(format: "  teacher %@: vocabulary map by token bytes: %d of the student's %d tokens (%.1f%%) have a teacher twin",
                          sources[i].path, pair.map.mappedStudentTokens, pair.map.studentVocab, 100 * pair.map.studentShare))
        pairs[i] = pair
    }
    return (pairs, student)
}

/// The files a teacher path stands for (a GGUF file, or a folder's config and weights).
func teacherFiles(_ path: String) throws -> [String] {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw KDError.fileNotFound(path: path) }
    guard isDir.boolValue else { return [path] }
    return try FileManager.default.contentsOfDirectory(atPath: path).filter { $0 == HFFolder.config || $0.hasSuffix(".safetensors") }
        .sorted().map { (path as NSString).appendingPathComponent($0) }
}
