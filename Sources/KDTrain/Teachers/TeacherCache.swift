// The offline teacher cache: the teacher's top-k log-probabilities and tail mass (or k tokens drawn from its
// distribution: `signal: sampled`) for every window of a prepared corpus, so training can run with no teacher in
// memory (`teacher: {cache: DIR}`).
//   DIR/cache.json         k, signal, encoding, temperature, seq_len, windows and token hash of each split, the teachers
//   DIR/train.topk         per window of seq_len rows, `compact` (format 2): entries [seq_len, k] UInt32 = id (17 bits)
//   DIR/validation.topk    | level (15 bits) << 17, the level a top-k log-probability quantized uniformly over
//                          [−32, 0] (error ≤ 4.9e-4 nats) or a sampled token's count; log tails [seq_len] Float, exact.
//                          `wide` (format 1, vocabularies over 2^17 ids and cross-tokenizer rows): ids [seq_len, k]
//                          Int32 · log-probs [seq_len, k] Float · log tails [seq_len] Float (the exchange's format).
// Windows are the corpus' non-overlapping seq_len + 1 token windows, so the cached rows are exactly the ones a live
// teacher would produce for any sample that lands on that window. `distill teacher-cache` shards the windows across
// ranks (window w on rank w mod N) and rank 0 writes the files (temporary names, fsync, rename).
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

public struct TeacherCacheInfo: Codable, Equatable, Sendable {
    public var format = 1
    public var k: Int
    public var temperature: Float
    public var seqLen: Int
    public var trainWindows: Int, validationWindows: Int
    public var trainTokenHash: String, validationTokenHash: String
    public var teachers: [TeacherManifestEntry]
    /// A teacher with another tokenizer (`distill.cross_tokenizer`): its rows are in its own vocabulary, aligned to the
    /// student's positions (an unaligned row's first id is −1); vocab_map.bin maps its ids to the student's. The
    /// student's tokenizer hash (the data's) and the alignment figures of the written windows. nil otherwise.
    public var studentTokenizerHash: String?
    public var teacherVocab: Int?
    public var alignedShare: Double?, matchedShare: Double?
    /// The precision of the teacher forwards that wrote the rows: "f32", or "bf16-" and the kernel (`train.precision`).
    /// nil in caches written before it was recorded (f32).
    public var precision: String?
    /// `topk` (nil: caches before it was recorded) or `sampled` (k tokens drawn per position with `sampling_seed`).
    public var signal: String?
    public var samplingSeed: UInt64?
    /// `compact` (4 bytes per entry) or nil: `wide` (8).
    public var encoding: String?
    public var isSampled: Bool { signal == "sampled" }
    public var isCompact: Bool { encoding == "compact" }

    enum CodingKeys: String, CodingKey {
        case format, k, temperature, seqLen = "seq_len", trainWindows = "train_windows", validationWindows = "validation_windows"
        case trainTokenHash = "train_token_hash", validationTokenHash = "validation_token_hash", teachers
        case studentTokenizerHash = "student_tokenizer_hash", teacherVocab = "teacher_vocab", alignedShare = "aligned_share"
        case matchedShare = "matched_share", precision, signal, samplingSeed = "sampling_seed", encoding
    }
}

/// A written cache, mapped; fills micro-batch top-k rows for windows.
public final class TeacherCache {
    public let dir: String
    public let info: TeacherCacheInfo
    let train: MappedFile, validation: MappedFile?
    /// A cross-tokenizer cache's teacher → student id map (vocab_map.bin). - Shapes: [teacherVocab]
    public let vocabMap: UnsafeMutablePointer<Int32>?
    public var isCrossTokenizer: Bool { vocabMap != nil }
    /// The ids a cached row may hold (a cross-tokenizer cache marks a row it could not align with a first id of −1):
    /// the teacher's vocabulary, or the student's once ``check(corpus:seqLen:temperature:vocab:)`` has seen it.
    private(set) var allowedIDs: ClosedRange<Int32>
    /// A sampled cache's log(count / k) by count (a count above k reads as k); empty otherwise.
    let logShare: [Float]

    public init(dir: String) throws {
        self.dir = dir
        let infoPath = (dir as NSString).appendingPathComponent("cache.json")
        guard FileManager.default.fileExists(atPath: infoPath) else {
            throw KDError.invalidInput(what: "teacher cache \(dir)", expected: "a folder written by distill teacher-cache (cache.json)", found: "no cache.json")
        }
        do { info = try JSONDecoder().decode(TeacherCacheInfo.self, from: Data(contentsOf: URL(fileURLWithPath: infoPath))) } catch {
            throw KDError.invalidInput(what: "\(infoPath)", expected: "a teacher cache description", found: "\(error)")
        }
        // the description's numbers are checked before any size is computed from them (a hostile cache.json)
        let info = self.info
        guard (1...(1 << 20)).contains(info.k), (1...(1 << 20)).contains(info.seqLen), (1...(1 << 40)).contains(info.trainWindows),
              (0...(1 << 40)).contains(info.validationWindows), (info.teacherVocab ?? 1) >= 1, (info.teacherVocab ?? 1) <= 1 << 24,
              [nil, "topk", "sampled"].contains(info.signal), [nil, "compact"].contains(info.encoding), !info.isSampled || (info.isCompact && info.k < 1 << 15) else {
            throw KDError.invalidInput(what: "\(infoPath)", expected: "k and seq_len in 1...2^20, windows up to 2^40, teacher_vocab up to 2^24, signal topk or sampled (compact, k < 2^15), encoding compact or none",
                                       found: "k \(info.k), seq_len \(info.seqLen), windows \(info.trainWindows) / \(info.validationWindows), teacher_vocab \(info.teacherVocab.map(String.init) ?? "none"), signal \(info.signal ?? "none"), encoding \(info.encoding ?? "none")")
        }
        let per = TeacherCache.bytesPerWindow(seqLen: info.seqLen, k: info.k, compact: info.isCompact)
        func open(_ split: String, windows: Int) throws -> MappedFile? {
            guard windows > 0 else { return nil }
            let p = (dir as NSString).appendingPathComponent("\(split).topk")
            let bad = { (size: Int) in KDError.invalidInput(what: "teacher cache \(p)", expected: "\(windows * per) bytes (\(windows) windows)", found: "\(size) bytes") }
            guard FileManager.default.fileExists(atPath: p) else { throw KDError.fileNotFound(path: p) }
            guard let bytes = checkedProduct([windows, per]) else { throw bad(0) }
            let f = try MappedFile(path: p, minSize: bytes, tooSmall: bad)
            guard f.size == bytes else { throw bad(f.size) }
            return f
        }
        train = try open("train", windows: info.trainWindows)!
        validation = try open("validation", windows: info.validationWindows)
        allowedIDs = (info.teacherVocab == nil ? 0 : -1)...Int32((info.teacherVocab ?? 1 << 24) - 1)
        logShare = info.isSampled ? [-Float.infinity] + (1...info.k).map { logf(Float($0) / Float(info.k)) } : []
        if let tv = info.teacherVocab {
            let p = (dir as NSString).appendingPathComponent("vocab_map.bin")
            guard let d = FileManager.default.contents(atPath: p), d.count == tv * 4 else {
                throw KDError.invalidInput(what: "teacher cache \(p)", expected: "\(tv * 4) bytes (the teacher's \(tv) ids)",
                                           found: FileManager.default.fileExists(atPath: p) ? "another size" : "no file")
            }
            let m = UnsafeMutablePointer<Int32>.allocate(capacity: tv)
            _ = d.withUnsafeBytes { memcpy(m, $0.baseAddress!, tv * 4) }
            vocabMap = m
        } else {
            vocabMap = nil
        }
    }
    deinit { vocabMap?.deallocate() }

    public static func bytesPerWindow(seqLen: Int, k: Int, compact: Bool) -> Int { seqLen * (compact ? 4 * k + 4 : TopK.bytesPerToken(k: k)) }

    /// The compact encoding's log-probability levels: 15 bits uniform over [−logFloor, 0] (lower values clamp to it).
    static let logFloor: Float = 32, levels: Float = 32767
    /// Ids a compact entry holds: 17 bits.
    public static let compactIDs = 1 << 17

    /// The cache must describe this corpus, window length, temperature and a student of `vocab` tokens, and serve
    /// `objective` (a sampled signal serves forward KL only).
    public func check(corpus: TokenCorpus, seqLen: Int, temperature: Float, vocab: Int, objective: Objective = .fkl) throws {
        func need(_ ok: Bool, _ what: String, _ expected: String, _ found: String) throws {
            if !ok { throw KDError.invalidInput(what: "teacher cache \(dir): \(what)", expected: expected, found: found) }
        }
        try need(!info.isSampled || objective == .fkl, "signal sampled", "distill.objective fkl (tokens drawn from the teacher estimate the forward-KL "
                 + "gradient without bias; \(objective.rawValue) needs the teacher's probabilities of tokens not drawn: write a top-k cache for it)", "\(objective.rawValue)")
        if info.teacherVocab == nil { allowedIDs = 0...Int32(vocab - 1) }
        if let map = vocabMap, let tv = info.teacherVocab, let bad = (0..<tv).first(where: { map[$0] < -1 || Int(map[$0]) >= vocab }) {
            try need(false, "vocab_map.bin", "student ids in -1..<\(vocab)", "\(map[bad]) for teacher id \(bad)")
        }
        if let made = info.studentTokenizerHash {
            let ours = corpus.tokenizerHash.map { String($0, radix: 16) } ?? "bytes"
            try need(made == ours, "student tokenizer", "the data's tokenizer (hash \(ours))", "a cache made for tokenizer \(made)")
        }
        try need(info.seqLen == seqLen, "seq_len", "\(seqLen) (train.seq_len)", "\(info.seqLen)")
        try need(info.temperature == temperature, "temperature", "\(temperature) (distill.temperature)", "\(info.temperature)")
        try need(info.trainTokenHash == String(tokenHash(corpus.train), radix: 16), "training tokens",
                 "the corpus of data.train (hash \(String(tokenHash(corpus.train), radix: 16)))", "hash \(info.trainTokenHash)")
        try need(info.validationTokenHash == String(tokenHash(corpus.validation), radix: 16), "validation tokens",
                 "the corpus' validation split", "hash \(info.validationTokenHash)")
    }

    /// Copies the rows of `windows` (of a split) into consecutive seq_len-row blocks of `out`; a window holding an id
    /// outside ``allowedIDs`` (a damaged file: the ids index the student's logits) is an error.
    public func fill(_ out: TopKBuffer, windows: [Int], validationSplit: Bool) throws {
        let file = validationSplit ? validation! : train
        let s = info.seqLen, k = info.k, per = TeacherCache.bytesPerWindow(seqLen: s, k: k, compact: info.isCompact)
        precondition(out.k == k && out.n == windows.count * s, "TeacherCache.fill: buffer shape")
        for (i, w) in windows.enumerated() {
            try decode(window: file.base + w * per, into: out, row0: i * s) { id in
                KDError.invalidInput(what: "teacher cache \(dir), window \(w) of \(validationSplit ? "validation" : "train")",
                                     expected: "token ids in \(allowedIDs)", found: "\(id)")
            }
        }
    }

    /// Writes rows row0 ..< row0 + seqLen of `rows` as one window of the cache's encoding at `dst`.
    static func encode(_ rows: TopKBuffer, row0: Int, seqLen s: Int, compact: Bool, sampled: Bool, into dst: UnsafeMutableRawPointer) {
        let k = rows.k
        guard compact else {
            dst.copyMemory(from: rows.raw + row0 * k * 4, byteCount: s * k * 4)
            (dst + s * k * 4).copyMemory(from: rows.raw + rows.n * k * 4 + row0 * k * 4, byteCount: s * k * 4)
            (dst + s * k * 8).copyMemory(from: rows.raw + rows.n * k * 8 + row0 * 4, byteCount: s * 4)
            return
        }
        let entries = dst.assumingMemoryBound(to: UInt32.self), ids = rows.ids + row0 * k, lp = rows.logProbs + row0 * k
        for e in 0..<(s * k) {
            // a sampled entry keeps its count (exact: its log-probability is log(count / k)); a top-k entry its level
            let level = sampled ? (lp[e] == -.infinity ? 0 : (exp(Double(lp[e])) * Double(k)).rounded())
                                : Double(min(levels, (-lp[e] / logFloor * levels).rounded()))
            entries[e] = UInt32(ids[e]) | UInt32(level) << 17
        }
        (dst + s * k * 4).copyMemory(from: rows.logTail + row0, byteCount: s * 4)
    }

    /// Reads one window at `src` into rows row0 ..< row0 + seq_len of `out`; an id outside ``allowedIDs`` (a damaged
    /// file: the ids index the student's logits) throws `bad(id)`.
    func decode(window src: UnsafeRawPointer, into out: TopKBuffer, row0: Int, bad: (Int32) -> any Error) throws {
        let s = info.seqLen, k = info.k, ids = out.ids + row0 * k, lp = out.logProbs + row0 * k, allowed = allowedIDs
        if info.isCompact {
            // a sampled level is a count of k draws (its log-share from the table), a top-k one a log-probability level
            let entries = src.assumingMemoryBound(to: UInt32.self)
            for e in 0..<(s * k) {
                let id = Int32(entries[e] & 0x1FFFF), level = entries[e] >> 17
                guard allowed.contains(id) else { throw bad(id) }
                ids[e] = id
                lp[e] = info.isSampled ? logShare[min(Int(level), k)] : -Float(level) * TeacherCache.logFloor / TeacherCache.levels
            }
            (out.logTail + row0).update(from: (src + s * k * 4).assumingMemoryBound(to: Float.self), count: s)
            return
        }
        let wide = src.assumingMemoryBound(to: Int32.self)
        if let b = (0..<(s * k)).first(where: { !allowed.contains(wide[$0]) }) { throw bad(wide[b]) }
        ids.update(from: wide, count: s * k)
        lp.update(from: (src + s * k * 4).assumingMemoryBound(to: Float.self), count: s * k)
        (out.logTail + row0).update(from: (src + s * k * 8).assumingMemoryBound(to: Float.self), count: s)
    }

    /// Computes and writes a cache (collective: every rank calls it). Teachers are combined as in training.
    /// With `cross` (one teacher with another tokenizer), its rows are aligned to the student's positions.
    public static func write(dir: String, corpus: TokenCorpus, teachers: [Transformer], weights: [Float], combine: TeacherCombine,
                             manifest: [TeacherManifestEntry], k: Int, temperature: Float, seqLen: Int, batch: Int,
                             comm: any Communicator, cross: CrossTokenizerPair? = nil, sampledSeed: UInt64? = nil, compact: Bool = true,
                             progress: (String, Int, Int) -> Void = { _, _, _ in }) throws {
        precondition(cross == nil || teachers.count == 1, "TeacherCache.write: a cross-tokenizer cache holds one teacher")
        let aligner = cross.map { CrossTokenizerTeacher(model: teachers[0], spec: CrossTokenizerTeacherSpec(pair: $0, k: k, temperature: temperature)) }
        var targets = [Int32](repeating: -1, count: batch * seqLen)
        let fm = FileManager.default
        let tmp = dir + ".tmp-\(getpid())"
        var info = TeacherCacheInfo(k: k, temperature: temperature, seqLen: seqLen, trainWindows: 0, validationWindows: 0,
                                    trainTokenHash: String(tokenHash(corpus.train), radix: 16),
                                    validationTokenHash: String(tokenHash(corpus.validation), radix: 16), teachers: manifest)
        info.precision = BF16.label
        // compact entries hold ids below 2^17 and no unaligned row's −1: other vocabularies and cross-tokenizer rows stay wide
        let compact = compact && cross == nil && (teachers.first?.config.vocabSize ?? 0) <= compactIDs
        precondition(sampledSeed == nil || (compact && k < 1 << 15), "TeacherCache.write: a sampled cache is compact, with k < 2^15")
        info.signal = sampledSeed == nil ? "topk" : "sampled"
        info.samplingSeed = sampledSeed
        info.encoding = compact ? "compact" : nil
        if compact { info.format = 2 }
        if comm.rank == 0 {
            try? fm.removeItem(atPath: tmp)
            try fm.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        }
        let per = bytesPerWindow(seqLen: seqLen, k: k, compact: compact)
        for (split, stream, mask) in [("train", corpus.train, corpus.trainMask), ("validation", corpus.validation, corpus.validationMask)] {
            let windows = stream.count > seqLen ? (stream.count - 1) / seqLen : 0
            if split == "train" { info.trainWindows = windows } else { info.validationWindows = windows }
            guard windows > 0 else { continue }
            let path = (tmp as NSString).appendingPathComponent("\(split).topk")
            let handle: FileHandle? = comm.rank == 0 ? try {
                fm.createFile(atPath: path, contents: nil)
                guard let h = FileHandle(forWritingAtPath: path) else { throw KDError.unreadable(path: path, reason: "cannot create") }
                return h
            }() : nil
            // rounds of `batch` windows per rank: round r covers windows [r·N·batch, (r+1)·N·batch), rank i the i-th slice
            let N = comm.worldSize, roundSize = N * batch
            let rows = TopKBuffer(n: batch * seqLen, k: k)
            var tokens = [Int32](repeating: 0, count: batch * seqLen)
            // examples the data routes to one teacher (mask 2 + i) take that teacher's rows, as in training
            let routed = teachers.count > 1 && (mask?.contains { $0 >= 2 } ?? false)
            var routes = [Int32](repeating: -1, count: batch * seqLen)
            var incoming = [UInt8](repeating: 0, count: batch * per)
            var round = 0
            while round * roundSize < windows {
                let lo = round * roundSize + comm.rank * batch, count = max(0, min(batch, windows - lo))
                var block = [UInt8](repeating: 0, count: batch * per)
                if count > 0 {
                    stream.withUnsafeBufferPointer { s in
                        for i in 0..<batch {
                            // a short last slice repeats its last window (computed, not written)
                            let w = lo + min(i, count - 1)
                            tokens.withUnsafeMutableBufferPointer { ($0.baseAddress! + i * seqLen).update(from: s.baseAddress! + w * seqLen, count: seqLen) }
                            if routed, let mask {
                                for j in 0..<seqLen { let m = mask[w * seqLen + 1 + j]; routes[i * seqLen + j] = m >= 2 ? Int32(m) - 2 : -1 }
                            }
                        }
                    }
                    if let aligner {
                        // each window's next tokens (the last one extends it past the window, as in training)
                        stream.withUnsafeBufferPointer { s in
                            for i in 0..<batch {
                                let w = lo + min(i, count - 1)
                                for j in 0..<seqLen { targets[i * seqLen + j] = s[w * seqLen + 1 + j] }
                            }
                        }
                        // only the windows written count (a short last slice repeats one)
                        let aligned = tokens.withUnsafeBufferPointer { tp in
                            targets.withUnsafeBufferPointer {
                                aligner.output(tokens: tp.baseAddress!, targets: $0.baseAddress!, b: batch, t: seqLen, counted: count)
                            }
                        }
                        rows.raw.copyMemory(from: aligned.raw, byteCount: rows.byteCount)
                    } else {
                        var members: [TeacherSource] = []
                        for (t, w) in zip(teachers, weights) {
                            tokens.withUnsafeBufferPointer { t.forward(tokens: $0.baseAddress!, b: batch, t: seqLen) }
                            members.append(TeacherSource(head: t.lmHeadWeight, hidden: t.finalHidden, weight: w))
                        }
                        // a sampled row's draws are keyed by its global position: split, window, row
                        let splitKey: UInt64 = split == "train" ? 0 : 1 << 62
                        let sampled = sampledSeed.map { seed in (seed: seed, key: { (r: Int) in splitKey | UInt64((lo + min(r / seqLen, count - 1)) * seqLen + r % seqLen) }) }
                        routes.withUnsafeBufferPointer { rp in
                            rows.fill(ensemble: TeacherEnsemble(members: members, combine: combine, route: routed ? rp.baseAddress! : nil),
                                      temperature: temperature, chunk: 256, sampled: sampled)
                        }
                    }
                    // regroup the micro-batch's three sections into per-window blocks
                    block.withUnsafeMutableBytes { b in
                        for i in 0..<count {
                            encode(rows, row0: i * seqLen, seqLen: seqLen, compact: compact, sampled: sampledSeed != nil, into: b.baseAddress! + i * per)
                        }
                    }
                }
                // rank 0 appends the round's slices in rank order
                for r in 0..<N {
                    let rlo = round * roundSize + r * batch, rc = max(0, min(batch, windows - rlo))
                    guard rc > 0 else { break }
                    if comm.rank == 0 {
                        if r == 0 {
                            try handle!.write(contentsOf: Data(block[0..<(rc * per)]))
                        } else {
                            try incoming.withUnsafeMutableBytes { try comm.receive($0.baseAddress!, bytes: rc * per, from: r, tag: 500 + round % 1000) }
                            try handle!.write(contentsOf: Data(incoming[0..<(rc * per)]))
                        }
                    } else if r == comm.rank {
                        try block.withUnsafeBytes { try comm.send($0.baseAddress!, bytes: rc * per, to: 0, tag: 500 + round % 1000) }
                    }
                }
                progress(split, min(windows, (round + 1) * roundSize), windows)
                round += 1
            }
            if let handle {
                try handle.synchronize()
                try handle.close()
            }
        }
        if let cross, let aligner {
            var v = aligner.stats.values
            try comm.allReduceSum(&v)
            let a = AlignmentStats(values: v)
            info.studentTokenizerHash = corpus.tokenizerHash.map { String($0, radix: 16) } ?? "bytes"
            info.teacherVocab = cross.map.teacherToStudent.count
            info.alignedShare = a.alignedShare
            info.matchedShare = a.matchedShare
            if comm.rank == 0 {
                let map = cross.map.teacherToStudent.withUnsafeBytes { Data($0) }
                try atomicWrite(path: (tmp as NSString).appendingPathComponent("vocab_map.bin")) { try $0.write(contentsOf: map) }
            }
        }
        if comm.rank == 0 {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try enc.encode(info)
            try atomicWrite(path: (tmp as NSString).appendingPathComponent("cache.json")) { try $0.write(contentsOf: data) }
            if fm.fileExists(atPath: dir) { try fm.removeItem(atPath: dir) }
            try fm.moveItem(atPath: tmp, toPath: dir)
        }
        try comm.barrier()
    }
}
