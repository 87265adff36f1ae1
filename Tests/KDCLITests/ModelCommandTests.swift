// tokenize, generate, eval, inspect and prepare as a user runs them, on the real teacher and on a saved tiny
// student; bad inputs end with one clear line and a non-zero exit.
import Foundation
import KDConfig
import KDData
import KDFormats
import KDModel
import KDTestSupport
import Testing

let teacher = repoRoot.appendingPathComponent("Checkpoints/teachers/SmolLM2-135M-Instruct.Q4_1.gguf").path

func scratchDir() throws -> URL {
    let u = FileManager.default.temporaryDirectory.appendingPathComponent("distill-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
    return u
}

@Test func tokenizeMatchesTheLibraryAndParsesSpecials() throws {
    let r = try runDistill(["tokenize", "--model", teacher, "--special"], stdin: "\"Hello world 123\"\n\"<|im_start|>hi\"\n\"\"\n")
    #expect(r.status == 0, "\(r.err)")
    let tok = try BPETokenizer(gguf: GGUFFile(path: teacher))
    let lines = r.out.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    #expect(lines == ["\(tok.encode("Hello world 123").map(Int.init))".replacingOccurrences(of: " ", with: ""), "[1,6004]", "[]"])
    let bad = try runDistill(["tokenize", "--model", teacher], stdin: "not json\n")
    #expect(bad.status != 0 && bad.err.contains("expected a JSON string"))
}

@Test func greedyGenerationAnswersAndIsReproducible() throws {
    let args = ["generate", "--model", teacher, "--prompt", "What is the capital of France?", "--chat", "--greedy", "--max-tokens", "12", "--json"]
    let a = try runDistill(args), b = try runDistill(args)
    #expect(a.status == 0, "\(a.err)")
    #expect(a.out == b.out)
    let obj = try #require(try JSONSerialization.jsonObject(with: Data(a.out.utf8)) as? [String: Any])
    #expect((obj["text"] as? String ?? "").contains("Paris"))
    #expect((obj["ids"] as? [Int])?.isEmpty == false)
}

/// An empty prompt is an unconditioned sample: generation starts from the tokenizer's BOS instead of failing.
@Test func anEmptyPromptStartsFromBOS() throws {
    let r = try runDistill(["generate", "--model", teacher, "--prompt", "", "--greedy", "--max-tokens", "3", "--json"])
    #expect(r.status == 0, "\(r.err)")
    let obj = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
    #expect(obj["prompt_ids"] as? [Int] == [1])
    #expect((obj["ids"] as? [Int])?.count == 3)
}

/// `synthesize` samples the teacher into JSONL documents that `prepare` reads; the same arguments write the same
/// file, another seed another; bad arguments end with one line and leave no file.
@Test func synthesizeWritesAReproducibleCorpusThatPrepareReads() throws {
    let dir = try scratchDir()
    defer { try? FileManager.default.removeItem(at: dir) }
    let out = dir.appendingPathComponent("s.jsonl")
    func args(seed: Int) -> [String] {
        ["synthesize", "--model", teacher, "--output", out.path, "--tokens", "96", "--length", "24", "--batch", "2",
         "--min-tokens", "1", "--prompt", "<|endoftext|>", "--seed", "\(seed)", "--threads", "1"]
    }
    let a = try runDistill(args(seed: 3))
    #expect(a.status == 0, "\(a.err)")
    let first = try Data(contentsOf: out)
    let docs = String(decoding: first, as: UTF8.self).split(separator: "\n").map {
        (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: String]
    }
    #expect(!docs.isEmpty && docs.allSatisfy { ($0?["text"]?.isEmpty ?? true) == false })
    // control tokens end documents and are not part of any
    #expect(docs.allSatisfy { !($0?["text"] ?? "").contains("<|") })
    // 2 batches × 2 sequences × 24 tokens: every token kept but the control tokens that end documents
    let kept = try #require((a.out + a.err).split(separator: "\n").last { $0.contains("wrote") })
    #expect(kept.contains("wrote \(docs.count) documents ("), "\(kept)")
    let n = Int(kept.split(separator: "(")[1].split(separator: " ")[0]) ?? -1
    #expect(n >= 48 && n <= 96, "\(kept)")
    // a chat turn ends with a control token within 40 tokens: it ends a document and the next one starts after it. At
    // temperature 0.3 the reply to "Say hi." ends within 40 tokens whatever the BLAS's last bits; at 1 a seed's draw
    // follows them (seed 3 ended a turn with OpenBLAS's Zen kernels, not with its SkylakeX kernels on an Intel Xeon)
    let chat = try runDistill(["synthesize", "--model", teacher, "--output", out.path, "--tokens", "80", "--length", "40", "--batch", "2",
                               "--min-tokens", "1", "--prompt", "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n", "--seed", "3",
                               "--temperature", "0.3", "--threads", "1"])
    let turns = String(decoding: try Data(contentsOf: out), as: UTF8.self).split(separator: "\n").count
    let chatKept = (chat.out + chat.err).split(separator: "\n").last { $0.contains("wrote") }.map(String.init) ?? ""
    #expect(chat.status == 0 && turns > 2 && !chatKept.contains("(80 tokens)") && !chatKept.isEmpty, "\(chatKept)")
    #expect(!String(decoding: try Data(contentsOf: out), as: UTF8.self).contains("<|"))
    #expect(try runDistill(args(seed: 3)).status == 0)
    #expect(try Data(contentsOf: out) == first)
    // 2 ranks under mpirun draw one batch each (1 thread each, as the single process): the same file
    try FileManager.default.removeItem(at: out)
    let two = try launch("distill_mpi.sh", ["2"] + args(seed: 3))
    #expect(two.status == 0 && two.out.contains("drawn on 2 ranks"), "\(two.out)")
    #expect(try Data(contentsOf: out) == first)
    #expect(try runDistill(args(seed: 4)).status == 0)
    #expect(try Data(contentsOf: out) != first)
    let prep = try runDistill(["prepare", out.path, "--tokenizer", teacher, "--val-fraction", "0", "--output", dir.appendingPathComponent("p").path])
    #expect(prep.status == 0, "\(prep.err)")
    let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("p/prepare.json"))) as? [String: Any])
    #expect((summary["documents"] as? Int ?? 0) > 0)
    for (bad, message) in [(["--output", dir.appendingPathComponent("x.txt").path], "--output: expected a path ending in .jsonl"),
                           (["--output", dir.appendingPathComponent("y.jsonl").path, "--length", "100000"], "prompt + length"),
                           (["--output", dir.appendingPathComponent("z.jsonl").path, "--temperature", "0"], "--temperature: expected > 0"),
                           (["--output", dir.appendingPathComponent("nowhere/w.jsonl").path], "its folder does not exist or is not writable")] {
        let r = try runDistill(["synthesize", "--model", teacher, "--tokens", "8"] + bad)
        #expect(r.status != 0, "\(bad)")
        #expect(r.err.contains(message), "\(bad): \(r.err)")
        #expect(r.err.split(separator: "\n").filter { $0.contains("rror") }.count == 1, "\(bad): \(r.err)")
    }
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["p", "s.jsonl"])
}

@Test func evalOnTextEqualsTheKVCachePath() throws {
    // a tiny byte-level student saved as a HF folder; eval's chunked-LM-head NLL vs NLL from KV-cache decoding
    let dir = try scratchDir()
    defer { try? FileManager.default.removeItem(at: dir) }
    var m = ModelConfig()
    m.layers = 2; m.dim = 32; m.heads = 4; m.kvHeads = 2; m.ffnDim = 48; m.vocabSize = 256; m.maxSeqLen = 16
    let model = Transformer(config: m, needsGrad: false)
    model.initialize(seed: 3)
    try saveHFModel(model, dir: dir.appendingPathComponent("student").path)
    let text = "the quick brown fox jumps over the lazy dog, again and again."
    try text.write(to: dir.appendingPathComponent("t.txt"), atomically: true, encoding: .utf8)
    let r = try runDistill(["eval", "--model", dir.appendingPathComponent("student").path, "--text", dir.appendingPathComponent("t.txt").path,
                            "--context", "16", "--json"])
    #expect(r.status == 0, "\(r.err)")
    let obj = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
    let ids = ByteTokenizer().encode(text)
    var nll = 0.0, n = 0, start = 0
    while start + 1 < ids.count {
        let w = Array(ids[start..<min(start + 16, ids.count)])
        let cache = KVCache(config: m)
        let logits = model.decode(tokens: w, cache: cache, allRows: true)
        for i in 0..<(w.count - 1) {
            let row = logits[(i * 256)..<((i + 1) * 256)].map(Double.init)
            let mx = row.max()!
            nll += mx + log(row.reduce(0) { $0 + exp($1 - mx) }) - row[Int(w[i + 1])]
            n += 1
        }
        start += w.count
    }
    #expect(obj["predicted"] as? Int == n)
    #expect(obj["tokens"] as? Int == ids.count)
    #expect(abs((obj["mean_nll"] as? Double ?? 0) - nll / Double(n)) < 1e-4)
    // with the model as its own teacher: KL 0, full agreement
    let selfKD = try runDistill(["eval", "--model", dir.appendingPathComponent("student").path, "--teacher", dir.appendingPathComponent("student").path,
                                 "--text", dir.appendingPathComponent("t.txt").path, "--context", "16", "--json"])
    let k = try #require(try JSONSerialization.jsonObject(with: Data(selfKD.out.utf8)) as? [String: Any])
    #expect(abs(k["kl_teacher_model"] as? Double ?? 1) < 1e-9)
    #expect(k["top1_agreement"] as? Double == 1)
    // the windows above went through forwards of up to 8 (three of 16 tokens, then the short last one alone): one
    // window per forward reads the same predictions and losses
    let one = try runDistill(["eval", "--model", dir.appendingPathComponent("student").path, "--text", dir.appendingPathComponent("t.txt").path,
                              "--context", "16", "--json", "--batch", "1"])
    let o = try #require(try JSONSerialization.jsonObject(with: Data(one.out.utf8)) as? [String: Any])
    #expect(o["predicted"] as? Int == n)
    #expect(abs((o["mean_nll"] as? Double ?? 0) - (obj["mean_nll"] as? Double ?? 1)) < 1e-6)
    let bad = try runDistill(["eval", "--model", dir.appendingPathComponent("student").path, "--text", dir.appendingPathComponent("t.txt").path,
                              "--batch", "0"])
    #expect(bad.status != 0 && bad.err.contains("--batch: expected >= 1, found 0"), "\(bad.err)")
}

/// `eval --precision bf16` on the real teacher: with bf16's numbers (the rounded kernel) the NLL is f32's within 5e-3
/// and not equal, and the JSON says which precision ran; forced off (as on a CPU without AVX512-BF16) one warning and
/// f32's NLL exactly; a misspelt precision is refused.
@Test func evalWithBF16MatmulsIsF32sWithin5e3() throws {
    let text = repoRoot.appendingPathComponent("Tests/KDTrainTests/Fixtures/fortunes-sample.txt").path
    func eval(_ precision: String, _ kernel: String) throws -> (obj: [String: Any], err: String) {
        let r = try runProcess(try distillBinary(), ["eval", "--model", teacher, "--text", text, "--context", "64", "--max-windows", "8",
                                                     "--json", "--threads", "1", "--precision", precision],
                               in: repoRoot, env: ["DISTILL_BF16_KERNEL": kernel])
        #expect(r.status == 0, "\(r.err)")
        return (try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]), r.err + r.out)
    }
    let f32 = try eval("f32", "rounded"), bf16 = try eval("bf16", "rounded"), off = try eval("bf16", "off")
    let (a, b, c) = (f32.obj["mean_nll"] as? Double ?? 0, bf16.obj["mean_nll"] as? Double ?? 0, off.obj["mean_nll"] as? Double ?? 0)
    #expect(f32.obj["precision"] as? String == "f32" && bf16.obj["precision"] as? String == "bf16-rounded")
    #expect(abs(b - a) <= 5e-3 && b != a, "NLL f32 \(a), bf16 \(b)")
    #expect(c == a && off.obj["precision"] as? String == "f32")
    #expect(off.err.contains("warning: eval --precision bf16: DISTILL_BF16_KERNEL=off, computing in f32"), "\(off.err)")
    let bad = try runDistill(["eval", "--model", teacher, "--text", text, "--precision", "fp8"])
    #expect(bad.status != 0 && bad.err.contains("--precision: expected 'f32' or 'bf16', found 'fp8'"), "\(bad.err)")
}

@Test func prepareWritesDeterministicMaskedShards() throws {
    let dir = try scratchDir()
    defer { try? FileManager.default.removeItem(at: dir) }
    let corpus = dir.appendingPathComponent("c")
    try FileManager.default.createDirectory(at: corpus, withIntermediateDirectories: true)
    try "first fortune\n%\nsecond one\n%\nthird\n".write(to: corpus.appendingPathComponent("f.txt"), atomically: true, encoding: .utf8)
    try "{\"prompt\": \"Q?\", \"response\": \"A.\"}\n{\"text\": \"plain\"}\n".write(to: corpus.appendingPathComponent("d.jsonl"), atomically: true, encoding: .utf8)
    func prep(_ out: String) throws -> (Int32, String) {
        let r = try runDistill(["prepare", corpus.path, "--output", dir.appendingPathComponent(out).path, "--tokenizer", teacher,
                                "--separator", "%", "--val-fraction", "0.3", "--chat"])
        return (r.status, r.err)
    }
    let (s1, e1) = try prep("a"), (s2, _) = try prep("b")
    #expect(s1 == 0, "\(e1)")
    #expect(s2 == 0)
    for split in ["train.bin", "validation.bin"] {
        let a = try Data(contentsOf: dir.appendingPathComponent("a/\(split)")), b = try Data(contentsOf: dir.appendingPathComponent("b/\(split)"))
        #expect(a == b)
    }
    let tok = try BPETokenizer(gguf: GGUFFile(path: teacher))
    let tr = try TokenShard.read(path: dir.appendingPathComponent("a/train.bin").path)
    let va = try TokenShard.read(path: dir.appendingPathComponent("a/validation.bin").path)
    #expect(tr.docStarts.count - 1 + va.docStarts.count - 1 == 5)
    #expect(tr.tokenizerHash == tok.hash && tr.vocabSize == 49152)
    // every document ends with EOS; the ChatML prompt is masked out, the response and EOS are not
    let docs = [tr, va].flatMap { s in (0..<(s.docStarts.count - 1)).map { (s, s.docStarts[$0], s.docStarts[$0 + 1]) } }
    var sawPair = false
    for (s, a, b) in docs {
        #expect(s.tokens[b - 1] == tok.eos!)
        let text = tok.decode(Array(s.tokens[a..<(b - 1)]))
        if text.contains("<|im_start|>") {
            sawPair = true
            let masked = (a..<b).filter { s.mask[$0] == 0 }.map { s.tokens[$0] }
            #expect(tok.decode(masked) == BPETokenizer.chatML(user: "Q?"))
            #expect(tok.decode((a..<(b - 1)).filter { s.mask[$0] == 1 }.map { s.tokens[$0] }) == "A.")
        } else {
            #expect((a..<b).allSatisfy { s.mask[$0] == 1 })
            #expect(["first fortune\n", "second one\n", "third\n", "plain"].contains(text), "\(text.debugDescription)")
        }
    }
    #expect(sawPair)
    let inspect = try runDistill(["inspect", dir.appendingPathComponent("a/train.bin").path])
    #expect(inspect.status == 0 && inspect.out.contains("token shard"))
}

@Test func badModelAndCorpusInputsFailWithOneLine() throws {
    let dir = try scratchDir()
    defer { try? FileManager.default.removeItem(at: dir) }
    let junk = dir.appendingPathComponent("junk.gguf")
    try Data("this is not a model".utf8).write(to: junk)
    let truncated = dir.appendingPathComponent("trunc.gguf")
    try Data(try Data(contentsOf: URL(fileURLWithPath: teacher)).prefix(5_000_000)).write(to: truncated)
    let binary = dir.appendingPathComponent("bin.txt")
    try Data([0x66, 0x6f, 0xff, 0xfe, 0x0a]).write(to: binary)
    let empty = dir.appendingPathComponent("empty")
    try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
    try Data().write(to: empty.appendingPathComponent("e.txt"))
    let cases: [([String], String)] = [
        (["generate", "--model", junk.path, "--prompt", "x"], "expected a .gguf file or a Hugging Face folder"),
        (["generate", "--model", truncated.path, "--prompt", "x"], "past the end of the"),
        (["eval", "--model", dir.path, "--text", junk.path], "expected a Hugging Face model folder with config.json"),
        (["inspect", dir.appendingPathComponent("nope").path], "file not found"),
        (["prepare", binary.path, "--output", dir.appendingPathComponent("o1").path], "expected UTF-8 text, found invalid bytes near byte 2"),
        (["prepare", empty.path, "--output", dir.appendingPathComponent("o2").path], "no text found"),
    ]
    for (args, message) in cases {
        let r = try runDistill(args)
        #expect(r.status != 0, "\(args)")
        #expect(r.err.contains(message), "\(args): \(r.err)")
        #expect(r.err.split(separator: "\n").count == 1, "\(args): \(r.err)")
    }
    #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("o2/train.bin").path))
}

/// A prepare that fails leaves nothing: no output folder, no temporary beside it, and an earlier output untouched; a
/// folder that is not a prepare output is refused rather than replaced.
@Test func aFailedPrepareLeavesNothingAndKeepsAnEarlierOutput() throws {
    let dir = try scratchDir()
    defer { try? FileManager.default.removeItem(at: dir) }
    let bad = dir.appendingPathComponent("bad.jsonl"), good = dir.appendingPathComponent("good.txt")
    try Data("{\"text\": \"hello\"}\n{\"text\": \n".utf8).write(to: bad)
    try Data("hello world\n".utf8).write(to: good)
    func siblings() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() }
    let first = try runDistill(["prepare", bad.path, "--output", dir.appendingPathComponent("out").path])
    #expect(first.status != 0 && first.err.contains("bad.jsonl:2: expected a JSON object per line"), "\(first.err)")
    #expect(try siblings() == ["bad.jsonl", "good.txt"])
    // an earlier output survives a failed replacement bit for bit
    let out = dir.appendingPathComponent("out")
    #expect(try runDistill(["prepare", good.path, "--output", out.path]).status == 0)
    let before = try Data(contentsOf: out.appendingPathComponent("train.bin"))
    #expect(try runDistill(["prepare", bad.path, "--output", out.path]).status != 0)
    #expect(try Data(contentsOf: out.appendingPathComponent("train.bin")) == before)
    #expect(try siblings() == ["bad.jsonl", "good.txt", "out"])
    // and a successful one replaces it
    try Data("hello world, again\n".utf8).write(to: good)
    #expect(try runDistill(["prepare", good.path, "--output", out.path]).status == 0)
    #expect(try Data(contentsOf: out.appendingPathComponent("train.bin")) != before)
    // a folder holding anything else is not an output to replace
    let other = dir.appendingPathComponent("notes")
    try FileManager.default.createDirectory(at: other, withIntermediateDirectories: true)
    try Data("mine".utf8).write(to: other.appendingPathComponent("todo.txt"))
    let refused = try runDistill(["prepare", good.path, "--output", other.path])
    #expect(refused.status != 0 && refused.err.contains("found a folder with other files (todo.txt); nothing was written"), "\(refused.err)")
    #expect(try FileManager.default.contentsOfDirectory(atPath: other.path) == ["todo.txt"])
}

/// SIGINT during a long prepare: it stops between pieces, removes what it wrote and exits non-zero with one line.
@Test func aSignalDuringPrepareLeavesNothing() throws {
    let dir = try scratchDir()
    defer { try? FileManager.default.removeItem(at: dir) }
    let text = dir.appendingPathComponent("big.txt")
    var s = ""
    for i in 0..<400_000 { s += "Line \(i): the quick brown fox jumps over the lazy dog, said the \(i % 97)th student.\n" }
    try Data(s.utf8).write(to: text)  // 32 MB: several seconds of BPE
    let p = Process()
    p.executableURL = try distillBinary()
    p.arguments = ["prepare", text.path, "--output", dir.appendingPathComponent("out").path, "--tokenizer", teacher]
    let err = Pipe()
    p.standardOutput = FileHandle.nullDevice
    p.standardError = err
    try p.run()
    // wait until it writes (its temporary folder exists), then interrupt
    let deadline = Date().addingTimeInterval(60)
    while Date() < deadline, p.isRunning, !(try FileManager.default.contentsOfDirectory(atPath: dir.path)).contains(where: { $0.hasPrefix("out.tmp-") }) {
        Thread.sleep(forTimeInterval: 0.05)
    }
    Thread.sleep(forTimeInterval: 0.3)
    #expect(p.isRunning, "prepare finished before the signal; the input is too small for this machine")
    kill(p.processIdentifier, SIGINT)
    p.waitUntilExit()
    let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    #expect(p.terminationStatus != 0)
    #expect(message.contains("stopped by a signal before the end; nothing was written to"), "\(message)")
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["big.txt"])
}
