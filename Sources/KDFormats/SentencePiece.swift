// SentencePiece-style tokenization as llama.cpp runs it from GGUF (`tokenizer.ggml.model = llama`: Gemma, Llama 2,
// Mistral): user-defined tokens (runs of newlines, spaces, tabs; HTML tags in Gemma) are cut out of the text first,
// longest first; each remaining fragment gets "▁" for every space (and one leading "▁" when `add_space_prefix` and the
// fragment starts the text or follows a special token); its UTF-8 characters are then merged pairwise, always the
// adjacent pair whose concatenation is the highest-scoring vocabulary entry (leftmost on ties); a character that is
// not in the vocabulary becomes its bytes' `<0xXX>` tokens.
import Foundation
import KDCore

/// The parts of a SentencePiece vocabulary that BPE does not have.
public struct SentencePieceVocab: Sendable {
    /// GGUF token types.
    public enum TokenType: Int, Sendable { case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6 }
    public let scores: [Float]
    public let types: [TokenType]
    public let addSpacePrefix: Bool
    /// Id of `<0xXX>` for every byte.
    let byteTokens: [Int32]
    /// Value of each byte token, by id.
    let byteValue: [Int32: UInt8]
    /// User-defined tokens (always cut out of text) and control tokens (only when asked), longest first.
    let userDefined: [([UInt8], Int32)], control: [([UInt8], Int32)]
    /// Longest vocabulary entry in bytes (no pair longer can merge).
    let maxTokenBytes: Int

    public init(tokens: [String], scores: [Float], types: [Int], addSpacePrefix: Bool) throws {
        guard scores.count == tokens.count, types.count == tokens.count else {
            throw TokenizerError.missing("scores and token types for each of the \(tokens.count) tokens")
        }
        self.scores = scores
        self.types = types.map { TokenType(rawValue: $0) ?? .normal }
        self.addSpacePrefix = addSpacePrefix
        var byteTokens = [Int32](repeating: -1, count: 256), byteValue: [Int32: UInt8] = [:]
        for (i, t) in tokens.enumerated() where self.types[i] == .byte {
            // "<0xAB>"
            guard t.count == 6, t.hasPrefix("<0x"), let b = UInt8(t.dropFirst(3).prefix(2), radix: 16) else { continue }
            byteTokens[Int(b)] = Int32(i)
            byteValue[Int32(i)] = b
        }
        guard !byteTokens.contains(-1) else { throw TokenizerError.missing("a <0xXX> byte token for each of the 256 bytes") }
        self.byteTokens = byteTokens
        self.byteValue = byteValue
        let kinds = self.types
        func ofType(_ k: TokenType) -> [([UInt8], Int32)] {
            tokens.indices.filter { kinds[$0] == k && !tokens[$0].isEmpty }.map { (Array(tokens[$0].utf8), Int32($0)) }
                .sorted { $0.0.count > $1.0.count || ($0.0.count == $1.0.count && $0.1 < $1.1) }
        }
        userDefined = ofType(.userDefined)
        control = ofType(.control)
        maxTokenBytes = tokens.map(\.utf8.count).max() ?? 1
    }
}

/// A piece of text during partitioning: raw bytes still to tokenize, or a token already found.
private enum Fragment { case text([UInt8]), token(Int32) }

extension BPETokenizer {
    /// Cuts `specials` (longest first) out of every raw fragment, each occurrence left to right.
    private func partition(_ bytes: [UInt8], specials: [([UInt8], Int32)]) -> [Fragment] {
        var frags: [Fragment] = [.text(bytes)]
        for (s, id) in specials {
            var next: [Fragment] = []
            for f in frags {
                guard case .text(let b) = f, b.count >= s.count else { next.append(f); continue }
                var start = 0, i = 0
                while i + s.count <= b.count {
                    if b[i] == s[0], b[i..<(i + s.count)].elementsEqual(s) {
                        if i > start { next.append(.text(Array(b[start..<i]))) }
                        next.append(.token(id))
                        i += s.count
                        start = i
                    } else {
                        i += 1
                    }
                }
                if start < b.count { next.append(.text(Array(b[start...]))) }
            }
            frags = next
        }
        return frags
    }

    /// SentencePiece encoding of `text` (see the file comment); control tokens in the text become ids with `special`.
    func encodeSentencePiece(_ sp: SentencePieceVocab, _ text: Substring, special: Bool, into out: inout [Int32]) {
        let specials = special ? (sp.userDefined + sp.control).sorted { $0.0.count > $1.0.count || ($0.0.count == $1.0.count && $0.1 < $1.1) }
            : sp.userDefined
        var previousSpecial = true
        for f in partition(Array(text.utf8), specials: specials) {
            switch f {
            case .token(let id):
                out.append(id)
                previousSpecial = true
            case .text(let raw):
                var b: [UInt8] = sp.addSpacePrefix && previousSpecial ? [0xE2, 0x96, 0x81] : []
                for c in raw { if c == 0x20 { b += [0xE2, 0x96, 0x81] } else { b.append(c) } }  // ' ' → '▁'
                mergePieces(sp, b, into: &out)
                previousSpecial = false
            }
        }
    }

    /// The pairwise merge by score over one escaped fragment.
    private func mergePieces(_ sp: SentencePieceVocab, _ b: [UInt8], into out: inout [Int32]) {
        // symbols: one per UTF-8 character, linked so merges splice in O(1)
        var start: [Int] = [], len: [Int] = [], prev: [Int] = [], next: [Int] = []
        var i = 0
        while i < b.count {
            let lead = b[i], n = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4
            start.append(i); len.append(min(n, b.count - i)); prev.append(start.count - 2); next.append(start.count)
            i += n
        }
        guard !start.isEmpty else { return }
        next[next.count - 1] = -1
        func lookup(_ a: Int, _ n: Int) -> Int32? { ids[String(decoding: b[a..<(a + n)], as: UTF8.self)] }
        var heap = BigramHeap()
        func tryPair(_ l: Int, _ r: Int) {
            guard l >= 0, r >= 0, len[l] + len[r] <= sp.maxTokenBytes, let id = lookup(start[l], len[l] + len[r]) else { return }
            heap.push(Bigram(score: sp.scores[Int(id)], left: l, right: r, size: len[l] + len[r]))
        }
        for k in 1..<start.count { tryPair(k - 1, k) }
        while let g = heap.pop() {
            // stale: one side already merged away or grown since the pair was queued
            guard len[g.left] > 0, len[g.right] > 0, len[g.left] + len[g.right] == g.size else { continue }
            len[g.left] += len[g.right]
            len[g.right] = 0
            next[g.left] = next[g.right]
            if next[g.right] >= 0 { prev[next[g.right]] = g.left }
            tryPair(prev[g.left], g.left)
            tryPair(g.left, next[g.left])
        }
        var k = 0
        while k >= 0 {
            if let id = lookup(start[k], len[k]) {
                out.append(id)
            } else {
                for c in b[start[k]..<(start[k] + len[k])] { out.append(sp.byteTokens[Int(c)]) }
            }
            k = next[k]
        }
    }

    /// Text of SentencePiece ids: "▁" back to spaces, byte tokens to their bytes (invalid UTF-8 becomes U+FFFD).
    func decodeSentencePiece(_ sp: SentencePieceVocab, _ ids: [Int32]) -> String {
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && Int(id) < tokens.count {
            if let v = sp.byteValue[id] { bytes.append(v); continue }
            let t = tokens[Int(id)]
            bytes += sp.types[Int(id)] == .normal ? Array(t.replacingOccurrences(of: "▁", with: " ").utf8) : Array(t.utf8)
        }
        if sp.addSpacePrefix, bytes.first == 0x20, let f = ids.first, sp.types[Int(f)] == .normal { bytes.removeFirst() }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A candidate merge: higher score first, then the leftmost.
private struct Bigram { let score: Float; let left: Int; let right: Int; let size: Int }

private struct BigramHeap {
    var items: [Bigram] = []
    static func before(_ a: Bigram, _ b: Bigram) -> Bool { a.score > b.score || (a.score == b.score && a.left < b.left) }
    mutating func push(_ x: Bigram) {
        items.append(x)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard Self.before(items[i], items[p]) else { break }
            items.swapAt(i, p)
            i = p
        }
    }
    mutating func pop() -> Bigram? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count, Self.before(items[l], items[m]) { m = l }
                if r < items.count, Self.before(items[r], items[m]) { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}
