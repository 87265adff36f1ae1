// Plain text → one token stream → train/validation streams → fixed-length windows addressed by a global sample
// index. Windows are visited in a fresh pseudo-random order every epoch, computed (not stored) from the seed,
// so any rank can find sample s without coordination and a resumed run continues at the same cursor.
import Foundation
import KDConfig
import KDCore

/// UTF-8 bytes as tokens 0...255: needs no vocabulary file, and round-trips any text exactly.
public struct ByteTokenizer: Sendable {
    public init() {}
    public var vocabSize: Int { 256 }
    public func encode(_ text: String) -> [Int32] { text.utf8.map { Int32($0) } }
    public func decode(_ tokens: [Int32]) -> String {
        String(decoding: tokens.map { UInt8(truncatingIfNeeded: $0) }, as: UTF8.self)
    }
}

/// Errors raised while reading a corpus.
public enum DataError: Error, CustomStringConvertible, Equatable {
    case pathNotFound(String)
    case noFiles(paths: [String])
    case tooSmall(split: String, tokens: Int, needed: Int)

    public var description: String {
        switch self {
        case .pathNotFound(let p): return "data.train: no such file or folder: \(p)"
        case .noFiles(let paths): return "data.train: expected text files, found none under \(paths.joined(separator: ", "))"
        case .tooSmall(let split, let tokens, let needed):
            return "\(split) split has \(tokens) tokens; expected at least \(needed) (one sequence + 1); add text or lower train.seq_len"
        }
    }
}

/// A tokenized corpus split into train and validation streams.
public struct TokenCorpus: Sendable {
    public let train: [Int32]
    public let validation: [Int32]
    /// Loss masks of prepared shards (1 = predicted); nil = every token counts.
    public var trainMask: [UInt8]?
    public var validationMask: [UInt8]?
    /// Vocabulary the tokens come from (256 for bytes, the shard's for prepared data).
    public var vocabSize = 256
    /// Hash of the tokenizer that prepared the shards (nil for bytes).
    public var tokenizerHash: UInt64?
    /// BOS of a model that expects it first (from prepare.json): every training and validation window starts with it.
    public var bos: Int32?
    /// The tokenizer file the data was prepared with (prepare.json), when recorded.
    public var preparedWith: String?
    /// Files read, in the order they were concatenated.
    public let files: [String]

    /// Block length of the train/validation split, in tokens.
    public static let splitBlock = 4096

    /// Builds the corpus from in-memory tokens (tests) with the same block split as files.
    public init(tokens: [Int32], valFraction: Double, seed: UInt64, files: [String] = []) {
        let rng = CounterRNG(seed: seed, purpose: .dataSample)
        var tr: [Int32] = [], va: [Int32] = []
        var start = 0, block: UInt64 = 0
        while start < tokens.count {
            let end = min(start + TokenCorpus.splitBlock, tokens.count)
            // block → validation with probability valFraction; keyed by block index, not by order of reading
            if rng.uniform(0xB10C, block) < Float(valFraction) { va += tokens[start..<end] } else { tr += tokens[start..<end] }
            start = end
            block += 1
        }
        if va.isEmpty, valFraction > 0, tr.count > 2 * TokenCorpus.splitBlock {  // guarantee a validation set
            va = Array(tr.suffix(TokenCorpus.splitBlock))
            tr.removeLast(TokenCorpus.splitBlock)
        }
        train = tr
        validation = va
        self.files = files
    }

    /// A folder written by `distill prepare` (train.bin + validation.bin).
    public init(shards dir: String) throws {
        let tr = try TokenShard.read(path: (dir as NSString).appendingPathComponent("train.bin"))
        let va = try TokenShard.read(path: (dir as NSString).appendingPathComponent("validation.bin"))
        guard va.vocabSize == tr.vocabSize, va.tokenizerHash == tr.tokenizerHash else {
            throw ShardError.tokenizerMismatch(path: (dir as NSString).appendingPathComponent("validation.bin"), expected: tr.tokenizerHash, found: va.tokenizerHash)
        }
        train = tr.tokens
        validation = va.tokens
        trainMask = tr.mask
        validationMask = va.mask
        vocabSize = tr.vocabSize
        tokenizerHash = tr.tokenizerHash
        files = [dir]
        if let d = FileManager.default.contents(atPath: (dir as NSString).appendingPathComponent("prepare.json")) {
            let summary = try? JSONDecoder().decode(PrepareSummary.self, from: d)
            bos = summary?.bos
            preparedWith = summary?.tokenizer
        }
    }

    /// True when `path` is a folder written by `distill prepare`.
    public static func isShardFolder(_ path: String) -> Bool {
        FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("train.bin"))
    }

    /// Reads a prepared shard folder, or every text file (folders recursively, skipping hidden names and
    /// `excludeSuffixes`) in sorted path order, tokenized as bytes.
    public static func load(_ data: DataConfig, seed: UInt64) throws -> TokenCorpus {
        if data.train.count == 1, isShardFolder(data.train[0]) { return try TokenCorpus(shards: data.train[0]) }
        let files = try listFiles(data.train, excludeSuffixes: data.excludeSuffixes)
        let tok = ByteTokenizer()
        var tokens: [Int32] = []
        for f in files {
            guard let bytes = FileManager.default.contents(atPath: f) else {
                throw KDError.unreadable(path: f, reason: "permission denied or not a regular file")
            }
            tokens += bytes.map { Int32($0) }
            if bytes.last != 0x0A { tokens += tok.encode("\n") }
        }
        return TokenCorpus(tokens: tokens, valFraction: data.valFraction, seed: seed, files: files)
    }

    /// Files named by `paths`: files as given, folders expanded recursively; sorted, deduplicated.
    public static func listFiles(_ paths: [String], excludeSuffixes: [String]) throws -> [String] {
        let fm = FileManager.default
        var out: [String] = []
        for p in paths {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: p, isDirectory: &isDir) else { throw DataError.pathNotFound(p) }
            if !isDir.boolValue {
                out.append(p)
                continue
            }
            guard let e = fm.enumerator(atPath: p) else { throw KDError.unreadable(path: p, reason: "cannot list folder") }
            for case let rel as String in e {
                let name = (rel as NSString).lastPathComponent
                if name.hasPrefix(".") || excludeSuffixes.contains(where: { name.hasSuffix($0) }) { continue }
                let full = (p as NSString).appendingPathComponent(rel)
                var d: ObjCBool = false
                if fm.fileExists(atPath: full, isDirectory: &d), !d.boolValue { out.append(full) }
            }
        }
        out = Array(Set(out)).sorted()
        if out.isEmpty { throw DataError.noFiles(paths: paths) }
        return out
    }
}

/// Non-overlapping windows of `seqLen + 1` tokens over one stream, in a seeded order that changes every epoch.
/// With `bos` (a model that expects BOS first, Gemma), each window is BOS and the next seqLen − 1 tokens, predicting
/// seqLen tokens: the stride stays seqLen and every token is a target once per epoch.
public struct WindowSampler: Sendable {
    public let stream: [Int32]
    /// 1 where a token is a prediction target; nil = all.
    public let mask: [UInt8]?
    public let seqLen: Int
    public let seed: UInt64
    /// Windows per epoch.
    public let windows: Int
    public let bos: Int32?
    /// Offset of a window's first target from its start: 1, or 0 when BOS leads.
    var lead: Int { bos == nil ? 1 : 0 }

    public init(stream: [Int32], mask: [UInt8]? = nil, seqLen: Int, seed: UInt64, split: String = "train", bos: Int32? = nil) throws {
        guard stream.count >= seqLen + 1 else { throw DataError.tooSmall(split: split, tokens: stream.count, needed: seqLen + 1) }
        precondition(mask == nil || mask!.count == stream.count, "WindowSampler: mask and stream lengths differ")
        self.stream = stream
        self.mask = mask
        self.bos = bos
        self.seqLen = seqLen
        self.seed = seed
        windows = (stream.count - 1) / seqLen
    }

    /// Start offset of global sample `s`: epoch s / windows, then an affine permutation i ↦ (a·i + b) mod windows
    /// with a coprime to windows, both drawn from (seed, epoch).
    public func windowStart(sample s: Int) -> Int {
        let w = windows, epoch = s / w, i = s % w
        let rng = CounterRNG(seed: seed, purpose: .dataSample)
        var a = 1 + rng.index(max(w - 1, 1), UInt64(epoch), 1)
        while gcd(a, w) != 1 { a = a % w + 1 }
        let b = rng.index(w, UInt64(epoch), 2)
        return ((a * i + b) % w) * seqLen
    }

    /// Fills inputs and next-token targets of samples `first ..< first + count`, one row each.
    /// - Shapes: inputs, targets [count, seqLen]
    public func fill(inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>, first: Int, count: Int) {
        copyWindows(inputs, targets, first: first, count: count) { windowStart(sample: $0) }
    }

    /// Per row of samples `first ..< first + count` (shuffled, or sequential as for evaluation): the teacher the target
    /// token is routed to (mask value 2 + i → i), or −1 for the combination of all teachers.
    /// - Shapes: routes [count, seqLen]
    public func fillRoutes(_ routes: UnsafeMutablePointer<Int32>, first: Int, count: Int, sequential: Bool = false) {
        for r in 0..<count {
            let w = sequential ? ((first + r) % windows) * seqLen : windowStart(sample: first + r)
            for i in 0..<seqLen {
                let m = mask?[w + lead + i] ?? 1
                routes[r * seqLen + i] = m >= 2 ? Int32(m) - 2 : -1
            }
        }
    }

    /// The largest teacher index the mask routes to, or nil when nothing is routed.
    public var maxRoute: Int? {
        guard let mask, let m = mask.max(), m >= 2 else { return nil }
        return Int(m) - 2
    }

    /// Sequential (unshuffled) windows for evaluation: window r starts at r·seqLen, wrapping around.
    public func fillSequential(inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>, first: Int, count: Int) {
        copyWindows(inputs, targets, first: first, count: count) { ($0 % windows) * seqLen }
    }

    func copyWindows(_ inputs: UnsafeMutablePointer<Int32>, _ targets: UnsafeMutablePointer<Int32>, first: Int, count: Int,
                     start: (Int) -> Int) {
        stream.withUnsafeBufferPointer { s in
            for r in 0..<count {
                let w = start(first + r), lead = self.lead
                if let bos {
                    inputs[r * seqLen] = bos
                    (inputs + r * seqLen + 1).update(from: s.baseAddress! + w, count: seqLen - 1)
                } else {
                    (inputs + r * seqLen).update(from: s.baseAddress! + w, count: seqLen)
                }
                (targets + r * seqLen).update(from: s.baseAddress! + w + lead, count: seqLen)
                if let mask {
                    for i in 0..<seqLen where mask[w + lead + i] == 0 { targets[r * seqLen + i] = -1 }
                }
            }
        }
    }
}

func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
