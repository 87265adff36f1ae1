// `distill generate`: text from a model (GGUF, Hugging Face folder or checkpoint) with KV-cache decoding.
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
    @Flag(help: "Wrap the prompt in the model's chat template: Gemma's turns when its vocabulary has them, else ChatML (SmolLM2-Instruct).") var chat = false
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
            let text = chat ? codec.bpe?.chatPrompt(user: prompt) ?? BPETokenizer.chatML(user: prompt) : prompt
            let ids = try codec.orBOS(codec.encode(text, special: chat), what: "prompt")
            let m = loaded.model
            guard ids.count < m.config.maxSeqLen else {
                throw KDError.invalidInput(what: "prompt", expected: "fewer than \(m.config.maxSeqLen) tokens", found: "\(ids.count)")
            }
            var stop = Set<Int32>()
            if let e = codec.bpe?.eos { stop.insert(e) }
            stop.formUnion(codec.bpe?.turnEnds ?? [])
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
                    fflush(nil)
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
