// Token shards: what `distill prepare` writes and training reads. One file per split:
//   magic "KDSHARD1" · version u32 · vocab u32 · tokenizer hash u64 · token width u32 (2 or 4) · tokens u64 · docs u64
//   tokens [tokens × width] · loss mask [tokens × u8, 1 = predicted in the loss] · document starts [(docs + 1) × u64]
// all little-endian. Writing streams tokens and mask to side files, so memory stays bounded on large corpora, and the
// finished shard is assembled under a temporary name and renamed.
import Foundation
import KDCore

public enum ShardError: Error, CustomStringConvertible, Equatable {
    case badMagic(path: String)
    case unsupportedVersion(path: String, found: UInt32)
    case truncated(path: String, expected: Int, found: Int)
    case tokenizerMismatch(path: String, expected: UInt64, found: UInt64)
    case vocabMismatch(path: String, expected: Int, found: Int)
    case corrupt(path: String, reason: String)

    public var description: String {
        switch self {
        case .badMagic(let p): return "\(p): not a token shard (expected magic KDSHARD1; run distill prepare)"
        case .unsupportedVersion(let p, let v): return "\(p): shard version \(v) is not supported (expected 1)"
        case .truncated(let p, let e, let f): return "\(p): truncated shard: expected \(e) bytes, found \(f)"
        case .tokenizerMismatch(let p, let e, let f):
            return "\(p): prepared with another tokenizer (hash \(String(f, radix: 16)), expected \(String(e, radix: 16)))"
        case .vocabMismatch(let p, let e, let f): return "\(p): vocabulary of \(f) tokens, expected \(e)"
        case .corrupt(let p, let r): return "\(p): corrupt shard: \(r)"
        }
    }
}

/// A prepared split in memory.
public struct TokenShard: Sendable {
    public static let magic = Array("KDSHARD1".utf8)
    public let vocabSize: Int
    public let tokenizerHash: UInt64
    public let tokens: [Int32]
    /// 1 where the token is a prediction target (prompt tokens of instruction data are 0).
    public let mask: [UInt8]
    /// Start of each document, plus the end.
    public let docStarts: [Int]

    public init(vocabSize: Int, tokenizerHash: UInt64, tokens: [Int32], mask: [UInt8], docStarts: [Int]) {
        self.vocabSize = vocabSize; self.tokenizerHash = tokenizerHash; self.tokens = tokens; self.mask = mask; self.docStarts = docStarts
    }

    public static func read(path: String) throws -> TokenShard {
        // the size first: a file shorter than the header is refused without reading it (Foundation's
        // contents(atPath:) also leaks a 4 KiB buffer on an empty file)
        var st = stat()
        guard stat(path, &st) == 0 else { throw KDError.fileNotFound(path: path) }
        guard st.st_size >= 44 else { throw ShardError.truncated(path: path, expected: 44, found: Int(st.st_size)) }
        guard let d = FileManager.default.contents(atPath: path) else { throw KDError.fileNotFound(path: path) }
        guard d.count >= 44 else { throw ShardError.truncated(path: path, expected: 44, found: d.count) }
        return try d.withUnsafeBytes { raw -> TokenShard in
            guard Array(raw.prefix(8)) == magic else { throw ShardError.badMagic(path: path) }
            func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
            func u64(_ o: Int) -> UInt64 { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
            guard u32(8) == 1 else { throw ShardError.unsupportedVersion(path: path, found: u32(8)) }
            // counts are compared as read, before any arithmetic: each below 2⁴⁰, so the expected size cannot overflow
            let vocab = Int(u32(12)), hash = u64(16), width = Int(u32(24)), rawN = u64(28), rawDocs = u64(36)
            guard width == 2 || width == 4, rawN < 1 << 40, rawDocs < 1 << 40, vocab >= 1 else {
                throw ShardError.corrupt(path: path, reason: "token width \(width) (expected 2 or 4), \(rawN) tokens, \(rawDocs) documents, vocabulary \(vocab)")
            }
            let n = Int(rawN), docs = Int(rawDocs)
            let expected = 44 + n * width + n + (docs + 1) * 8
            guard d.count == expected else { throw ShardError.truncated(path: path, expected: expected, found: d.count) }
            var toks = [Int32](repeating: 0, count: n)
            for i in 0..<n {
                toks[i] = width == 2 ? Int32(raw.loadUnaligned(fromByteOffset: 44 + 2 * i, as: UInt16.self))
                    : Int32(bitPattern: raw.loadUnaligned(fromByteOffset: 44 + 4 * i, as: UInt32.self))
            }
            let mo = 44 + n * width
            let mask = Array(raw[mo..<(mo + n)])
            let rawStarts = (0...docs).map { u64(mo + n + 8 * $0) }
            // everything later indexes with these: tokens inside the vocabulary, documents in order covering the tokens
            if let bad = toks.firstIndex(where: { $0 < 0 || Int($0) >= vocab }) {
                throw ShardError.corrupt(path: path, reason: "token \(bad) is \(toks[bad]), outside the vocabulary of \(vocab)")
            }
            guard rawStarts.first == 0, rawStarts.last == rawN, zip(rawStarts, rawStarts.dropFirst()).allSatisfy({ $0 <= $1 }) else {
                throw ShardError.corrupt(path: path, reason: "document starts are not 0, non-decreasing, ending at the \(n) tokens")
            }
            let starts = rawStarts.map { Int($0) }
            return TokenShard(vocabSize: vocab, tokenizerHash: hash, tokens: toks, mask: mask, docStarts: starts)
        }
    }

    /// Checks that the shard was made by the tokenizer a run uses.
    public func check(path: String, vocabSize v: Int, tokenizerHash h: UInt64) throws {
        guard tokenizerHash == h else { throw ShardError.tokenizerMismatch(path: path, expected: h, found: tokenizerHash) }
        guard vocabSize == v else { throw ShardError.vocabMismatch(path: path, expected: v, found: vocabSize) }
    }
}

/// Streams documents into one split's shard.
public final class ShardWriter {
    let path: String, vocabSize: Int, hash: UInt64, width: Int
    let tokFile: FileHandle, maskFile: FileHandle
    let tokPath: String, maskPath: String
    var starts: [UInt64] = [0]
    public private(set) var tokenCount = 0

    public init(path: String, vocabSize: Int, tokenizerHash: UInt64) throws {
        self.path = path
        self.vocabSize = vocabSize
        hash = tokenizerHash
        width = vocabSize <= 65536 ? 2 : 4
        tokPath = path + ".tokens.tmp"
        maskPath = path + ".mask.tmp"
        guard FileManager.default.createFile(atPath: tokPath, contents: nil), FileManager.default.createFile(atPath: maskPath, contents: nil) else {
            throw KDError.unreadable(path: path, reason: "cannot create files beside it (missing folder or no permission?)")
        }
        tokFile = try FileHandle(forWritingTo: URL(fileURLWithPath: tokPath))
        maskFile = try FileHandle(forWritingTo: URL(fileURLWithPath: maskPath))
    }

    /// Appends one document; `mask` (default all 1) marks the tokens that are prediction targets.
    public func append(tokens: [Int32], mask: [UInt8]? = nil) throws {
        var bytes = [UInt8]()
        bytes.reserveCapacity(tokens.count * width)
        for t in tokens {
            precondition(t >= 0 && Int(t) < vocabSize, "ShardWriter: token \(t) outside vocabulary \(vocabSize)")
            let u = UInt32(t)
            bytes.append(UInt8(u & 0xFF)); bytes.append(UInt8((u >> 8) & 0xFF))
            if width == 4 { bytes.append(UInt8((u >> 16) & 0xFF)); bytes.append(UInt8(u >> 24)) }
        }
        try tokFile.write(contentsOf: bytes)
        try maskFile.write(contentsOf: mask ?? [UInt8](repeating: 1, count: tokens.count))
        tokenCount += tokens.count
        starts.append(UInt64(tokenCount))
    }

    /// Assembles header + tokens + mask + document starts into `path` atomically; removes the side files.
    public func finish() throws {
        try tokFile.close()
        try maskFile.close()
        defer { unlink(tokPath); unlink(maskPath) }
        let tmp = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: tmp, contents: nil) else { throw KDError.unreadable(path: tmp, reason: "cannot create") }
        do {
            let out = try FileHandle(forWritingTo: URL(fileURLWithPath: tmp))
            var header = Data(TokenShard.magic)
            func put<T: FixedWidthInteger>(_ v: T) { var x = v.littleEndian; header.append(Data(bytes: &x, count: MemoryLayout<T>.size)) }
            put(UInt32(1)); put(UInt32(vocabSize)); put(hash); put(UInt32(width)); put(UInt64(tokenCount)); put(UInt64(starts.count - 1))
            try out.write(contentsOf: header)
            for side in [tokPath, maskPath] {
                let inp = try FileHandle(forReadingFrom: URL(fileURLWithPath: side))
                while let chunk = try inp.read(upToCount: 1 << 22), !chunk.isEmpty { try out.write(contentsOf: chunk) }
                try inp.close()
            }
            var tail = Data()
            for s in starts { var x = s.littleEndian; tail.append(Data(bytes: &x, count: 8)) }
            try out.write(contentsOf: tail)
            try out.synchronize()
            try out.close()
            guard rename(tmp, path) == 0 else { throw KDError.unreadable(path: path, reason: "rename failed") }
        } catch {
            unlink(tmp)
            throw error
        }
    }
}

