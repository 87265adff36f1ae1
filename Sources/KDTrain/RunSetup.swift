// Run assembly: everything a training run opens before its trainer exists, in one place (the CLI parses, calls this,
// prints): the data, the teachers (or their offline cache) with their manifest, the model a student is cut from,
// teachers of another tokenizer paired with the student's, the checks that the teachers agree, and the tokenizer a
// checkpoint carries. `distill teacher-cache` opens its teachers through the same functions.
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

/// What a run opened, ready to build its trainer.
public struct RunSetup {
    public let config: RunConfig
    public let corpus: TokenCorpus
    /// The teacher files, in the config's order (none with an offline cache or a self-teacher).
    public let teachers: [LoadedModel]
    /// The files the run depends on (teachers, or the cache's index): a resume checks them.
    public let manifest: [TeacherManifestEntry]
    public let cache: TeacherCache?
    /// `student.teacher`: the model a student is cut from when it is not the (first) teacher.
    public let cutFrom: LoadedModel?
    /// Teachers (by index) with another tokenizer, paired with the student's.
    public let cross: [Int: CrossTokenizerPair]
    /// tokenizer.json for checkpoints, when the student speaks a loaded model's tokens (not a SentencePiece vocabulary:
    /// tokenizer.json would need merges GGUF does not store; eval and generate of such a checkpoint take the teacher's
    /// tokenizer with --teacher, and GGUF exports carry it).
    public let tokenizerFile: Data?
    /// This rank's memory plan (made when `open` was given the rank).
    public var memoryPlan: MemoryPlan?

    /// Opens the data, teachers, cache and cut source `config` names, and checks them against each other. With `rank`
    /// (this rank and the job's size), the memory plan is made after the data and before the teachers load: rank 0
    /// prints its table, a rank it does not fit stops with one line, and each rank loads only its teachers' share.
    public static func open(_ c: RunConfig, rank: (rank: Int, ranks: Int)? = nil) throws -> RunSetup {
        let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
        let sources = c.teacher?.sources ?? []
        // the memory plan, from the teachers' headers, before any of them loads; then each rank loads its share
        let footprints = rank == nil ? [] : try sources.map { try modelFootprint(path: $0.path, maxSeqLen: c.train.seqLen) }
        ProcessMemory.returnFreedMemory()  // the headers' parse
        let plan = try rank.map { r -> MemoryPlan in
            let plan = MemoryPlan(config: c, teachers: footprints, rank: r.rank, ranks: r.ranks, baseline: ProcessMemory.currentRSSBytes())
            let limit = ProcessMemory.rankLimit(ranksOnNode: ranksOnThisNode(r.ranks))
            for line in plan.table(limit: limit) { KDLog.info(line) }
            if let refusal = plan.refusal(limit: limit.bytes, config: c) { throw refusal }
            return plan
        }
        let shares = rank.map { r in
            footprints.indices.map { TeacherShare(config: c, teacher: $0, layers: footprints[$0].config.layers, tied: footprints[$0].config.tiedEmbeddings,
                                                  rank: r.rank, ranks: r.ranks).uses }
        }
        let loaded = try openTeachers(sources.map(\.path), studentVocab: c.model.vocabSize, maxSeqLen: c.train.seqLen,
                                      dataTokenizer: corpus.tokenizerHash, crossTokenizer: c.distill.crossTokenizer, uses: shares)
        var manifest = try sources.flatMap { try teacherFiles($0.path).map { try TeacherManifestEntry(path: $0) } }
        var cache: TeacherCache?
        if let dir = c.teacher?.cache, !dir.isEmpty {
            cache = try TeacherCache(dir: dir)
            manifest = [try TeacherManifestEntry(path: (dir as NSString).appendingPathComponent("cache.json"))]
        }
        // student.init from_teacher: cut from student.teacher, else from the (first) teacher
        let cutFrom = c.student.initFrom == .fromTeacher && !c.student.teacher.isEmpty
            ? try openModel(path: c.student.teacher, maxSeqLen: c.train.seqLen) : nil
        // teachers with another tokenizer (distill.cross_tokenizer) are aligned one by one; the others must agree
        let cross = try crossTokenizerPairs(c, corpus: corpus, loaded: loaded, others: cutFrom.map { [$0] } ?? [])
        try checkTeachersAgree(loaded, paths: sources.map(\.path), cross: Set(cross.pairs.keys))
        let speaks = (loaded + (cutFrom.map { [$0] } ?? [])).compactMap(\.tokenizer) + (cross.student.map { [$0] } ?? [])
        let tok = speaks.first { $0.hash == corpus.tokenizerHash }
        // what the headers, hashes and tokenizer conversions above allocated and freed goes back to the system, so
        // this process's memory is what it holds
        ProcessMemory.returnFreedMemory()
        return RunSetup(config: c, corpus: corpus, teachers: loaded, manifest: manifest, cache: cache, cutFrom: cutFrom, cross: cross.pairs,
                        tokenizerFile: tok?.sentencePiece == nil ? try tok?.hfTokenizerJSON() : nil, memoryPlan: plan)
    }

    /// The trainer of this run on `comm`'s ranks.
    public func makeTrainer(comm: any Communicator, allowTeacherChange: Bool = false) throws -> Trainer {
        let trainer = try Trainer(config: config, corpus: corpus, comm: comm, teachers: teachers.map(\.model), teacherManifest: manifest,
                                  teacherCache: cache, initFrom: cutFrom?.model, crossTokenizers: cross)
        trainer.checkpointing.allowTeacherChange = allowTeacherChange
        if let tokenizerFile { trainer.checkpointing.extraFiles[CheckpointFile.tokenizer] = tokenizerFile }
        // bf16 run, every rank running whole teachers: their dense matrices packed to bf16 once, after the student
        // was cut from them (pipelined stages and groups keep theirs as loaded: a rank packs only what it runs there)
        if BF16.panelKernel != nil, (config.teacher?.placement ?? .replicated) == .replicated {
            for (t, path) in zip(teachers, (config.teacher?.sources ?? []).map(\.path)) {
                let (packed, released) = t.model.packDenseMatricesBF16()
                if packed > 0 {
                    KDLog.info("  teacher \(path): dense matrices packed to bf16 (\(packed >> 20) MiB; their f32 copy released, \(released >> 20) MiB)")
                }
            }
        }
        return trainer
    }

    /// The model a student of this run was cut from (`student.teacher`, else the first teacher) and its path.
    public var cutSource: (path: String, model: Transformer)? {
        guard config.student.initFrom == .fromTeacher else { return nil }
        if let cutFrom { return (config.student.teacher, cutFrom.model) }
        return teachers.first.map { ((config.teacher?.sources ?? [])[0].path, $0.model) }
    }
}

/// The memory plans of every rank of `ranks` for `c`, its teachers' footprints read from their headers.
public func makeMemoryPlans(_ c: RunConfig, ranks: Int, baseline: Int) throws -> [MemoryPlan] {
    let footprints = try (c.teacher?.sources ?? []).map { try modelFootprint(path: $0.path, maxSeqLen: c.train.seqLen) }
    return (0..<ranks).map { MemoryPlan(config: c, teachers: footprints, rank: $0, ranks: ranks, baseline: baseline) }
}

/// Ranks of this job on this node: Open MPI's local size, else all of them (in-process ranks, or one).
public func ranksOnThisNode(_ ranks: Int) -> Int {
    ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? ranks
}

/// Opens the teachers for a student of `studentVocab` tokens. A teacher whose vocabulary tables have more rows than
/// that, all of them padding in its tokenizer (Qwen pads 151,665 tokens to 151,936 or 152,064 rows), is reopened with
/// the student's rows: both distill over the shared ids. A teacher whose tokenizer is not the data's (`dataTokenizer`,
/// the hash in the shards) is another tokenizer: with `distill.cross_tokenizer` off it is refused with one line naming
/// both tokenizers and the option; else it is opened whole, with room for a re-tokenized window (`crossSeqLen`).
/// `uses` (per teacher): the tensors this rank loads (``TeacherShare``); all when nil.
public func openTeachers(_ paths: [String], studentVocab: Int, maxSeqLen: Int, dataTokenizer: UInt64? = nil,
                  crossTokenizer: CrossTokenizer = .off, uses: [@Sendable (String) -> Bool]? = nil) throws -> [LoadedModel] {
    try paths.enumerated().map { i, path in
        let uses = uses?[i] ?? { _ in true }
        let full = try openModel(path: path, maxSeqLen: maxSeqLen, uses: uses)
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
            return try openModel(path: path, maxSeqLen: crossSeqLen(maxSeqLen), uses: uses)
        }
        guard rows > studentVocab else { return full }
        KDLog.info("  teacher \(path): \(rows) vocabulary rows, padding past \(studentVocab); distilling over the \(studentVocab) shared ids")
        return try openModel(path: path, maxSeqLen: maxSeqLen, vocabRows: studentVocab, uses: uses)
    }
}

/// The context a cross-tokenizer teacher is opened with for student windows of `seqLen` tokens.
public func crossSeqLen(_ seqLen: Int) -> Int { 2 * seqLen + 16 }

/// Several teachers with the student's tokenizer must speak the same tokens: the same vocabulary size and, where both
/// carry one, the same tokenizer (teachers with another tokenizer, `cross`, are aligned one by one instead).
public func checkTeachersAgree(_ loaded: [LoadedModel], paths: [String], cross: Set<Int> = []) throws {
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
public func crossTokenizerPairs(_ c: RunConfig, corpus: TokenCorpus, loaded: [LoadedModel],
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
public func teacherFiles(_ path: String) throws -> [String] {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw KDError.fileNotFound(path: path) }
    guard isDir.boolValue else { return [path] }
    return try FileManager.default.contentsOfDirectory(atPath: path).filter { $0 == HFFolder.config || $0.hasSuffix(".safetensors") }
        .sorted().map { (path as NSString).appendingPathComponent($0) }
}
