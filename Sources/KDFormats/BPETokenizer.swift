// Byte-level BPE (GPT-2 family) as llama.cpp builds it from GGUF metadata (`tokenizer.ggml.model = gpt2`) and as
// Hugging Face `tokenizers` runs it: pre-tokenize with the model's split rules, map bytes to GPT-2's printable
// characters, merge by rank, look up ids. Control tokens are matched in the text only when asked (`special`).
// The same class runs a SentencePiece vocabulary (`tokenizer.ggml.model = llama`; SentencePiece.swift) when built with
// one: merges by score instead of rank, byte fallback, no pre-tokenizer.
import Foundation
import KDCore

/// How text is split into words before BPE (`tokenizer.ggml.pre`).
public enum PreTokenizer: String, Sendable, CaseIterable {
    /// GPT-2's rule: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    case gpt2 = "gpt-2"
    /// SmolLM: every digit is its own word, then GPT-2's rule.
    case smollm
    /// Llama 3: case-insensitive contractions, [^\r\n\p{L}\p{N}]?\p{L}+, digits in runs of at most 3, newline runs.
    case llamaBPE = "llama-bpe"
    /// Qwen2: as Llama 3 with single digits.
    case qwen2

    /// The rule for a `tokenizer.ggml.pre` value: a missing value or llama.cpp's `default` is GPT-2's rule (as
    /// llama.cpp reads it); a name whose split rule this tokenizer does not implement is refused, not guessed (its
    /// words would differ from the teacher's, and so would every token id).
    public init(ggml name: String?) throws {
        switch name {
        case nil, "default", "gpt-2", "gpt2": self = .gpt2
        case "smollm": self = .smollm
        case "llama-bpe", "llama3", "llama-v3": self = .llamaBPE
        case "qwen2": self = .qwen2
        case let other?: throw TokenizerError.unsupportedPreTokenizer(other)
        }
    }
}

public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    case unsupportedModel(String)
    case unsupportedPreTokenizer(String)
    case missing(String)
    case badMerge(String)
    case badTokenID(key: String, found: String, vocabulary: Int)

    public var description: String {
        switch self {
        case .unsupportedModel(let m): return "tokenizer model '\(m)' is not supported (supported: gpt2 byte-level BPE, llama SentencePiece)"
        case .unsupportedPreTokenizer(let p):
            return "tokenizer pre-tokenizer '\(p)' is not supported (supported: default/gpt-2, smollm, llama-bpe, qwen2): its words, and so its "
                + "token ids, would differ from the model's"
        case .missing(let what): return "tokenizer: \(what) is missing"
        case .badMerge(let m): return "tokenizer: merge '\(m)' is not two tokens of the vocabulary"
        case .badTokenID(let k, let f, let n): return "tokenizer: \(k) must be a token id in 0..<\(n), found \(f)"
        }
    }
}

/// A byte-level BPE tokenizer.
public final class BPETokenizer: @unchecked Sendable {
    public let tokens: [String]
    public let pre: PreTokenizer
    public let bos: Int32?, eos: Int32?
    public let addBOS: Bool
    /// Identity of the vocabulary, merges and split rule (stored in token shards).
    public let hash: UInt64
    /// The merges in rank order, as "left right".
    public let mergeList: [String]
    /// Ids of control and user-defined tokens.
    public let specialIDs: [Int32]
    /// Scores, token types and space handling of a SentencePiece vocabulary; nil for byte-level BPE.
    public let sentencePiece: SentencePieceVocab?
    /// Control and user-defined tokens, longest first (matched in text when `special` is set).
    let specials: [(String, Int32)]
    let ids: [String: Int32]
    /// (left, right) → (rank, merged id)
    let merges: [UInt64: (Int32, Int32)]
    let byteToChar: [String]
    var charToByte: [Character: UInt8]
    var cache: [String: [Int32]] = [:]
    let lock = NSLock()

    public init(tokens: [String], merges: [String], special: [Int32], pre: PreTokenizer, bos: Int32?, eos: Int32?, addBOS: Bool,
                sentencePiece: SentencePieceVocab? = nil) throws {
        guard tokens.count <= Int(Int32.max) else { throw TokenizerError.badTokenID(key: "the vocabulary size", found: "\(tokens.count)", vocabulary: Int(Int32.max)) }
        for (key, id) in [("bos_token_id", bos), ("eos_token_id", eos)] {
            if let id, !(0..<Int32(tokens.count)).contains(id) { throw TokenizerError.badTokenID(key: key, found: "\(id)", vocabulary: tokens.count) }
        }
        self.tokens = tokens
        self.pre = pre
        self.bos = bos
        self.eos = eos
        self.addBOS = addBOS
        self.sentencePiece = sentencePiece
        if let sp = sentencePiece {
            hash = fnv1a(["sentencepiece", sp.addSpacePrefix ? "space-prefix" : ""] + tokens + sp.scores.map { String($0.bitPattern) }
                         + sp.types.map { String($0.rawValue) })
        } else {
            hash = fnv1a([pre.rawValue] + tokens + merges)
        }
        mergeList = merges
        specialIDs = special
        var ids: [String: Int32] = [:]
        for (i, t) in tokens.enumerated() where ids[t] == nil { ids[t] = Int32(i) }
        self.ids = ids
        var table: [UInt64: (Int32, Int32)] = [:]
        for (rank, m) in merges.enumerated() {
            let parts = m.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, let a = ids[String(parts[0])], let b = ids[String(parts[1])] else {
                throw TokenizerError.badMerge(m)
            }
            guard let merged = ids[String(parts[0]) + String(parts[1])] else { continue }
            let key = UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))
            if table[key] == nil { table[key] = (Int32(rank), merged) }
        }
        self.merges = table
        specials = special.map { (tokens[Int($0)], $0) }.filter { !$0.0.isEmpty }.sorted { $0.0.count > $1.0.count }
        // GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 upwards
        var b2c = [String](repeating: "", count: 256), c2b: [Character: UInt8] = [:]
        var next = 256
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            let scalar = Unicode.Scalar(printable ? b : next)!
            if !printable { next += 1 }
            b2c[b] = String(Character(scalar))
            c2b[Character(scalar)] = UInt8(b)
        }
        byteToChar = b2c
        charToByte = c2b
    }

    public var vocabSize: Int { tokens.count }

    /// Token ids of `text`; with `special`, control tokens written in the text (`<|im_start|>`) become their ids.
    /// A BOS is prepended when the model asks for it (`addBOS`) and `addSpecial` is set.
    public func encode(_ text: String, special: Bool = false, addSpecial: Bool = true) -> [Int32] {
        var out: [Int32] = []
        if addSpecial, addBOS, let bos { out.append(bos) }
        if let sp = sentencePiece {
            encodeSentencePiece(sp, Substring(text), special: special, into: &out)
            return out
        }
        var rest = Substring(text)
        if special, !specials.isEmpty {
            while !rest.isEmpty {
                // earliest special token; the longest at that position
                var best: (Range<Substring.Index>, Int32)?
                for (s, id) in specials {
                    if let r = rest.range(of: s), best == nil || r.lowerBound < best!.0.lowerBound { best = (r, id) }
                }
                guard let (r, id) = best else { break }
                encodeOrdinary(rest[rest.startIndex..<r.lowerBound], into: &out)
                out.append(id)
                rest = rest[r.upperBound...]
            }
        }
        encodeOrdinary(rest, into: &out)
        return out
    }

    func encodeOrdinary(_ text: Substring, into out: inout [Int32]) {
        if let sp = sentencePiece { return encodeSentencePiece(sp, text, special: false, into: &out) }
        for word in preTokenize(text) { out += bpe(word) }
    }

    /// Text of `ids` (control tokens included as their text); invalid UTF-8 is replaced by U+FFFD.
    public func decode(_ ids: [Int32]) -> String {
        if let sp = sentencePiece { return decodeSentencePiece(sp, ids) }
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && Int(id) < tokens.count {
            for ch in tokens[Int(id)] {
                if let b = charToByte[ch] { bytes.append(b) } else { bytes += Array(String(ch).utf8) }
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Byte-level BPE of one pre-token.
    func bpe(_ word: Substring) -> [Int32] {
        let key = String(word)
        lock.lock()
        if let hit = cache[key] { lock.unlock(); return hit }
        lock.unlock()
        var syms: [Int32] = []
        for b in key.utf8 {
            // every byte character is in a byte-level vocabulary; fall back to id 0 (unknown) if not
            syms.append(ids[byteToChar[Int(b)]] ?? 0)
        }
        while syms.count > 1 {
            var bestRank = Int32.max, bestAt = -1, bestId: Int32 = 0
            for i in 0..<(syms.count - 1) {
                let k = UInt64(UInt32(syms[i])) << 32 | UInt64(UInt32(syms[i + 1]))
                if let (rank, merged) = merges[k], rank < bestRank { bestRank = rank; bestAt = i; bestId = merged }
            }
            if bestAt < 0 { break }
            // merge every occurrence of this pair, left to right (as HF and llama.cpp do)
            let a = syms[bestAt], b = syms[bestAt + 1]
            var merged: [Int32] = []
            merged.reserveCapacity(syms.count)
            var i = 0
            while i < syms.count {
                if i + 1 < syms.count, syms[i] == a, syms[i + 1] == b { merged.append(bestId); i += 2 } else { merged.append(syms[i]); i += 1 }
            }
            syms = merged
        }
        lock.lock()
        if cache.count > 100_000 { cache.removeAll() }
        cache[key] = syms
        lock.unlock()
        return syms
    }

    // MARK: - Pre-tokenization

    /// Splits text into words by the model's rule.
    public func preTokenize(_ text: Substring) -> [Substring] {
        switch pre {
        case .gpt2: return splitGPT2(text)
        case .smollm:
            // Digits(individual_digits) first: each digit a piece of its own, then GPT-2 on the rest
            var out: [Substring] = []
            var start = text.startIndex, i = text.startIndex
            while i < text.endIndex {
                let next = text.unicodeScalars.index(after: i)
                if isNumber(text.unicodeScalars[i]) {
                    if start < i { out += splitGPT2(text[start..<i]) }
                    out.append(text[i..<next])
                    start = next
                }
                i = next
            }
            if start < text.endIndex { out += splitGPT2(text[start..<text.endIndex]) }
            return out
        case .llamaBPE: return splitLlama3(text, maxDigits: 3)
        case .qwen2: return splitLlama3(text, maxDigits: 1)
        }
    }

    func splitGPT2(_ text: Substring) -> [Substring] {
        let s = text.unicodeScalars
        var out: [Substring] = []
        var i = s.startIndex
        func at(_ j: Substring.UnicodeScalarView.Index) -> Unicode.Scalar? { j < s.endIndex ? s[j] : nil }
        while i < s.endIndex {
            let c = s[i], n1 = s.index(after: i)
            var end = n1
            if c == "'", let len = contraction(s, n1, caseInsensitive: false) {
                end = s.index(n1, offsetBy: len)
            } else if isLetter(c) || (c == " " && at(n1).map(isLetter) == true) {
                end = c == " " ? s.index(after: n1) : n1
                while let x = at(end), isLetter(x) { end = s.index(after: end) }
            } else if isNumber(c) || (c == " " && at(n1).map(isNumber) == true) {
                end = c == " " ? s.index(after: n1) : n1
                while let x = at(end), isNumber(x) { end = s.index(after: end) }
            } else if isOther(c) || (c == " " && at(n1).map(isOther) == true) {
                end = c == " " ? s.index(after: n1) : n1
                while let x = at(end), isOther(x) { end = s.index(after: end) }
            } else {
                end = whitespaceEnd(s, i)
            }
            out.append(Substring(s[i..<end]))
            i = end
        }
        return out
    }

    func splitLlama3(_ text: Substring, maxDigits: Int) -> [Substring] {
        let s = text.unicodeScalars
        var out: [Substring] = []
        var i = s.startIndex
        func at(_ j: Substring.UnicodeScalarView.Index) -> Unicode.Scalar? { j < s.endIndex ? s[j] : nil }
        func isNL(_ c: Unicode.Scalar) -> Bool { c == "\r" || c == "\n" }
        while i < s.endIndex {
            let c = s[i], n1 = s.index(after: i)
            var end = n1
            if c == "'", let len = contraction(s, n1, caseInsensitive: true) {
                end = s.index(n1, offsetBy: len)
            } else if isLetter(c) || (!isNL(c) && !isLetter(c) && !isNumber(c) && at(n1).map(isLetter) == true) {
                // [^\r\n\p{L}\p{N}]?\p{L}+
                end = isLetter(c) ? n1 : s.index(after: n1)
                while let x = at(end), isLetter(x) { end = s.index(after: end) }
            } else if isNumber(c) {
                var k = 1
                while k < maxDigits, let x = at(end), isNumber(x) { end = s.index(after: end); k += 1 }
            } else if isOther(c) || (c == " " && at(n1).map(isOther) == true) {
                // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
                end = c == " " ? s.index(after: n1) : n1
                while let x = at(end), isOther(x) { end = s.index(after: end) }
                while let x = at(end), isNL(x) { end = s.index(after: end) }
            } else {
                // \s*[\r\n]+ | \s+(?!\S) | \s+
                var j = i, lastNL: Substring.UnicodeScalarView.Index?
                while let x = at(j), x.properties.isWhitespace {
                    j = s.index(after: j)
                    if isNL(x) { lastNL = j }
                }
                if let lastNL { end = lastNL } else { end = whitespaceEnd(s, i) }
            }
            out.append(Substring(s[i..<end]))
            i = end
        }
        return out
    }

    /// \s+(?!\S) then \s+: a whitespace run, leaving its last character to the next word when a word follows.
    func whitespaceEnd(_ s: Substring.UnicodeScalarView, _ i: Substring.UnicodeScalarView.Index) -> Substring.UnicodeScalarView.Index {
        var j = i
        while j < s.endIndex, s[j].properties.isWhitespace { j = s.index(after: j) }
        if j == s.endIndex { return j }
        let runStart = s.index(after: i)
        return j > runStart ? s.index(before: j) : j
    }

    /// Length of 's 't 're 've 'm 'll 'd after the apostrophe, if one follows.
    func contraction(_ s: Substring.UnicodeScalarView, _ from: Substring.UnicodeScalarView.Index, caseInsensitive: Bool) -> Int? {
        var a: [Character] = []
        var j = from
        while j < s.endIndex, a.count < 2 {
            a.append(Character(s[j]))
            j = s.index(after: j)
        }
        let t = caseInsensitive ? a.map { Character($0.lowercased()) } : a
        if t.count >= 2, ["re", "ve", "ll"].contains(String(t[0...1])) { return 2 }
        if let f = t.first, "stmd".contains(f) { return 1 }
        return nil
    }

    func isLetter(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }
    func isNumber(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }
    func isOther(_ c: Unicode.Scalar) -> Bool { !c.properties.isWhitespace && !isLetter(c) && !isNumber(c) }
}

extension BPETokenizer {
    /// The tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    public convenience init(gguf f: GGUFFile) throws {
        /// A token id from the metadata (nil when absent); one that is not an integer of Int32's range is refused here,
        /// one past the vocabulary by the designated initializer.
        func id(_ key: String) throws -> Int32? {
            guard let v = f.metadata["tokenizer.ggml.\(key)"] else { return nil }
            guard let i = v.int, let id = Int32(exactly: i) else { throw TokenizerError.badTokenID(key: key, found: "\(v)", vocabulary: Int(Int32.max)) }
            return id
        }
        let model = f.metadata["tokenizer.ggml.model"]?.string ?? "(none)"
        guard model == "gpt2" || model == "llama" else { throw TokenizerError.unsupportedModel(model) }
        guard let toks = f.metadata["tokenizer.ggml.tokens"]?.array?.compactMap(\.string) else { throw TokenizerError.missing("tokenizer.ggml.tokens") }
        if model == "llama" {
            guard let scores = f.metadata["tokenizer.ggml.scores"]?.array?.compactMap(\.double) else { throw TokenizerError.missing("tokenizer.ggml.scores") }
            guard let types = f.metadata["tokenizer.ggml.token_type"]?.array?.compactMap(\.int) else { throw TokenizerError.missing("tokenizer.ggml.token_type") }
            let sp = try SentencePieceVocab(tokens: toks, scores: scores.map { Float($0) }, types: types,
                                            addSpacePrefix: f.metadata["tokenizer.ggml.add_space_prefix"]?.bool ?? true)
            let special = types.enumerated().filter { $0.element == 3 || $0.element == 4 }.map { Int32($0.offset) }
            try self.init(tokens: toks, merges: [], special: special, pre: .gpt2,
                          bos: try id("bos_token_id"),
                          eos: try id("eos_token_id"),
                          addBOS: f.metadata["tokenizer.ggml.add_bos_token"]?.bool ?? true, sentencePiece: sp)
            return
        }
        guard let merges = f.metadata["tokenizer.ggml.merges"]?.array?.compactMap(\.string) else { throw TokenizerError.missing("tokenizer.ggml.merges") }
        let types = f.metadata["tokenizer.ggml.token_type"]?.array?.compactMap(\.int) ?? []
        let special = types.enumerated().filter { $0.element == 3 || $0.element == 4 }.map { Int32($0.offset) }
        try self.init(tokens: toks, merges: merges, special: special, pre: try PreTokenizer(ggml: f.metadata["tokenizer.ggml.pre"]?.string),
                      bos: try id("bos_token_id"),
                      eos: try id("eos_token_id"),
                      addBOS: f.metadata["tokenizer.ggml.add_bos_token"]?.bool ?? false)
    }

    /// This tokenizer as a Hugging Face `tokenizer.json` (BPE model, added special tokens, the split rule as HF
    /// pre-tokenizers, byte-level decoder), so a student trained on its ids ships with it.
    public func hfTokenizerJSON() throws -> Data {
        // Hugging Face runs SentencePiece vocabularies through merges GGUF does not store
        if sentencePiece != nil { throw TokenizerError.unsupportedModel("SentencePiece (llama) as tokenizer.json") }
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": pre == .gpt2 || pre == .smollm]
        func split(_ pattern: String) -> [String: Any] {
            ["type": "Split", "pattern": ["Regex": pattern], "behavior": "Isolated", "invert": false]
        }
        let llama3 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        let qwen2 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        let preTokenizer: [String: Any]
        switch pre {
        case .gpt2: preTokenizer = byteLevel
        case .smollm: preTokenizer = ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel]]
        case .llamaBPE: preTokenizer = ["type": "Sequence", "pretokenizers": [split(llama3), byteLevel]]
        case .qwen2: preTokenizer = ["type": "Sequence", "pretokenizers": [split(qwen2), byteLevel]]
        }
        var vocab: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where vocab[t] == nil { vocab[t] = i }
        let obj: [String: Any] = [
            "version": "1.0",
            "added_tokens": specialIDs.map { ["id": Int($0), "content": tokens[Int($0)], "single_word": false, "lstrip": false,
                                              "rstrip": false, "normalized": false, "special": true] as [String: Any] },
            "normalizer": NSNull(), "post_processor": NSNull(),
            "pre_tokenizer": preTokenizer,
            "decoder": ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": mergeList] as [String: Any],
        ]
        return try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
    }

    /// One user turn in the template of this vocabulary's model, ending where the model's reply begins: Gemma's
    /// (`<start_of_turn>user … <end_of_turn>`, BOS added by encoding) when the vocabulary has its turn tokens, else ChatML.
    public func chatPrompt(user: String) -> String {
        if ids["<start_of_turn>"] != nil, ids["<end_of_turn>"] != nil {
            return "<start_of_turn>user\n\(user)<end_of_turn>\n<start_of_turn>model\n"
        }
        return BPETokenizer.chatML(user: user)
    }

    /// Tokens that end a chat reply besides EOS: ChatML's `<|im_end|>`, Gemma's `<end_of_turn>`.
    public var turnEnds: [Int32] { ["<|im_end|>", "<end_of_turn>"].compactMap { ids[$0] } }

    /// ChatML as SmolLM2-Instruct's template writes it: a default system turn, the user turn, the assistant header.
    public static func chatML(user: String, system: String = "You are a helpful AI assistant named SmolLM, trained by Hugging Face") -> String {
        "<|im_start|>system\n\(system)<|im_end|>\n<|im_start|>user\n\(user)<|im_end|>\n<|im_start|>assistant\n"
    }
}

/// A tokenizer alone (no weights loaded): a GGUF file's, or a folder's tokenizer.json.
public func loadTokenizer(_ path: String) throws -> BPETokenizer {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw KDError.fileNotFound(path: path) }
    if isDir.boolValue { return try BPETokenizer(hfTokenizerJSON: (path as NSString).appendingPathComponent(HFFolder.tokenizer)) }
    return try BPETokenizer(gguf: GGUFFile(path: path, mapAll: false))  // the header alone
}
