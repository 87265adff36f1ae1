// Our byte-level BPE against Hugging Face `tokenizers` built from the same vocabulary and merges (the real SmolLM2
// file), for every pre-tokenizer rule we implement, on varied text.
import Foundation
import KDFormats
import KDTestSupport
import Testing

let tokenizerStrings: [String] = [
    "", " ", "  ", "\n", "\n\n\n", "Hello world", "Hello, world!", "  leading and trailing  ",
    "The quick brown fox jumps over the lazy dog.", "It's a dog's life; they're sure we'll go, I'd say, you've",
    "IT'S LOUD AND IT'LL BE", "1234567890", "Call 555-0199 or +1 (800) 123 4567.", "3.14159 and 2,718,281",
    "year 2024: 12 months, 365 days", "def f(x):\n    return x ** 2  # square\n", "for (int i = 0; i < n; ++i) { a[i] += 1; }",
    "if x == 3:\n\tprint('tab')\n", "tabs\t\tand\t spaces \t mixed", "line one\r\nline two\r\n",
    "emoji 😀🎉👍🏽 and 🇫🇷 flags", "café naïve résumé Ångström", "日本語のテキストです。", "中文文本，标点符号。",
    "한국어 텍스트", "Привет, мир!", "مرحبا بالعالم", "ελληνικά κείμενα", "mixed日本語and English123",
    "<|im_start|>user\nhi<|im_end|>", "www.example.com/path?q=1&r=2#frag", "email@example.com",
    "$100.00 €50 ¥1000 £20", "   \n   \n", "a\u{00A0}b\u{3000}c", "x²+y³=z⁴ ½ ¼", "Ⅻ ⅷ numerals",
    "!!!???...,,,", "'s 't 're 've 'm 'll 'd", "don't won't can't", "ALLCAPS lowercase MiXeD",
    String(repeating: "long ", count: 40), "multiple     spaces     here", "trailing newline\n",
]

@Test(arguments: PreTokenizer.allCases)
func bpeMatchesHuggingFaceTokenizers(pre: PreTokenizer) throws {
    try requireTeacher()
    let dir = try temporaryDirectory("distill-tok")
    defer { try? FileManager.default.removeItem(at: dir) }
    let input = dir.appendingPathComponent("strings.json")
    try JSONSerialization.data(withJSONObject: tokenizerStrings).write(to: input)
    let out = try runPython(scripts.appendingPathComponent("hf_tokenize.py").path, [smolLM, pre.rawValue, input.path])
    let expected = out.split(separator: "\n").map { line in
        (try! JSONSerialization.jsonObject(with: Data(line.utf8)) as! [Int]).map(Int32.init)
    }
    #expect(expected.count == tokenizerStrings.count)
    let f = try GGUFFile(path: smolLM)
    let base = try BPETokenizer(gguf: f)
    let tok = try BPETokenizer(tokens: base.tokens, merges: f.metadata["tokenizer.ggml.merges"]!.array!.compactMap(\.string),
                               special: [], pre: pre, bos: nil, eos: nil, addBOS: false)
    var mismatches = 0
    for (s, want) in zip(tokenizerStrings, expected) {
        let got = tok.encode(s)
        if got != want { mismatches += 1 }
        #expect(got == want, "\(pre): \(s.debugDescription)")
        #expect(tok.decode(got) == s)
    }
    #expect(mismatches == 0)
}

@Test func specialTokensAndChatTemplate() throws {
    try requireTeacher()
    let tok = try BPETokenizer(gguf: GGUFFile(path: smolLM))
    #expect(tok.pre == .smollm && tok.eos == 2 && tok.bos == 1 && !tok.addBOS)
    let chat = BPETokenizer.chatML(user: "Hi")
    let ids = tok.encode(chat, special: true)
    #expect(ids.first == 1)  // <|im_start|>
    #expect(ids.filter { $0 == 2 }.count == 2)  // two <|im_end|>
    #expect(tok.decode(ids) == chat)
    // without `special`, the markers are ordinary text
    #expect(!tok.encode(chat).contains(1))
}

@Test func huggingFaceTokenizerJSONLoadsToTheSameTokenizer() throws {
    try requireTeacher()
    let dir = try temporaryDirectory("distill-tokjson")
    defer { try? FileManager.default.removeItem(at: dir) }
    let input = dir.appendingPathComponent("strings.json")
    try JSONSerialization.data(withJSONObject: tokenizerStrings).write(to: input)
    let out = try runPython(scripts.appendingPathComponent("hf_tokenize.py").path, [smolLM, "smollm", input.path, dir.path])
    let expected = out.split(separator: "\n").map { (try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [Int]).map(Int32.init) }
    let tok = try BPETokenizer(hfTokenizerJSON: dir.appendingPathComponent("tokenizer.json").path)
    #expect(tok.pre == .smollm)
    #expect(tok.eos == 0)  // <|endoftext|> is the first end-of-text marker of this vocabulary
    // HF always splits out added special tokens, i.e. our `special: true`
    for (s, want) in zip(tokenizerStrings, expected) { #expect(tok.encode(s, special: true) == want, "\(s.debugDescription)") }
    #expect(tok.encode("<|im_start|>hi", special: true).first == 1)
}

@Test(arguments: PreTokenizer.allCases)
func ourTokenizerJSONLoadsInHuggingFaceTokenizers(pre: PreTokenizer) throws {
    try requireTeacher()
    let dir = try temporaryDirectory("distill-tokout")
    defer { try? FileManager.default.removeItem(at: dir) }
    let f = try GGUFFile(path: smolLM)
    let base = try BPETokenizer(gguf: f)
    let tok = try BPETokenizer(tokens: base.tokens, merges: base.mergeList, special: base.specialIDs, pre: pre, bos: nil, eos: base.eos, addBOS: false)
    let json = dir.appendingPathComponent("tokenizer.json"), input = dir.appendingPathComponent("strings.json")
    try tok.hfTokenizerJSON().write(to: json)
    try JSONSerialization.data(withJSONObject: tokenizerStrings).write(to: input)
    let out = try runPython(scripts.appendingPathComponent("hf_from_json.py").path, [json.path, input.path])
    let theirs = out.split(separator: "\n").map { (try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [Int]).map(Int32.init) }
    #expect(theirs.count == tokenizerStrings.count)
    for (s, want) in zip(tokenizerStrings, theirs) { #expect(tok.encode(s, special: true) == want, "\(pre): \(s.debugDescription)") }
    // and it reads back into the same tokenizer
    let again = try BPETokenizer(hfTokenizerJSON: json.path)
    #expect(again.pre == pre && again.hash == tok.hash)
}

/// A SentencePiece-style tokenizer.json (BPE with "▁" and byte fallback, as Gemma's) is not read as byte-level BPE,
/// which would tokenize silently wrong: one clear error.
@Test func aByteFallbackTokenizerJSONIsRefusedNotMisread() throws {
    let dir = try temporaryDirectory("distill-bytefallback")
    defer { try? FileManager.default.removeItem(at: dir) }
    let path = dir.appendingPathComponent("tokenizer.json")
    let json = #"{"model": {"type": "BPE", "byte_fallback": true, "vocab": {"<0x00>": 0, "▁a": 1, "▁": 2, "a": 3}, "merges": ["▁ a"]}}"#
    try json.write(to: path, atomically: true, encoding: .utf8)
    #expect { try BPETokenizer(hfTokenizerJSON: path.path) } throws: { e in
        "\(e)".contains("SentencePiece-style BPE with byte fallback")
    }
}

/// A pre-tokenizer we do not implement is refused with its name and the ones we do, never replaced by GPT-2's split
/// (which would give other words, so other token ids, than the model was trained on).
@Test func anUnknownPreTokenizerIsRefusedNotGuessed() throws {
    #expect(try PreTokenizer(ggml: nil) == .gpt2)           // missing: llama.cpp's default
    #expect(try PreTokenizer(ggml: "default") == .gpt2)
    #expect(try PreTokenizer(ggml: "llama3") == .llamaBPE)
    do {
        _ = try PreTokenizer(ggml: "falcon")
        Issue.record("pre-tokenizer 'falcon' accepted")
    } catch {
        #expect("\(error)".contains("'falcon'") && "\(error)".contains("smollm"), "\(error)")
    }
    // a tokenizer.json whose pre-tokenizer has no byte-level step
    let dir = try temporaryDirectory("distill-pretok")
    defer { try? FileManager.default.removeItem(at: dir) }
    let json: [String: Any] = ["model": ["type": "BPE", "vocab": ["a": 0, "b": 1, "ab": 2], "merges": ["a b"]],
                               "pre_tokenizer": ["type": "Whitespace"], "added_tokens": [] as [Any]]
    let path = dir.appendingPathComponent("tokenizer.json")
    try JSONSerialization.data(withJSONObject: json).write(to: path)
    do {
        _ = try BPETokenizer(hfTokenizerJSON: path.path)
        Issue.record("a Whitespace pre-tokenizer accepted")
    } catch {
        #expect("\(error)".contains("Whitespace") && "\(error)".contains("not supported"), "\(error)")
    }
}
