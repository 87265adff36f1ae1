// `distill eval`: held-out cross-entropy and perplexity of a model, with its teacher beside it when given.
import ArgumentParser
import Foundation
import KDCheckpoint
import KDConfig
import KDCore
import KDData
import KDFormats
import KDLoss
import KDModel
import KDOps
import KDQuant
import KDTrain

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "NLL and perplexity of a model on text or a prepared split; with --teacher, KL(teacher‖model) and top-1 agreement.")
    @Option(help: "GGUF file or Hugging Face folder.") var model: String
    @Option(help: "A text file: tokenized whole, cut into non-overlapping windows of --context tokens.") var text: String?
    @Option(help: "A folder written by distill prepare.") var data: String?
    @Option(help: "Split of --data: train or validation.") var split = "validation"
    @Option(help: "Tokens per window; every next-token prediction inside a window counts.") var context = 256
    @Option(help: "Evaluate at most this many windows (0 = all).") var maxWindows = 0
    @Option(help: "Windows per forward pass (consecutive windows of the same length; each is still read on its own).")
    var batch = 8
    @Option(help: "A teacher (GGUF or HF folder) to compare with.") var teacher: String?
    @Option(help: "Compute threads (0 = all cores).") var threads = 0
    @Option(help: "Matmul precision, as train.precision: f32 or bf16 (f32 after a warning on a CPU without AVX512-BF16).")
    var precision = "f32"
    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "Also append the result as one JSON line, with --label, to this file (distill report shows a run's evaluation.jsonl).")
    var appendTo: String?
    @Option(help: "The model's name in --append-to lines.") var label: String?

    func validate() throws {
        if appendTo != nil, label == nil { throw ValidationError("--append-to needs --label NAME") }
        if (text == nil) == (data == nil) { throw ValidationError("give exactly one of --text FILE or --data DIR") }
        if context < 2 { throw ValidationError("--context: expected >= 2, found \(context)") }
        if batch < 1 { throw ValidationError("--batch: expected >= 1, found \(batch)") }
        if Precision(rawValue: precision) == nil { throw ValidationError("--precision: expected \(Precision.choices), found '\(precision)'") }
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
            var ids: [Int32], mask: [UInt8], windowBOS: Int32? = nil
            if let text {
                // a checkpoint without tokenizer.json (a SentencePiece student) reads text with its teacher's tokenizer
                let codec = try TextCodec(loaded.tokenizer == nil ? teacherModel ?? loaded : loaded)
                guard let data = FileManager.default.contents(atPath: text) else { throw KDError.fileNotFound(path: text) }
                guard let s = String(data: data, encoding: .utf8) else {
                    throw KDError.invalidInput(what: text, expected: "UTF-8 text", found: "invalid bytes")
                }
                // the text's tokens without BOS; a model that expects BOS gets one at the start of every window
                ids = codec.encode(s, addSpecial: false)
                if let b = codec.bpe, b.addBOS, let bos = b.bos { windowBOS = bos }
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
                // shards of a model that expects BOS first (prepare.json says which): every window starts with it
                if let d = FileManager.default.contents(atPath: (data! as NSString).appendingPathComponent("prepare.json")) {
                    windowBOS = try? JSONDecoder().decode(PrepareSummary.self, from: d).bos
                }
            }
            let (kernel, warning) = try BF16.resolve(bf16: Precision(rawValue: precision)! == .bf16, environment: ProcessInfo.processInfo.environment,
                                                     setting: "eval --precision")
            if let warning { KDLog.error(warning) }
            let r = BF16.$kernel.withValue(kernel) {
                evaluate(loaded.model, teacher: teacherModel?.model, ids: ids, mask: mask, context: context, maxWindows: maxWindows,
                         bos: windowBOS, batch: batch)
            }
            guard r.predicted > 0 else {
                throw KDError.invalidInput(what: "eval input", expected: "at least 2 tokens", found: "\(ids.count)")
            }
            var obj: [String: Any] = ["tokens": ids.count, "predicted": r.predicted, "mean_nll": r.nll / Double(r.predicted),
                                      "perplexity": Foundation.exp(r.nll / Double(r.predicted)),
                                      "tokens_per_s": Double(r.evaluated) / r.seconds, "size_bytes": weightBytesOnDisk(model),
                                      "precision": BF16.label(kernel),
                                      "int8_products": BF16.$kernel.withValue(kernel) { QuantizedMatrix.int8Label != nil }]
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
    return files.filter { $0.hasSuffix(".safetensors") && $0 != CheckpointFile.optimizer && $0 != CheckpointFile.weights(CheckpointFile.emaTeacher) }
        .reduce(0) { $0 + size((path as NSString).appendingPathComponent($1)) }
}

/// Non-overlapping windows of `context` tokens, each from position 0; position i predicts i + 1 where mask[i + 1] = 1.
/// With `bos`, every window is BOS followed by the next context − 1 tokens, and BOS predicts the first of them (so
/// every token of the text is predicted once, each window read as a document). Up to `batch` consecutive windows of
/// the same length go through one forward (as a distillation step feeds its teacher): every window is still read on
/// its own, each row's loss is its own.
func evaluate(_ model: Transformer, teacher: Transformer?, ids: [Int32], mask: [UInt8], context: Int, maxWindows: Int,
              bos: Int32? = nil, batch: Int = 1) -> EvalResult {
    var r = EvalResult()
    let lead = bos == nil ? 0 : 1
    // the windows: (first token, length)
    var windows: [(start: Int, body: Int)] = []
    var start = 0
    while start + 1 - lead < ids.count, maxWindows == 0 || windows.count < maxWindows {
        let body = min(context - lead, ids.count - start)
        windows.append((start, body))
        start += body
    }
    var w = 0
    while w < windows.count {
        var b = 1
        while b < batch, w + b < windows.count, windows[w + b].body == windows[w].body { b += 1 }
        let t = windows[w].body + lead
        var inp: [Int32] = [], tgt: [Int32] = []
        for (start, body) in windows[w..<(w + b)] {
            inp += (bos.map { [$0] } ?? []) + Array(ids[start..<(start + body)])
            var rows = [Int32](repeating: -1, count: t)
            for i in 0..<(t - 1) where mask[start + i + 1 - lead] != 0 { rows[i] = ids[start + i + 1 - lead] }
            tgt += rows
        }
        let t0 = monotonicSeconds()
        inp.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: b, t: t) }
        let ls = tgt.withUnsafeBufferPointer { model.loss(targets: $0.baseAddress!) }
        r.seconds += monotonicSeconds() - t0
        r.evaluated += b * t
        r.nll += ls.sum
        r.predicted += ls.count
        if let teacher {
            // the teacher's NLL from its own head; KL(teacher‖model) and top-1 agreement from the fused distillation
            // head (the trainer's evaluator), chunked over rows: no [t × vocabulary] logits
            let t1 = monotonicSeconds()
            inp.withUnsafeBufferPointer { teacher.forward(tokens: $0.baseAddress!, b: b, t: t) }
            r.teacherNLL += tgt.withUnsafeBufferPointer { teacher.loss(targets: $0.baseAddress!) }.sum
            r.teacherSeconds += monotonicSeconds() - t1  // forward and LM head, as the student's forward and loss
            let target = DistillTarget(teacherHead: teacher.lmHeadWeight, teacherHidden: teacher.finalHidden, divergence: .forwardKL,
                                       temperature: 1, kdRatio: 1, t2Scale: false)
            let d = tgt.withUnsafeBufferPointer { model.distillLoss(targets: $0.baseAddress!, target: target) }
            r.kl += d.kdSum
            r.agree += d.agree
        }
        w += b
    }
    return r
}
