// `distill prepare`: text or JSONL to token shards with the teacher's tokenizer.
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

struct Prepare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Text files, folders and JSONL (text, or prompt + response) → train/validation token shards.")
    @Argument(help: "Text files, folders (read recursively) and .jsonl files.") var inputs: [String]
    @Option(help: "Output folder (train.bin, validation.bin, prepare.json).") var output: String
    @Option(help: "'bytes', or a GGUF file / Hugging Face folder whose tokenizer to use.") var tokenizer = "bytes"
    @Option(help: "Fraction of documents held out for validation.") var valFraction = 0.05
    @Option(help: "A line equal to this ends a document in text files (e.g. % for fortune files).") var separator: String?
    @Option(parsing: .singleValue, help: "Skip files ending so inside folders (repeatable).") var excludeSuffix: [String] = [".dat"]
    @Flag(help: "Wrap prompts of prompt/response pairs in the model's chat template (Gemma's turns, else ChatML).") var chat = false
    @Option(help: "Seed of the train/validation split.") var seed: UInt64 = 1234

    func validate() throws {
        if inputs.isEmpty { throw ValidationError("give at least one input file or folder") }
        if !(valFraction >= 0 && valFraction < 1) { throw ValidationError("--val-fraction: expected a number in [0, 1), found \(valFraction)") }
    }

    func run() throws {
        do {
            var tk: ShardTokenizer
            if tokenizer == "bytes" {
                tk = .bytes
            } else {
                let b = try loadTokenizer(tokenizer)
                let chat = self.chat
                // BOS (when the model wants one) goes before each whole document, never before a 4 MiB piece of one
                tk = ShardTokenizer(vocabSize: b.vocabSize, hash: b.hash, eos: b.eos, bos: b.addBOS ? b.bos : nil,
                                    encode: { b.encode($0, addSpecial: false) }, encodePair: { p, r in
                    let prompt = chat ? b.encode(b.chatPrompt(user: p), special: true, addSpecial: false) : b.encode(p, addSpecial: false)
                    let resp = b.encode(r, addSpecial: false)
                    return (prompt + resp, [UInt8](repeating: 0, count: prompt.count) + [UInt8](repeating: 1, count: resp.count))
                })
                tk.source = URL(fileURLWithPath: tokenizer).standardizedFileURL.path
            }
            var o = PrepareOptions(inputs: inputs, output: output)
            o.valFraction = valFraction
            o.separator = separator
            o.excludeSuffixes = excludeSuffix
            o.seed = seed
            let start = monotonicSeconds()
            let tty = isatty(2) != 0
            // SIGINT/SIGTERM: stop after the piece being tokenized, remove the partial output, exit non-zero
            StopSignal.install(grace: 60)
            let s = try prepareCorpus(o, tokenizer: tk, progress: { done, total in
                guard tty else { return }
                let pct = total > 0 ? 100 * done / total : 100, bar = String(repeating: "#", count: pct / 4).padding(toLength: 25, withPad: " ", startingAt: 0)
                FileHandle.standardError.write(Data(String(format: "\rprepare [%@] %3d%% %.1f MB/s", bar, pct, Double(done) / 1e6 / max(monotonicSeconds() - start, 1e-3)).utf8))
            }, stop: { StopSignal.requested })
            if tty { FileHandle.standardError.write(Data("\n".utf8)) }
            print("prepare: \(s.files) files, \(s.documents) documents, \(s.bytesRead) bytes → \(s.trainTokens) train / \(s.validationTokens) validation tokens in \(output)"
                  + String(format: " (%.1f s)", monotonicSeconds() - start))
        } catch { throw fail(error) }
    }
}
