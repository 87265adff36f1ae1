// Cross-tokenizer alignment: a student window (token ids of the student's tokenizer) re-tokenized by a teacher with
// another tokenizer from the same bytes, and the positions of the two sequences matched by byte offsets.
//
// Offsets: every text byte of the window counts one, and so does every control token (an end-of-text between two
// documents), so both sequences walk the same offset line. Student position i predicts token i + 1 after a context
// that ends at offset e_i (the end of token i); it is ALIGNED when some teacher token ends at e_i too (the teacher
// position taken is the last one ending there, the one with the most context), and MATCHED when, in addition, the
// next student token and the next teacher token span the same bytes [e_i, e_{i+1}) (the same string is predicted).
// A student control token becomes the teacher's own (end of text → the teacher's EOS, then its BOS when the teacher
// starts documents with BOS); a window that starts or ends inside a UTF-8 character (byte-level BPE splits them)
// hides those bytes from the teacher.
import Foundation

/// The bytes each token of a tokenizer stands for in text.
public struct TokenPieces: Sendable {
    /// Per id: the token's bytes (byte-level BPE characters mapped back to bytes, SentencePiece's ▁ as a space, byte
    /// pieces as their byte); empty for control tokens, which are not text.
    public let bytes: [[UInt8]]
    /// Per id: a control token (BOS, EOS, chat markers, SentencePiece's unknown and unused pieces).
    public let control: [Bool]

    public init(_ tok: BPETokenizer) {
        var bytes = [[UInt8]](), control = [Bool]()
        bytes.reserveCapacity(tok.vocabSize)
        control.reserveCapacity(tok.vocabSize)
        let special = Set(tok.specialIDs)
        for (i, t) in tok.tokens.enumerated() {
            let id = Int32(i)
            if let sp = tok.sentencePiece {
                switch sp.types[i] {
                case .control, .unknown, .unused:
                    bytes.append([]); control.append(true)
                case .byte:
                    bytes.append(sp.byteValue[id].map { [$0] } ?? []); control.append(false)
                case .normal:
                    bytes.append(Array(t.replacingOccurrences(of: "▁", with: " ").utf8)); control.append(false)
                case .userDefined:
                    bytes.append(Array(t.utf8)); control.append(false)
                }
            } else if special.contains(id) {
                bytes.append([]); control.append(true)
            } else {
                bytes.append(tok.decodeBytes(t)); control.append(false)
            }
        }
        self.bytes = bytes
        self.control = control
    }

    public var count: Int { bytes.count }
}

/// Which teacher tokens are student tokens: the same bytes (control tokens and byte pieces excluded, since a byte piece
/// is a fallback, not a word). Computed once per pair of tokenizers.
public struct VocabularyMap: Sendable {
    /// Per teacher id (every row of the teacher's head): the student id with the same bytes, or −1.
    public let teacherToStudent: [Int32]
    /// Student ids that have a teacher twin, and the student's vocabulary size.
    public let mappedStudentTokens: Int, studentVocab: Int

    public init(student: TokenPieces, teacher: TokenPieces, teacherRows: Int, byteTokens: Set<Int32> = []) {
        var byBytes: [[UInt8]: Int32] = [:]
        for (i, b) in student.bytes.enumerated() where !student.control[i] && !b.isEmpty && byBytes[b] == nil { byBytes[b] = Int32(i) }
        var map = [Int32](repeating: -1, count: teacherRows)
        var taken = Set<Int32>()
        for (i, b) in teacher.bytes.enumerated() where i < teacherRows && !teacher.control[i] && !b.isEmpty && !byteTokens.contains(Int32(i)) {
            // one teacher id per student id (the first, as the tokenizer's own lookup prefers)
            if let s = byBytes[b], !taken.contains(s) {
                map[i] = s
                taken.insert(s)
            }
        }
        teacherToStudent = map
        mappedStudentTokens = taken.count
        studentVocab = student.count
    }

    /// Share of the student's vocabulary with a teacher twin.
    public var studentShare: Double { Double(mappedStudentTokens) / Double(max(studentVocab, 1)) }
}

/// One student window re-tokenized by the teacher.
public struct WindowAlignment: Equatable, Sendable {
    /// The teacher's tokens for the window's bytes (BOS first when the teacher expects it).
    public var teacherTokens: [Int32]
    /// Per student position: the aligned teacher position (index into teacherTokens), or −1.
    public var teacherPosition: [Int32]
    /// Per student position: aligned, and the next tokens of both span the same bytes.
    public var matched: [Bool]
}

/// Re-tokenizes student windows with the teacher's tokenizer and aligns the positions (see the file header).
public struct TokenAligner: Sendable {
    public let student: TokenPieces
    public let teacher: BPETokenizer
    let teacherPieces: TokenPieces
    let studentEOS: Int32?, studentBOS: Int32?

    public init(student: BPETokenizer, teacher: BPETokenizer) {
        self.student = TokenPieces(student)
        self.teacher = teacher
        teacherPieces = TokenPieces(teacher)
        studentEOS = student.eos
        studentBOS = student.bos
    }

    /// The vocabulary map of this pair (teacherRows: rows of the teacher's head).
    public func vocabularyMap(teacherRows: Int) -> VocabularyMap {
        let byteIDs = teacher.sentencePiece.map { Set($0.byteValue.keys) } ?? []
        return VocabularyMap(student: student, teacher: teacherPieces, teacherRows: teacherRows, byteTokens: byteIDs)
    }

    /// Aligns a window of `t` student tokens followed by `next` (the last position's target; negative when there is
    /// none). The teacher's sequence is cut at `maxTeacherTokens` (its later positions then align with nothing).
    public func align(_ tokens: UnsafePointer<Int32>, t: Int, next: Int32, maxTeacherTokens: Int) -> WindowAlignment {
        // the student side: offsets where each token ends, and the pieces (text runs, control tokens) in order
        let count = next >= 0 ? t + 1 : t
        var ends = [Int](repeating: 0, count: count)
        var pieces: [(start: Int, bytes: [UInt8], control: Int32?)] = []
        var offset = 0, run: [UInt8] = [], runStart = 0
        for i in 0..<count {
            let id = i < t ? tokens[i] : next
            let valid = id >= 0 && Int(id) < student.count
            if valid && !student.control[Int(id)] {
                if run.isEmpty { runStart = offset }
                run += student.bytes[Int(id)]
                offset += student.bytes[Int(id)].count
            } else {
                if !run.isEmpty { pieces.append((runStart, run, nil)); run = [] }
                pieces.append((offset, [], id))
                offset += 1
            }
            ends[i] = offset
        }
        if !run.isEmpty { pieces.append((runStart, run, nil)) }

        // the teacher side: tokens and the offsets where each ends (−1: unknown, aligns with nothing)
        var tt: [Int32] = [], tEnds: [Int] = []
        if teacher.addBOS, let bos = teacher.bos { tt.append(bos); tEnds.append(0) }
        for p in pieces {
            if let id = p.control {
                if id == studentEOS, let eos = teacher.eos {
                    tt.append(eos); tEnds.append(p.start + 1)
                    if teacher.addBOS, let bos = teacher.bos { tt.append(bos); tEnds.append(p.start + 1) }
                } else if id == studentBOS, let bos = teacher.bos {
                    tt.append(bos); tEnds.append(p.start + 1)
                }
                continue
            }
            // a byte-level BPE window may start or end inside a character: those bytes stay hidden from the teacher
            var lo = 0, hi = p.bytes.count
            while lo < hi, lo < 3, p.bytes[lo] & 0xC0 == 0x80 { lo += 1 }
            hi = completeUTF8Prefix(p.bytes, from: lo, to: hi)
            guard lo < hi else { continue }
            let slice = Array(p.bytes[lo..<hi])
            guard let text = String(validating: slice, as: UTF8.self) else { continue }
            let ids = teacher.encode(text, special: false, addSpecial: false)
            var lengths = ids.map { Int($0) < teacherPieces.count ? teacherPieces.bytes[Int($0)].count : 0 }
            // a SentencePiece vocabulary that adds a space prefix adds one byte the text does not have
            if lengths.reduce(0, +) == slice.count + 1, let f = ids.first, teacherPieces.bytes[Int(f)].first == 0x20 { lengths[0] -= 1 }
            let known = lengths.reduce(0, +) == slice.count
            var e = p.start + lo
            for (id, n) in zip(ids, lengths) {
                e += n
                tt.append(id)
                tEnds.append(known ? e : -1)
            }
        }
        if tt.count > maxTeacherTokens {
            tt.removeLast(tt.count - maxTeacherTokens)
            tEnds.removeLast(tEnds.count - maxTeacherTokens)
        }

        // the last teacher position ending at each offset
        var last = [Int32](repeating: -1, count: offset + 1)
        for (j, e) in tEnds.enumerated() where e >= 0 { last[e] = Int32(j) }
        var position = [Int32](repeating: -1, count: t), matched = [Bool](repeating: false, count: t)
        for i in 0..<t {
            let j = last[ends[i]]
            guard j >= 0 else { continue }
            position[i] = j
            // the next tokens: the student's [e_i, e_{i+1}), the teacher's [e_j, e_{j+1})
            let jn = Int(j) + 1
            if i + 1 < count, jn < tEnds.count, tEnds[jn] == ends[i + 1] { matched[i] = true }
        }
        return WindowAlignment(teacherTokens: tt, teacherPosition: position, matched: matched)
    }
}

/// The end of the longest prefix of bytes[from..<to] that does not stop inside a UTF-8 character.
func completeUTF8Prefix(_ b: [UInt8], from: Int, to: Int) -> Int {
    // walk back over at most 3 continuation bytes to the last lead byte and check its sequence is complete
    var i = to - 1, back = 0
    while i >= from, back < 3, b[i] & 0xC0 == 0x80 { i -= 1; back += 1 }
    guard i >= from else { return to }
    let lead = b[i]
    let need = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
    return to - i >= need ? to : i
}

extension BPETokenizer {
    /// The bytes of one byte-level BPE token string (its characters mapped back through GPT-2's byte table).
    func decodeBytes(_ token: String) -> [UInt8] {
        var out: [UInt8] = []
        for ch in token {
            if let b = charToByte[ch] { out.append(b) } else { out += Array(String(ch).utf8) }
        }
        return out
    }
}
