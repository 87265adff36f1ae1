// `distill synthesize`: a text corpus drawn from a model (a teacher), many sequences decoded at once through the batch
// KV cache, written as JSONL documents for `distill prepare`. Text in the teacher's own distribution, for students
// to heal on where no corpus covers what the teacher knows.
import ArgumentParser
import Foundation
import KDCheckpoint
import KDConfig
import KDCore
import KDFormats
import KDModel
import KDTrain
import KDOps

struct Synthesize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sample a text corpus from a model (many sequences decoded at once) as JSONL documents for `distill prepare`.",
        discussion: """
        Every sequence starts from the prompt (control tokens written in it are parsed; default: the tokenizer's BOS; \
        the prompt itself is not written) and runs --length tokens; a control token drawn (end of text, end of turn) \
        ends a document and the next one starts after it. Sequence i's token t is drawn with counter (i, t) of \
        --seed: the same arguments give the same corpus. Documents shorter than --min-tokens are dropped. Under mpirun \
        each rank draws its share of the batches (batch i on rank i mod ranks) and rank 0 writes the file, whole at \
        the end (no partial file on failure).
        """)

    @Option(help: "GGUF file, Hugging Face folder or checkpoint to sample from.") var model: String
    @Option(help: "The .jsonl file to write ({\"text\": …} per document).") var output: String
    @Option(help: "Tokens to draw in all (rounded up to whole batches).") var tokens: Int
    @Option(help: "Tokens drawn per sequence after its prompt.") var length = 512
    @Option(help: "Sequences decoded at once.") var batch = 32
    @Option(help: "Prompt of every sequence (control tokens such as <|endoftext|> parsed); default the tokenizer's BOS.") var prompt = ""
    @Option(help: "Sampling temperature (> 0).") var temperature: Float = 1
    @Option(help: "Keep the k most likely tokens (0 = all).") var topK = 0
    @Option(help: "Keep the most likely tokens up to this probability mass (1 = all).") var topP: Float = 1
    @Option(help: "Documents shorter than this many tokens are dropped.") var minTokens = 16
    @Option(help: "Seed of the sampling stream.") var seed: UInt64 = 0
    @Option(help: "Matmul precision, as train.precision: f32 or bf16 (f32 after a warning on a CPU without AVX512-BF16).")
    var precision = "f32"
    @Option(help: "Compute threads (0 = all cores).") var threads = 0

    func validate() throws {
        if tokens < 1 { throw ValidationError("--tokens: expected >= 1, found \(tokens)") }
        if length < 1 { throw ValidationError("--length: expected >= 1, found \(length)") }
        if batch < 1 { throw ValidationError("--batch: expected >= 1, found \(batch)") }
        if !(temperature > 0) { throw ValidationError("--temperature: expected > 0, found \(temperature)") }
        if topK < 0 { throw ValidationError("--top-k: expected >= 0, found \(topK)") }
        if !(topP > 0 && topP <= 1) { throw ValidationError("--top-p: expected a number in (0, 1], found \(topP)") }
        if minTokens < 1 { throw ValidationError("--min-tokens: expected >= 1, found \(minTokens)") }
        if Precision(rawValue: precision) == nil { throw ValidationError("--precision: expected \(Precision.choices), found '\(precision)'") }
        if !output.hasSuffix(".jsonl") { throw ValidationError("--output: expected a path ending in .jsonl, found '\(output)'") }
    }

    func run() throws {
        try Job.run(threads: threads, precision: Precision(rawValue: precision)!) { comm in
            // an output folder that cannot take the file fails now, not after the sampling
            let folder = (output as NSString).deletingLastPathComponent
            guard FileManager.default.isWritableFile(atPath: folder.isEmpty ? "." : folder) else {
                throw KDError.unwritable(path: output, reason: "its folder does not exist or is not writable")
            }
            let loaded = try openModel(path: model)
            let codec = try TextCodec(loaded)
            let m = loaded.model, v = m.config.vocabSize
            let start = try codec.orBOS(prompt.isEmpty ? [] : codec.encode(prompt, special: true, addSpecial: false), what: "--prompt")
            guard start.count + length <= m.config.maxSeqLen else {
                throw KDError.invalidInput(what: "--length", expected: "prompt + length ≤ the model's \(m.config.maxSeqLen) positions",
                                           found: "\(start.count) + \(length)")
            }
            let ends = Set<Int32>(codec.bpe?.specialIDs ?? [])
            let rng = CounterRNG(seed: seed, purpose: .sampling)
            let sampler = Sampler(temperature: temperature, topK: topK, topP: topP)
            let scratch = Slab(count: v)
            // batch bi runs on rank bi mod ranks; its documents are the same whichever rank draws them
            let batches = (tokens + batch * length - 1) / (batch * length)
            let mine = Array(stride(from: comm.rank, to: batches, by: comm.worldSize))
            var documents: [[String]] = [], kept = 0
            let t0 = Date()
            for (n, bi) in mine.enumerated() {
                let cache = BatchKVCache(config: m.config, b: batch, capacity: start.count + length)
                var seqs = [[Int32]](repeating: [], count: batch)
                var feed = (0..<batch).flatMap { _ in start }, tq = start.count
                for t in 0..<length {
                    var logits = feed.withUnsafeBufferPointer { m.decodeBatch(tokens: $0.baseAddress!, tq: tq, cache: cache) }
                    for i in 0..<batch {
                        let u = rng.uniform(UInt64(bi * batch + i), UInt64(t))
                        seqs[i].append(logits.withUnsafeMutableBufferPointer { sampler.sample($0.baseAddress! + i * v, v, u: u, scratch: scratch.base) })
                    }
                    feed = seqs.map { $0.last! }
                    tq = 1
                }
                // a control token ends a document, the sequence's end its last one
                var docs: [String] = []
                func keep(_ doc: ArraySlice<Int32>) {
                    guard doc.count >= minTokens else { return }
                    docs.append(codec.decode(Array(doc)))
                    kept += doc.count
                }
                for s in seqs {
                    var from = 0
                    for (j, tok) in s.enumerated() where ends.contains(tok) {
                        keep(s[from..<j])
                        from = j + 1
                    }
                    keep(s[from...])
                }
                documents.append(docs)
                let drawn = (n + 1) * batch * length
                KDLog.info(String(format: "synthesize: batch %d of %d, %d tokens drawn here (%.0f tokens/s), %d documents kept (%d tokens)",
                                  bi + 1, batches, drawn, Double(drawn) / Date().timeIntervalSince(t0), documents.joined().count, kept))
            }
            // every rank's batches to rank 0, which writes them in batch order
            var total = [Double(kept)]
            try comm.allReduceSum(&total)
            let parts = try comm.allGatherV(Array(try JSONEncoder().encode(documents)))
            guard comm.rank == 0 else { return }
            let byRank = try parts.map { try JSONDecoder().decode([[String]].self, from: Data($0)) }
            let ordered = (0..<batches).flatMap { byRank[$0 % comm.worldSize][$0 / comm.worldSize] }
            guard !ordered.isEmpty else {
                throw KDError.invalidInput(what: "synthesized text", expected: "at least one document of \(minTokens) tokens or more",
                                           found: "none in \(batches * batch * length) tokens drawn")
            }
            try atomicWrite(path: output) { fh in
                for d in ordered {
                    var line = try JSONSerialization.data(withJSONObject: ["text": d], options: [.withoutEscapingSlashes])
                    line.append(0x0a)
                    fh.write(line)
                }
            }
            KDLog.info("synthesize: wrote \(ordered.count) documents (\(Int(total[0])) tokens) to \(output)"
                       + (comm.worldSize > 1 ? ", drawn on \(comm.worldSize) ranks" : ""))
        }
    }
}
