// Commands that run models people bring: tokenize, generate, eval, inspect, and prepare (text → token shards).
import ArgumentParser
import Foundation
import KDCheckpoint
import KDConfig
import KDCore
import KDData
import KDFormats
import KDModel
import KDOps
import KDQuant
import KDTrain

/// Text ↔ ids for a loaded model: its own BPE tokenizer, or bytes for a byte-level (vocabulary 256) model.
struct TextCodec {
    let bpe: BPETokenizer?
    func encode(_ s: String, special: Bool = false) -> [Int32] { bpe?.encode(s, special: special) ?? ByteTokenizer().encode(s) }
    func decode(_ ids: [Int32]) -> String { bpe?.decode(ids) ?? ByteTokenizer().decode(ids) }

    init(_ loaded: LoadedModel) throws {
        bpe = loaded.tokenizer
        if bpe == nil, loaded.model.config.vocabSize != 256 {
            throw KDError.invalidInput(what: "tokenizer", expected: "a tokenizer in the model (GGUF metadata or tokenizer.json) or a byte-level model of vocabulary 256",
                                       found: "none, vocabulary \(loaded.model.config.vocabSize)")
        }
    }
}

func printJSON(_ obj: Any) throws {
    let d = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .withoutEscapingSlashes])
    print(String(decoding: d, as: UTF8.self))
}

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Tokenize stdin: each line a JSON string; prints its token ids as a JSON array per line.")
    @Option(help: "GGUF file or Hugging Face folder whose tokenizer to use.") var model: String
    @Flag(help: "Parse control tokens written in the text (e.g. <|im_start|>).") var special = false

    func run() throws {
        do {
            let tok = try loadTokenizer(model)
            while let line = readLine(strippingNewline: true) {
                guard let s = try? JSONSerialization.jsonObject(with: Data(line.utf8), options: [.fragmentsAllowed]) as? String else {
                    throw KDError.invalidInput(what: "stdin line", expected: "a JSON string such as \"hello\"", found: String(line.prefix(60)))
                }
                try printJSON(tok.encode(s, special: special).map(Int.init))
            }
        } catch { throw fail(error) }
    }
}

/// A tokenizer alone (no weights loaded).
func loadTokenizer(_ path: String) throws -> BPETokenizer {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw KDError.fileNotFound(path: path) }
    if isDir.boolValue { return try BPETokenizer(hfTokenizerJSON: (path as NSString).appendingPathComponent("tokenizer.json")) }
    return try BPETokenizer(gguf: GGUFFile(path: path))
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Continue a prompt, streaming tokens as they come.")
    @Option(help: "GGUF file or Hugging Face folder.") var model: String
    @Option(help: "The prompt text.") var prompt: String
    @Flag(help: "Always take the most likely token.") var greedy = false
    @Option(help: "Sampling temperature.") var temperature: Float = 0.8
    @Option(help: "Keep the k most likely tokens (0 = all).") var topK = 0
    @Option(help: "Keep the most likely tokens up to this probability mass.") var topP: Float = 0.95
    @Option(help: "Tokens to generate at most.") var maxTokens = 128
    @Option(help: "Seed of the sampling stream.") var seed: UInt64 = 0
    @Flag(help: "Wrap the prompt in the ChatML template (SmolLM2-Instruct and other ChatML models).") var chat = false
    @Flag(help: "Print {\"prompt_ids\", \"ids\", \"text\"} at the end instead of streaming text.") var json = false
    @Option(help: "Compute threads (0 = all cores).") var threads = 0

    func validate() throws {
        if maxTokens < 1 { throw ValidationError("--max-tokens: expected >= 1, found \(maxTokens)") }
        if temperature < 0 { throw ValidationError("--temperature: expected >= 0, found \(temperature)") }
        if topK < 0 { throw ValidationError("--top-k: expected >= 0, found \(topK)") }
        if !(topP > 0 && topP <= 1) { throw ValidationError("--top-p: expected a number in (0, 1], found \(topP)") }
    }

    func run() throws {
        do {
            configureThreads(threads)
            let loaded = try openModel(path: model)
            let codec = try TextCodec(loaded)
            let text = chat ? BPETokenizer.chatML(user: prompt) : prompt
            let ids = codec.encode(text, special: chat)
            let m = loaded.model
            guard ids.count < m.config.maxSeqLen else {
                throw KDError.invalidInput(what: "prompt", expected: "fewer than \(m.config.maxSeqLen) tokens", found: "\(ids.count)")
            }
            var stop = Set<Int32>()
            if let e = codec.bpe?.eos { stop.insert(e) }
            if let imEnd = codec.bpe?.tokens.firstIndex(of: "<|im_end|>") { stop.insert(Int32(imEnd)) }
            let sampler = greedy ? Sampler.greedy : Sampler(temperature: temperature, topK: topK, topP: topP)
            var out: [Int32] = [], printed = 0
            let generated = m.generate(prompt: ids, maxNewTokens: min(maxTokens, m.config.maxSeqLen - ids.count), sampler: sampler,
                                       rng: CounterRNG(seed: seed, purpose: .sampling), stop: stop) { tok in
                guard !json else { return }
                out.append(tok)
                if stop.contains(tok) { return }
                // print whole characters only: hold back a trailing incomplete UTF-8 sequence
                let s = codec.decode(out.filter { !stop.contains($0) })
                let whole = s.hasSuffix("\u{FFFD}") ? String(s.dropLast()) : s
                if whole.count > printed {
                    print(String(whole.dropFirst(printed)), terminator: "")
                    fflush(stdout)
                    printed = whole.count
                }
            }
            if json {
                try printJSON(["prompt_ids": ids.map(Int.init), "ids": generated.map(Int.init), "text": codec.decode(generated.filter { !stop.contains($0) })])
            } else {
                print()
            }
        } catch { throw fail(error) }
    }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "NLL and perplexity of a model on text or a prepared split; with --teacher, KL(teacher‖model) and top-1 agreement.")
    @Option(help: "GGUF file or Hugging Face folder.") var model: String
    @Option(help: "A text file: tokenized whole, cut into non-overlapping windows of --context tokens.") var text: String?
    @Option(help: "A folder written by distill prepare.") var data: String?
    @Option(help: "Split of --data: train or validation.") var split = "validation"
    @Option(help: "Tokens per window; every next-token prediction inside a window counts.") var context = 256
    @Option(help: "Evaluate at most this many windows (0 = all).") var maxWindows = 0
    @Option(help: "A teacher (GGUF or HF folder) to compare with.") var teacher: String?
    @Option(help: "Compute threads (0 = all cores).") var threads = 0
    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "Also append the result as one JSON line, with --label, to this file (distill report shows a run's evaluation.jsonl).")
    var appendTo: String?
    @Option(help: "The model's name in --append-to lines.") var label: String?

    func validate() throws {
        if appendTo != nil, label == nil { throw ValidationError("--append-to needs --label NAME") }
        if (text == nil) == (data == nil) { throw ValidationError("give exactly one of --text FILE or --data DIR") }
        if context < 2 { throw ValidationError("--context: expected >= 2, found \(context)") }
        if !["train", "validation"].contains(split) { throw ValidationError("--split: expected train or validation, found '\(split)'") }
    }

    func run() throws {
        do {
            configureThreads(threads)
            let loaded = try openModel(path: model, maxSeqLen: context)
            let teacherModel = try teacher.map { try openModel(path: $0, maxSeqLen: context) }
            if let t = teacherModel, t.model.config.vocabSize != loaded.model.config.vocabSize {
                throw KDError.invalidInput(what: "teacher vocabulary", expected: "\(loaded.model.config.vocabSize) tokens (the model's)", found: "\(t.model.config.vocabSize)")
            }
            var ids: [Int32], mask: [UInt8]
            if let text {
                let codec = try TextCodec(loaded)
                guard let data = FileManager.default.contents(atPath: text) else { throw KDError.fileNotFound(path: text) }
                guard let s = String(data: data, encoding: .utf8) else {
                    throw KDError.invalidInput(what: text, expected: "UTF-8 text", found: "invalid bytes")
                }
                ids = codec.encode(s)
                if let b = codec.bpe, b.addBOS, let bos = b.bos { ids.insert(bos, at: 0) }
                mask = [UInt8](repeating: 1, count: ids.count)
            } else {
                let path = (data! as NSString).appendingPathComponent("\(split).bin")
                let shard = try TokenShard.read(path: path)
                // ids need no tokenizer; when the model carries one, it must be the shard's
                if let b = loaded.tokenizer ?? teacherModel?.tokenizer {
                    try shard.check(path: path, vocabSize: b.vocabSize, tokenizerHash: b.hash)
                } else if shard.vocabSize > loaded.model.config.vocabSize {
                    throw ShardError.vocabMismatch(path: path, expected: loaded.model.config.vocabSize, found: shard.vocabSize)
                }
                ids = shard.tokens
                mask = shard.mask
            }
            let r = evaluate(loaded.model, teacher: teacherModel?.model, ids: ids, mask: mask, context: context, maxWindows: maxWindows)
            guard r.predicted > 0 else {
                throw KDError.invalidInput(what: "eval input", expected: "at least 2 tokens", found: "\(ids.count)")
            }
            var obj: [String: Any] = ["tokens": ids.count, "predicted": r.predicted, "mean_nll": r.nll / Double(r.predicted),
                                      "perplexity": Foundation.exp(r.nll / Double(r.predicted)),
                                      "tokens_per_s": Double(r.evaluated) / r.seconds, "size_bytes": weightBytesOnDisk(model)]
            if let teacher, teacherModel != nil {
                obj["teacher_mean_nll"] = r.teacherNLL / Double(r.predicted)
                obj["kl_teacher_model"] = r.kl / Double(r.predicted)
                obj["top1_agreement"] = Double(r.agree) / Double(r.predicted)
                obj["teacher_tokens_per_s"] = Double(r.evaluated) / r.teacherSeconds
                obj["teacher_size_bytes"] = weightBytesOnDisk(teacher)
            }
            if json { try printJSON(obj) } else { printEvalTable(obj, predicted: r.predicted) }
            if let appendTo, let label {
                obj["label"] = label
                obj["model"] = model
                var line = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
                line.append(0x0a)
                guard FileManager.default.fileExists(atPath: appendTo) || FileManager.default.createFile(atPath: appendTo, contents: nil),
                      let fh = FileHandle(forWritingAtPath: appendTo) else {
                    throw KDError.unwritable(path: appendTo, reason: "cannot open it for appending")
                }
                fh.seekToEndOfFile()
                fh.write(line)
                try fh.close()
            }
        } catch { throw fail(error) }
    }
}

/// The result of `distill eval` as a table: one column for the model, one for the teacher when there is one.
func printEvalTable(_ o: [String: Any], predicted: Int) {
    func d(_ k: String) -> Double? { (o[k] as? NSNumber)?.doubleValue ?? (o[k] as? Double) }
    let teacher = d("teacher_mean_nll") != nil
    func row(_ name: String, _ model: String, _ teach: String) {
        print(name.padding(toLength: 22, withPad: " ", startingAt: 0) + model.padding(toLength: 16, withPad: " ", startingAt: 0)
              + (teacher ? teach : ""))
    }
    func f(_ v: Double?, _ fmt: String) -> String { v.map { String(format: fmt, $0) } ?? "–" }
    row("", "model", "teacher")
    row("val NLL (nats/token)", f(d("mean_nll"), "%.4f"), f(d("teacher_mean_nll"), "%.4f"))
    row("perplexity", f(d("perplexity"), "%.2f"), f(d("teacher_mean_nll").map { Foundation.exp($0) }, "%.2f"))
    if teacher {
        row("KL(teacher‖model)", f(d("kl_teacher_model"), "%.4f"), "0")
        row("top-1 agreement", f(d("top1_agreement").map { 100 * $0 }, "%.1f%%"), "100%")
    }
    row("size on disk", f(d("size_bytes").map { $0 / 1048576 }, "%.1f MiB"), f(d("teacher_size_bytes").map { $0 / 1048576 }, "%.1f MiB"))
    row("tokens/s (forward)", f(d("tokens_per_s"), "%.0f"), f(d("teacher_tokens_per_s"), "%.0f"))
    print("(\(predicted) predicted tokens)")
}

struct EvalResult {
    var nll = 0.0, teacherNLL = 0.0, kl = 0.0, predicted = 0, agree = 0
    /// Tokens run through the model, and the seconds the model's and the teacher's forward passes took.
    var evaluated = 0, seconds = 0.0, teacherSeconds = 0.0
}

/// Bytes of a model's weights on disk: a GGUF file's size; for a folder (Hugging Face or a checkpoint), its
/// *.safetensors files except a checkpoint's optimizer state.
func weightBytesOnDisk(_ path: String) -> Int {
    let fm = FileManager.default
    var isDir: ObjCBool = false
    guard fm.fileExists(atPath: path, isDirectory: &isDir) else { return 0 }
    func size(_ p: String) -> Int { ((try? fm.attributesOfItem(atPath: p))?[.size] as? NSNumber)?.intValue ?? 0 }
    guard isDir.boolValue else { return size(path) }
    let files = (try? fm.contentsOfDirectory(atPath: path)) ?? []
    return files.filter { $0.hasSuffix(".safetensors") && $0 != "optimizer.safetensors" && $0 != "ema_teacher.safetensors" }
        .reduce(0) { $0 + size((path as NSString).appendingPathComponent($1)) }
}

/// Non-overlapping windows of `context` tokens, each from position 0; position i predicts i + 1 where mask[i + 1] = 1.
func evaluate(_ model: Transformer, teacher: Transformer?, ids: [Int32], mask: [UInt8], context: Int, maxWindows: Int) -> EvalResult {
    var r = EvalResult()
    let v = model.config.vocabSize
    var start = 0, windows = 0
    while start + 1 < ids.count, maxWindows == 0 || windows < maxWindows {
        let t = min(context, ids.count - start)
        let inp = Array(ids[start..<(start + t)])
        var tgt = [Int32](repeating: -1, count: t)
        for i in 0..<(t - 1) where mask[start + i + 1] != 0 { tgt[i] = ids[start + i + 1] }
        let t0 = monotonicSeconds()
        inp.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: 1, t: t) }
        let ls = tgt.withUnsafeBufferPointer { model.loss(targets: $0.baseAddress!) }
        r.seconds += monotonicSeconds() - t0
        r.evaluated += t
        r.nll += ls.sum
        r.predicted += ls.count
        if let teacher {
            var ql = [Float](repeating: 0, count: t * v), pl = ql
            ql.withUnsafeMutableBufferPointer { model.logits(into: $0.baseAddress!) }
            let t1 = monotonicSeconds()
            inp.withUnsafeBufferPointer { teacher.forward(tokens: $0.baseAddress!, b: 1, t: t) }
            pl.withUnsafeMutableBufferPointer { teacher.logits(into: $0.baseAddress!) }
            r.teacherSeconds += monotonicSeconds() - t1  // forward and LM head, as the student's forward and loss
            for i in 0..<t where tgt[i] >= 0 {
                let lp = logSoftmaxRow(Array(pl[(i * v)..<((i + 1) * v)])), lq = logSoftmaxRow(Array(ql[(i * v)..<((i + 1) * v)]))
                var kl = 0.0
                for j in 0..<v { kl += Foundation.exp(lp[j]) * (lp[j] - lq[j]) }
                r.kl += kl
                r.teacherNLL -= lp[Int(tgt[i])]
                if lp.indices.max(by: { lp[$0] < lp[$1] }) == lq.indices.max(by: { lq[$0] < lq[$1] }) { r.agree += 1 }
            }
        }
        start += t
        windows += 1
    }
    return r
}

func logSoftmaxRow(_ x: [Float]) -> [Double] {
    let m = Double(x.max()!)
    let lse = m + Foundation.log(x.reduce(0.0) { $0 + Foundation.exp(Double($1) - m) })
    return x.map { Double($0) - lse }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Summarize a GGUF file, a safetensors file or folder, or a token shard.")
    @Argument(help: "The file or folder.") var path: String

    func run() throws {
        do {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw KDError.fileNotFound(path: path) }
            if isDir.boolValue {
                let m = try hfModelConfig(dir: path)
                print("Hugging Face folder \(path)")
                if FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("state.json")) {
                    do {
                        let s = try CheckpointStore.verify(dir: path)
                        print("  checkpoint: step \(s.step), sample cursor \(s.sampleCursor), lr \(s.lr), written by \(s.worldSize) rank(s); checksums ok")
                    } catch { print("  checkpoint: does not verify: \(error)") }
                }
                print("  model  \(m.layers) layers, dim \(m.dim), \(m.heads) heads / \(m.kvHeads) kv, ffn \(m.ffnDim), vocab \(m.vocabSize), rope θ \(m.ropeTheta), tied \(m.tiedEmbeddings)")
                for f in try FileManager.default.contentsOfDirectory(atPath: path).sorted() where f.hasSuffix(".safetensors") {
                    try describeSafetensors((path as NSString).appendingPathComponent(f))
                }
                return
            }
            let head = FileHandle(forReadingAtPath: path)?.readData(ofLength: 8) ?? Data()
            if head.prefix(4) == Data("GGUF".utf8) {
                try describeGGUF(path)
            } else if head == Data(TokenShard.magic) {
                let s = try TokenShard.read(path: path)
                print("token shard \(path)")
                print("  vocab \(s.vocabSize), tokenizer hash \(String(s.tokenizerHash, radix: 16)), \(s.tokens.count) tokens, \(s.docStarts.count - 1) documents, \(s.mask.filter { $0 != 0 }.count) in the loss")
            } else {
                try describeSafetensors(path)
            }
        } catch { throw fail(error) }
    }

    func describeGGUF(_ path: String) throws {
        let f = try GGUFFile(path: path)
        print("GGUF v\(f.version) \(path): \(f.fileSize) bytes, \(f.tensors.count) tensors, alignment \(f.alignment)")
        for k in f.keys {
            let v = f.metadata[k]!
            let shown: String
            switch v {
            case .array(let a): shown = "[\(a.count) items" + (a.count <= 8 ? ": " + a.map(describe).joined(separator: ", ") : "") + "]"
            default: shown = describe(v)
            }
            print("  \(k) = \(shown.count > 120 ? String(shown.prefix(117)) + "..." : shown)")
        }
        var byType: [String: (Int, Int)] = [:]
        for t in f.tensors {
            let e = byType["\(t.type)"] ?? (0, 0)
            byType["\(t.type)"] = (e.0 + 1, e.1 + t.byteCount)
        }
        print("  tensors by type: " + byType.keys.sorted().map { "\($0) ×\(byType[$0]!.0) (\(byType[$0]!.1 / 1024) KiB)" }.joined(separator: ", "))
        for t in f.tensors.prefix(12) { print("    \(t.name) \(t.type) \(t.shape)") }
        if f.tensors.count > 12 { print("    … \(f.tensors.count - 12) more") }
        if let m = try? ggufModelConfig(f) {
            print("  model  \(m.layers) layers, dim \(m.dim), \(m.heads) heads / \(m.kvHeads) kv, ffn \(m.ffnDim), vocab \(m.vocabSize), rope θ \(m.ropeTheta), tied \(m.tiedEmbeddings)")
        }
    }

    func describe(_ v: GGUFValue) -> String {
        switch v {
        case .uint(let x): return "\(x)"
        case .int(let x): return "\(x)"
        case .float(let x): return "\(x)"
        case .bool(let b): return "\(b)"
        case .string(let s): return "\"\(s.replacingOccurrences(of: "\n", with: "\\n"))\""
        case .array(let a): return "[\(a.count)]"
        }
    }

    func describeSafetensors(_ path: String) throws {
        let f = try SafetensorsFile(path: path)
        let params = f.tensors.reduce(0) { $0 + $1.elements }
        print("safetensors \(path): \(f.tensors.count) tensors, \(params) parameters")
        for (k, v) in f.metadata.sorted(by: { $0.key < $1.key }) { print("  \(k) = \(v.count > 100 ? String(v.prefix(97)) + "..." : v)") }
        for t in f.tensors.prefix(12) { print("    \(t.name) \(t.dtype) \(t.shape)") }
        if f.tensors.count > 12 { print("    … \(f.tensors.count - 12) more") }
    }
}

struct Prepare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Text files, folders and JSONL (text, or prompt + response) → train/validation token shards.")
    @Argument(help: "Text files, folders (read recursively) and .jsonl files.") var inputs: [String]
    @Option(help: "Output folder (train.bin, validation.bin, prepare.json).") var output: String
    @Option(help: "'bytes', or a GGUF file / Hugging Face folder whose tokenizer to use.") var tokenizer = "bytes"
    @Option(help: "Fraction of documents held out for validation.") var valFraction = 0.05
    @Option(help: "A line equal to this ends a document in text files (e.g. % for fortune files).") var separator: String?
    @Option(parsing: .singleValue, help: "Skip files ending so inside folders (repeatable).") var excludeSuffix: [String] = [".dat"]
    @Flag(help: "Wrap prompts of prompt/response pairs in the ChatML template.") var chat = false
    @Option(help: "Seed of the train/validation split.") var seed: UInt64 = 1234

    func validate() throws {
        if inputs.isEmpty { throw ValidationError("give at least one input file or folder") }
        if !(valFraction >= 0 && valFraction < 1) { throw ValidationError("--val-fraction: expected a number in [0, 1), found \(valFraction)") }
    }

    func run() throws {
        do {
            let tk: ShardTokenizer
            if tokenizer == "bytes" {
                tk = .bytes
            } else {
                let b = try loadTokenizer(tokenizer)
                let chat = self.chat
                tk = ShardTokenizer(vocabSize: b.vocabSize, hash: b.hash, eos: b.eos, encode: { b.encode($0) }, encodePair: { p, r in
                    let prompt = chat ? b.encode(BPETokenizer.chatML(user: p), special: true) : b.encode(p)
                    let resp = b.encode(r)
                    return (prompt + resp, [UInt8](repeating: 0, count: prompt.count) + [UInt8](repeating: 1, count: resp.count))
                })
            }
            var o = PrepareOptions(inputs: inputs, output: output)
            o.valFraction = valFraction
            o.separator = separator
            o.excludeSuffixes = excludeSuffix
            o.seed = seed
            let start = monotonicSeconds()
            let tty = isatty(2) != 0
            let s = try prepareCorpus(o, tokenizer: tk) { done, total in
                guard tty else { return }
                let pct = total > 0 ? 100 * done / total : 100, bar = String(repeating: "#", count: pct / 4).padding(toLength: 25, withPad: " ", startingAt: 0)
                FileHandle.standardError.write(Data(String(format: "\rprepare [%@] %3d%% %.1f MB/s", bar, pct, Double(done) / 1e6 / max(monotonicSeconds() - start, 1e-3)).utf8))
            }
            if tty { FileHandle.standardError.write(Data("\n".utf8)) }
            print("prepare: \(s.files) files, \(s.documents) documents, \(s.bytesRead) bytes → \(s.trainTokens) train / \(s.validationTokens) validation tokens in \(output)"
                  + String(format: " (%.1f s)", monotonicSeconds() - start))
        } catch { throw fail(error) }
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export a trained student (a checkpoint folder) as GGUF (llama.cpp, Ollama) or as a Hugging Face safetensors folder.")

    @Argument(help: "A checkpoint folder (or any Hugging Face folder).") var checkpoint: String
    @Option(help: "gguf or safetensors.") var format: String
    @Option(help: "f32, f16, q8_0, q4_0 or q4_1 (GGUF; default: the QAT scheme the student trained with, else f16). For safetensors the weights are stored F32, after the round trip through the type when one is given.") var quant: String?
    @Option(help: "Output file (gguf) or folder (safetensors); replaced only when complete.") var out: String
    @Option(help: "Type of the token embedding and LM head (default: --quant, or f32 for a QAT student that kept them in full precision — exactly what it trained with).") var embeddingQuant: String?
    @Option(help: "A GGUF file whose tokenizer and chat template to copy (default: the checkpoint's GGUF teacher).") var tokenizerFrom: String?

    func validate() throws {
        guard ["gguf", "safetensors"].contains(format) else { throw ValidationError("--format: expected gguf or safetensors, found '\(format)'") }
        for (flag, v) in [("--quant", quant), ("--embedding-quant", embeddingQuant)] {
            if let v, exportTypes[v] == nil { throw ValidationError("\(flag): expected one of f32, f16, q8_0, q4_0, q4_1, found '\(v)'") }
        }
    }

    func run() throws {
        do {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: checkpoint, isDirectory: &isDir), isDir.boolValue else {
                throw KDError.invalidInput(what: "export", expected: "a checkpoint folder", found: FileManager.default.fileExists(atPath: checkpoint) ? "a file: \(checkpoint)" : "nothing at \(checkpoint)")
            }
            if FileManager.default.fileExists(atPath: (checkpoint as NSString).appendingPathComponent("checksums.json")) {
                _ = try CheckpointStore.verify(dir: checkpoint)
            }
            // the full-precision weights as stored; QAT is applied below, from the checkpoint's config
            let (model, _) = try loadHFModel(dir: checkpoint, needsGrad: false)
            let qat = try checkpointQAT(dir: checkpoint)
            let scheme = qat.flatMap { FakeQuantScheme(rawValue: $0.scheme) }
            let trained = scheme?.ggmlType
            let typeName = quant ?? trained.map { "\($0)".lowercased() } ?? (format == "gguf" ? "f16" : "f32")
            guard let type = exportTypes[typeName] else { throw ValidationError("--quant: unknown type \(typeName)") }
            // learned or frozen scales: the weights are quantized with those, not with the absmax of each block
            let scales = try qat.flatMap { try loadQATScales(dir: checkpoint, model: model, qat: $0) }
            if let scheme {
                if let trained, trained != type {
                    KDLog.info("note: the student trained with \(trained) weights; \(type) quantizes its full-precision weights instead (not what it trained with)")
                } else if trained == nil {
                    // per-channel schemes have no GGUF type: store the values it trained with
                    if let scales {
                        model.writeFakeQuantized(scales: scales, master: model.params.base, mask: nil)
                    } else {
                        model.writeFakeQuantized(scheme, embeddings: qat!.embeddings, master: model.params.base, mask: nil)
                    }
                    if type != .f32 { KDLog.info("note: \(scheme) values are exact in f32 only; \(type) rounds them") }
                }
                if qat!.activations != "none" { KDLog.info("note: int8 activation quantization is a runtime setting; the file holds weights only") }
            }
            let tableType = embeddingQuant.flatMap { exportTypes[$0] } ?? (qat != nil && !(qat!.embeddings) ? .f32 : type)
            let withScales = trained != nil && trained == type ? scales : nil
            if format == "gguf" {
                try exportGGUF(model, type: type, tableType: tableType, scales: withScales)
            } else if let withScales {
                model.writeFakeQuantized(scales: withScales, master: model.params.base, mask: nil)
                try exportSafetensors(model, type: type, applyQuant: false)
            } else {
                try exportSafetensors(model, type: type, applyQuant: scheme?.ggmlType != nil && trained == type || quant != nil)
            }
        } catch let e as ValidationError { throw e } catch { throw fail(error) }
    }

    /// The tokenizer.* metadata of the GGUF given, or of the checkpoint's first GGUF teacher.
    func tokenizerMetadata() throws -> [(String, GGUFValue)] {
        var source = tokenizerFrom
        if source == nil, let (c, _) = try? checkpointConfig(dir: checkpoint) {
            source = (c.teacher?.sources.map(\.path) ?? []).first { $0.hasSuffix(".gguf") } ?? (c.student.teacher.hasSuffix(".gguf") ? c.student.teacher : nil)
        }
        guard let source else {
            KDLog.info("note: no GGUF teacher to copy a tokenizer from (--tokenizer-from); the file has none, so llama.cpp cannot run it as is")
            return []
        }
        let f = try GGUFFile(path: source)
        return f.keys.filter { $0.hasPrefix("tokenizer.") }.map { ($0, f.metadata[$0]!) }
    }

    func exportGGUF(_ model: Transformer, type: GGMLType, tableType: GGMLType, scales: QATScales?) throws {
        let start = monotonicSeconds()
        let meta = try tokenizerMetadata()
        if let n = meta.first(where: { $0.0 == "tokenizer.ggml.tokens" })?.1.array?.count, n != model.config.vocabSize {
            throw KDError.invalidInput(what: "tokenizer for the export", expected: "\(model.config.vocabSize) tokens (the student's vocabulary)", found: "\(n)")
        }
        try model.exportGGUF(path: out, type: type, tableType: tableType, name: (checkpoint as NSString).lastPathComponent, extraMetadata: meta,
                             scales: scales)
        let size = (try? FileManager.default.attributesOfItem(atPath: out)[.size] as? Int) ?? 0
        KDLog.info(String(format: "exported %@ → %@ (GGUF, %@, embedding/head %@, %.1f MiB%@) in %.1f s", checkpoint, out, "\(type)", "\(tableType)", Double(size) / 1048576,
                          meta.isEmpty ? "" : ", tokenizer and chat template copied", monotonicSeconds() - start))
    }

    func exportSafetensors(_ model: Transformer, type: GGMLType, applyQuant: Bool) throws {
        if applyQuant, type != .f32 {
            // the weights as they come back from `type`
            for e in model.layout.entries where e.isMatrix {
                guard e.shape[1] % type.blockSize == 0 else {
                    throw KDError.invalidInput(what: "export as \(type)", expected: "rows that are multiples of \(type.blockSize)", found: "\(e.name) with rows of \(e.shape[1])")
                }
                var d = Data(count: type.byteCount(elements: e.count))
                d.withUnsafeMutableBytes { b in
                    quantize(type, src: model.params.base + e.offset, count: e.count, out: b.baseAddress!)
                    dequantize(type, src: b.baseAddress!, out: model.params.base + e.offset, count: e.count)
                }
            }
        }
        let fm = FileManager.default
        let tmp = out + ".tmp-\(getpid())"
        try? fm.removeItem(atPath: tmp)
        do {
            try saveHFModel(model, dir: tmp)
            let tj = (checkpoint as NSString).appendingPathComponent("tokenizer.json")
            if fm.fileExists(atPath: tj) { try fm.copyItem(atPath: tj, toPath: (tmp as NSString).appendingPathComponent("tokenizer.json")) }
            if fm.fileExists(atPath: out) { try fm.removeItem(atPath: out) }
            try fm.moveItem(atPath: tmp, toPath: out)
        } catch {
            try? fm.removeItem(atPath: tmp)
            throw error
        }
        KDLog.info("exported \(checkpoint) → \(out) (Hugging Face safetensors folder, F32\(applyQuant && type != .f32 ? " after the \(type) round trip" : ""))")
    }
}
