// `distill prepare`: text files, folders and JSONL → train/validation token shards. Files are read in 4 MiB pieces
// and documents streamed to the shard writers, so memory stays bounded; the split is a seeded function of the
// document index, so the output is deterministic. The output folder appears whole or not at all: everything is written
// into a temporary sibling (OUTPUT.tmp-PID) and renamed at the end, like checkpoints; any failure, or a stop asked
// by a signal, removes it and leaves an earlier output as it was.
import Foundation
import KDCore

/// How to turn text into shard tokens.
public struct ShardTokenizer {
    public let vocabSize: Int
    public let hash: UInt64
    /// Plain text → ids (no special-token parsing).
    public let encode: (String) -> [Int32]
    /// A prompt/response pair → (ids, mask): the prompt (chat-formatted when asked) masked out of the loss.
    public let encodePair: (String, String) -> ([Int32], [UInt8])
    /// Appended after each document, when the tokenizer has one.
    public let eos: Int32?
    /// Put before each document (no loss on it) when the model expects BOS first (Gemma); `encode` must not add it.
    public let bos: Int32?
    /// The file the tokenizer came from (recorded in prepare.json: a cross-tokenizer run decodes windows with it).
    public var source: String?

    public init(vocabSize: Int, hash: UInt64, eos: Int32?, bos: Int32? = nil, encode: @escaping (String) -> [Int32],
                encodePair: @escaping (String, String) -> ([Int32], [UInt8])) {
        self.vocabSize = vocabSize; self.hash = hash; self.eos = eos; self.bos = bos; self.encode = encode; self.encodePair = encodePair
    }

    /// The byte tokenizer (vocabulary 256, no EOS).
    public static var bytes: ShardTokenizer { ShardTokenizer(
        vocabSize: 256, hash: fnv1a(["bytes"]), eos: nil, encode: { ByteTokenizer().encode($0) },
        encodePair: { p, r in
            let a = ByteTokenizer().encode(p), b = ByteTokenizer().encode(r)
            return (a + b, [UInt8](repeating: 0, count: a.count) + [UInt8](repeating: 1, count: b.count))
        }) }
}

public struct PrepareOptions {
    public var inputs: [String]
    public var output: String
    public var valFraction: Double = 0.05
    /// A line equal to this ends a document in text files (e.g. "%" for fortune files); nil = one document per file.
    public var separator: String?
    public var excludeSuffixes: [String] = [".dat"]
    public var seed: UInt64 = 1234
    public init(inputs: [String], output: String) { self.inputs = inputs; self.output = output }
}

public struct PrepareSummary: Codable, Equatable {
    public var files = 0, documents = 0, trainDocuments = 0, validationDocuments = 0
    public var trainTokens = 0, validationTokens = 0, bytesRead = 0
    /// The BOS id put before every document, for a model that expects BOS first (training windows then start with it).
    public var bos: Int32?
    /// The tokenizer's file (absolute path), when it came from one.
    public var tokenizer: String?
}

public enum PrepareError: Error, CustomStringConvertible, Equatable {
    case notUTF8(path: String, offset: Int)
    case badJSONL(path: String, line: Int, reason: String)
    case empty(inputs: [String])
    case interrupted(output: String)
    case notAnOutput(path: String, found: String)

    public var description: String {
        switch self {
        case .notUTF8(let p, let o): return "\(p): expected UTF-8 text, found invalid bytes near byte \(o)"
        case .badJSONL(let p, let l, let r): return "\(p):\(l): \(r)"
        case .empty(let i): return "prepare: no text found in \(i.joined(separator: ", ")) (expected non-empty text or JSONL files)"
        case .interrupted(let o): return "prepare: stopped by a signal before the end; nothing was written to \(o)"
        case .notAnOutput(let p, let f):
            return "prepare: --output \(p): expected a new folder or an earlier prepare output to replace, found \(f); nothing was written"
        }
    }
}

/// The files a prepare output holds.
let prepareOutputFiles: Set<String> = ["train.bin", "validation.bin", "prepare.json"]

/// Refuses to replace `path` unless it is absent, an empty folder or an earlier prepare output.
func checkReplaceable(_ path: String) throws {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { return }
    guard isDir.boolValue else { throw PrepareError.notAnOutput(path: path, found: "a file") }
    let other = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { !prepareOutputFiles.contains($0) }.sorted()
    if !other.isEmpty { throw PrepareError.notAnOutput(path: path, found: "a folder with other files (\(other.prefix(3).joined(separator: ", "))\(other.count > 3 ? ", …" : ""))") }
}

/// Cleans up after a prepare that was killed (its process is gone): its OUTPUT.tmp-PID is removed; its OUTPUT.old-PID
/// (the earlier output, moved aside in the instant before the new one was renamed in) goes back if OUTPUT is missing.
func removeAbandonedTemporaries(of output: String) {
    let fm = FileManager.default
    let dir = (output as NSString).deletingLastPathComponent, name = (output as NSString).lastPathComponent
    for f in (try? fm.contentsOfDirectory(atPath: dir.isEmpty ? "." : dir)) ?? [] {
        for mark in [".tmp-", ".old-"] where f.hasPrefix(name + mark) {
            guard let pid = Int32(f.dropFirst(name.count + mark.count)), kill(pid, 0) != 0, errno == ESRCH else { continue }
            let path = (dir as NSString).appendingPathComponent(f)
            if mark == ".old-", !fm.fileExists(atPath: output) { rename(path, output) } else { try? fm.removeItem(atPath: path) }
        }
    }
}

/// Runs the preparation; `progress(bytesDone, bytesTotal)` is called after each piece read, and `stop` before the
/// next one (true: stop, remove what was written and throw ``PrepareError/interrupted(output:)``).
@discardableResult
public func prepareCorpus(_ o: PrepareOptions, tokenizer tk: ShardTokenizer, progress: (Int, Int) -> Void = { _, _ in },
                          stop: () -> Bool = { false }) throws -> PrepareSummary {
    let files = try TokenCorpus.listFiles(o.inputs, excludeSuffixes: o.excludeSuffixes)
    let fm = FileManager.default
    let output = (o.output as NSString).standardizingPath
    try checkReplaceable(output)
    removeAbandonedTemporaries(of: output)
    let tmp = output + ".tmp-\(getpid())"
    try? fm.removeItem(atPath: tmp)
    var staged = o
    staged.output = tmp
    do {
        try fm.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        let s = try writeShards(staged, files: files, tokenizer: tk, progress: progress, stop: { if stop() { throw PrepareError.interrupted(output: output) } })
        // an earlier output steps aside only once the new one is complete
        let old = output + ".old-\(getpid())"
        let replacing = fm.fileExists(atPath: output)
        if replacing { guard rename(output, old) == 0 else { throw KDError.unreadable(path: output, reason: "cannot move the earlier output aside: \(String(cString: strerror(errno)))") } }
        guard rename(tmp, output) == 0 else {
            let why = String(cString: strerror(errno))
            if replacing { rename(old, output) }
            throw KDError.unreadable(path: output, reason: "rename failed: \(why)")
        }
        if replacing { try? fm.removeItem(atPath: old) }
        return s
    } catch {
        try? fm.removeItem(atPath: tmp)
        throw error
    }
}

/// The shards and prepare.json of `files` into `o.output` (a fresh folder).
func writeShards(_ o: PrepareOptions, files: [String], tokenizer tk: ShardTokenizer, progress: (Int, Int) -> Void, stop: () throws -> Void) throws -> PrepareSummary {
    let total = files.reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0) }
    let train = try ShardWriter(path: (o.output as NSString).appendingPathComponent("train.bin"), vocabSize: tk.vocabSize, tokenizerHash: tk.hash)
    let val = try ShardWriter(path: (o.output as NSString).appendingPathComponent("validation.bin"), vocabSize: tk.vocabSize, tokenizerHash: tk.hash)
    let rng = CounterRNG(seed: o.seed, purpose: .dataSample)
    var s = PrepareSummary()
    s.files = files.count
    s.bos = tk.bos
    s.tokenizer = tk.source
    func emit(_ ids: [Int32], _ mask: [UInt8]? = nil, route: UInt8 = 1) throws {
        guard !ids.isEmpty else { return }
        var ids = ids, mask = mask ?? [UInt8](repeating: 1, count: ids.count)
        if let eos = tk.eos { ids.append(eos); mask.append(route) }
        if let bos = tk.bos { ids.insert(bos, at: 0); mask.insert(0, at: 0) }
        let toVal = rng.uniform(0xD0C, UInt64(s.documents)) < Float(o.valFraction)
        try (toVal ? val : train).append(tokens: ids, mask: mask)
        s.documents += 1
        if toVal { s.validationDocuments += 1; s.validationTokens += ids.count } else { s.trainDocuments += 1; s.trainTokens += ids.count }
    }
    for path in files {
        guard let fh = FileHandle(forReadingAtPath: path) else { throw KDError.unreadable(path: path, reason: "permission denied") }
        defer { try? fh.close() }
        let jsonl = path.hasSuffix(".jsonl")
        var carry = Data(), offset = 0, lineNo = 0
        var doc: [Int32] = []
        while true {
            try stop()
            let piece = try fh.read(upToCount: 1 << 22) ?? Data()
            let atEnd = piece.isEmpty
            var buf = carry + piece
            // cut after the last newline (whole lines only); the rest waits for the next piece
            var cut = buf.count
            if !atEnd {
                guard let nl = buf.lastIndex(of: 0x0A) else { carry = buf; continue }
                cut = nl + 1
            }
            carry = buf.subdata(in: cut..<buf.count)
            buf = buf.subdata(in: 0..<cut)
            guard let text = String(data: buf, encoding: .utf8) else {
                throw PrepareError.notUTF8(path: path, offset: offset + firstInvalidUTF8(buf))
            }
            offset += buf.count
            s.bytesRead += buf.count
            if jsonl {
                for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
                    lineNo += 1
                    if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
                    guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                        throw PrepareError.badJSONL(path: path, line: lineNo, reason: "expected a JSON object per line")
                    }
                    // "teacher": i routes the example to member i of a multi-teacher config (stored in the loss mask as 2 + i)
                    var route: UInt8 = 1
                    if let t = obj["teacher"] {
                        guard let i = t as? Int, (0...253).contains(i) else {
                            throw PrepareError.badJSONL(path: path, line: lineNo, reason: "expected \"teacher\" to be a member index 0...253, found \(t)")
                        }
                        route = UInt8(2 + i)
                    }
                    func routed(_ m: [UInt8]) -> [UInt8] { route == 1 ? m : m.map { $0 == 0 ? 0 : route } }
                    if let t = obj["text"] as? String {
                        let ids = tk.encode(t)
                        try emit(ids, routed([UInt8](repeating: 1, count: ids.count)), route: route)
                    } else if let p = obj["prompt"] as? String, let r = obj["response"] as? String {
                        let (ids, mask) = tk.encodePair(p, r)
                        try emit(ids, routed(mask), route: route)
                    } else {
                        throw PrepareError.badJSONL(path: path, line: lineNo, reason: "expected a \"text\" field, or \"prompt\" and \"response\"")
                    }
                }
            } else if let sep = o.separator {
                var current = ""
                for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
                    if line == sep {
                        try emit(doc + tk.encode(current))
                        doc = []
                        current = ""
                    } else {
                        current += line + "\n"
                    }
                }
                // split(…) adds an empty remainder after a final newline; drop the newline it did not have
                if current.hasSuffix("\n") { current.removeLast() }
                doc += tk.encode(current)
            } else {
                doc += tk.encode(text)
            }
            progress(s.bytesRead, total)
            if atEnd { break }
        }
        try emit(doc)
    }
    try train.finish()
    try val.finish()
    guard s.documents > 0 else { throw PrepareError.empty(inputs: o.inputs) }
    let meta = try JSONEncoder().encode(s)
    try meta.write(to: URL(fileURLWithPath: (o.output as NSString).appendingPathComponent("prepare.json")))
    return s
}

/// Byte offset of the first invalid UTF-8 sequence in `d` (d.count if none).
func firstInvalidUTF8(_ d: Data) -> Int {
    var it = d.makeIterator(), dec = UTF8(), pos = 0, consumed = 0
    while true {
        switch dec.decode(&it) {
        case .scalarValue(let s):
            consumed += UTF8.width(s)
            pos = consumed
        case .emptyInput: return d.count
        case .error: return pos
        }
    }
}
