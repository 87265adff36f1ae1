// Cross-tokenizer alignment on the two real tokenizers (SmolLM2's byte-level BPE → Gemma 3's SentencePiece), checked
// by brute force from the definitions: the teacher's tokens are its own tokenization of the window's bytes, a position
// is aligned exactly when some teacher token ends where the student's context ends (and then both contexts are the
// same bytes), and matched exactly when the next tokens of both are the same bytes.
import Foundation
import KDFormats
import KDTestSupport
import Testing

func twoTokenizers() throws -> (student: BPETokenizer, teacher: BPETokenizer) {
    _ = try gemmaReference()
    return (try BPETokenizer(gguf: GGUFFile(path: smolLM)), try BPETokenizer(gguf: GGUFFile(path: gemma)))
}

@Test func alignedAndMatchedPositionsAreWhatTheirDefinitionsSay() throws {
    let (s, t) = try twoTokenizers()
    let aligner = TokenAligner(student: s, teacher: t)
    let sp = TokenPieces(s), tp = TokenPieces(t)
    let text = try String(contentsOf: repoRoot.appendingPathComponent("Tests/KDTrainTests/Fixtures/fortunes-sample.txt"), encoding: .utf8)
        + " Ünïcödé: naïve café, 日本語のテキスト, emoji 🙂👍🏽 and a flag 🇫🇷.  Tabs\tand   runs of spaces.\n\n\nEnd."
    let ids = s.encode(text, addSpecial: false)
    var windows = 0, aligned = 0, matched = 0, positions = 0
    // windows of 48 tokens at many offsets, some starting or ending inside a multi-byte character
    for start in stride(from: 0, to: ids.count - 49, by: 37) {
        let w = Array(ids[start..<(start + 48)]), next = ids[start + 48]
        let a = w.withUnsafeBufferPointer { aligner.align($0.baseAddress!, t: 48, next: next, maxTeacherTokens: 1000) }
        windows += 1
        // the student's byte offsets, and the text the teacher saw: the window's bytes without a partial character at
        // either end, tokenized by the teacher on its own
        let bytes = (w + [next]).map { sp.bytes[Int($0)] }
        var ends: [Int] = [], e = 0
        for b in bytes { e += b.count; ends.append(e) }
        let flat = bytes.flatMap { $0 }
        var lo = 0
        while lo < 3, flat[lo] & 0xC0 == 0x80 { lo += 1 }
        var hi = flat.count
        while String(validating: flat[lo..<hi], as: UTF8.self) == nil { hi -= 1 }
        let seen = String(validating: flat[lo..<hi], as: UTF8.self)!
        #expect(a.teacherTokens == [t.bos!] + t.encode(seen, addSpecial: false), "window at \(start)")
        var tEnds: [Int] = [], te = lo
        for id in a.teacherTokens.dropFirst() { te += tp.bytes[Int(id)].count; tEnds.append(te) }
        #expect(te == hi)
        for i in 0..<48 {
            positions += 1
            let j = Int(a.teacherPosition[i])
            let teacherEndsHere = tEnds.contains(ends[i])
            #expect((j >= 0) == teacherEndsHere, "window \(start) position \(i)")
            guard j >= 0 else { #expect(!a.matched[i]); continue }
            aligned += 1
            // the same context: the teacher's tokens up to j (after BOS) are the student's bytes up to e_i
            #expect(tEnds[j - 1] == ends[i] && (j == a.teacherTokens.count - 1 || tEnds[j] != ends[i]))
            let sameNext = j < tEnds.count && tEnds[j] == ends[i + 1]
            #expect(a.matched[i] == sameNext, "window \(start) position \(i)")
            if a.matched[i] {
                #expect(tp.bytes[Int(a.teacherTokens[j + 1])] == sp.bytes[Int(i + 1 < 48 ? w[i + 1] : next)])
                matched += 1
            }
        }
    }
    #expect(windows > 10)
    // English prose under two large vocabularies: most positions align, most aligned ones predict the same string
    #expect(Double(aligned) / Double(positions) > 0.8 && Double(matched) / Double(positions) > 0.7, "\(aligned) \(matched) of \(positions)")
}

@Test func anEndOfTextBetweenDocumentsBecomesTheTeachersEOSAndBOS() throws {
    let (s, t) = try twoTokenizers()
    let aligner = TokenAligner(student: s, teacher: t)
    let a = s.encode("The first fortune.", addSpecial: false), b = s.encode("A second one.", addSpecial: false)
    let w = a + [s.eos!] + b
    let al = w.withUnsafeBufferPointer { aligner.align($0.baseAddress!, t: w.count, next: -1, maxTeacherTokens: 1000) }
    let ta = t.encode("The first fortune.", addSpecial: false), tb = t.encode("A second one.", addSpecial: false)
    #expect(al.teacherTokens == [t.bos!] + ta + [t.eos!, t.bos!] + tb)
    // the student at its end of text predicts the next document's first token; the teacher does so after its BOS
    #expect(al.teacherPosition[a.count] == Int32(1 + ta.count + 1))
    // before it: the last token of the first document predicts the end of text on both sides
    #expect(al.teacherPosition[a.count - 1] == Int32(ta.count) && al.matched[a.count - 1])
    // a teacher sequence cut short aligns nothing past its end
    let cut = w.withUnsafeBufferPointer { aligner.align($0.baseAddress!, t: w.count, next: -1, maxTeacherTokens: 3) }
    #expect(cut.teacherTokens.count == 3 && cut.teacherPosition.allSatisfy { $0 < 3 })
}

@Test func theVocabularyMapPairsTokensOfTheSameBytesOnce() throws {
    let (s, t) = try twoTokenizers()
    let aligner = TokenAligner(student: s, teacher: t)
    let map = aligner.vocabularyMap(teacherRows: 262_144)
    let sp = TokenPieces(s), tp = TokenPieces(t)
    var seen = Set<Int32>()
    for (ti, si) in map.teacherToStudent.enumerated() where si >= 0 {
        #expect(tp.bytes[ti] == sp.bytes[Int(si)] && !tp.bytes[ti].isEmpty && !tp.control[ti] && !sp.control[Int(si)])
        #expect(seen.insert(si).inserted, "student id \(si) mapped twice")
    }
    #expect(seen.count == map.mappedStudentTokens)
    // " the" and "hello" exist in both; control tokens and Gemma's byte pieces never map
    for word in [" the", "hello", "\n"] {
        let sid = s.encode(word, addSpecial: false), tid = t.encode(word, addSpecial: false)
        #expect(sid.count == 1 && tid.count == 1 && map.teacherToStudent[Int(tid[0])] == sid[0], "\(word)")
    }
    #expect(map.teacherToStudent[Int(t.eos!)] == -1 && map.teacherToStudent[Int(t.bos!)] == -1)
    let byteA = t.tokens.firstIndex(of: "<0x41>")!
    #expect(map.teacherToStudent[byteA] == -1)
    // SmolLM2's vocabulary is mostly English pieces that Gemma's larger one also has
    #expect(map.studentShare > 0.9 && map.studentShare < 1, "\(map.studentShare)")
}
