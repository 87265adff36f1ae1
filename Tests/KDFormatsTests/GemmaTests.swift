// The real Gemma-3-270M (Q4_K_M, fetched by `Launch/fetch_teacher.sh gemma3`) against llama.cpp: tokenization of varied
// strings, the NLL of a window of text and greedy continuations, all equal to what llama.cpp gave on the file's F32 copy
// (Fixtures/gemma3-270m-llamacpp.json, made by Launch/lab/make_llamacpp_reference.sh; the debug build checks one window
// and 12 tokens per prompt of what the reference holds, to stay quick).
import Foundation
import KDConfig
import KDCore
import KDFormats
import KDModel
import KDTestSupport
import Testing

let gemma = repoRoot.appendingPathComponent("Checkpoints/teachers/gemma-3-270m-q4_k_m.gguf").path

struct LlamaCppReference: Decodable {
    struct Window: Decodable { let predicted: Int; let nll_sum: Double }
    struct Greedy: Decodable { let prompt: String; let prompt_ids: [Int32]; let ids: [Int32] }
    struct Chat: Decodable { let text: String; let ids: [Int32] }
    let strings: [String], tokens: [[Int32]], context: Int, window_nll: [Window], greedy: [Greedy], text: String, chat: Chat
}

func gemmaReference() throws -> LlamaCppReference {
    guard FileManager.default.fileExists(atPath: gemma) else {
        throw PythonError(message: "Gemma missing: run Launch/fetch_teacher.sh gemma3 (Launch/test.sh does) to fetch \(gemma)")
    }
    let url = repoRoot.appendingPathComponent("Tests/KDFormatsTests/Fixtures/gemma3-270m-llamacpp.json")
    return try JSONDecoder().decode(LlamaCppReference.self, from: Data(contentsOf: url))
}

@Test func gemmaConfigComesFromItsMetadata() throws {
    _ = try gemmaReference()
    let m = try ggufModelConfig(GGUFFile(path: gemma))
    #expect(m.family == .gemma3 && m.layers == 18 && m.dim == 640 && m.heads == 4 && m.kvHeads == 1 && m.headSize == 256)
    #expect(m.ffnDim == 2048 && m.vocabSize == 262_144 && m.tiedEmbeddings && m.ropeStyle == .half)
    #expect(m.slidingWindow == 512 && m.slidingPattern == 6 && m.ropeTheta == 1e6 && m.ropeThetaLocal == 10000)
    #expect((0..<18).filter { !m.isSliding($0) } == [5, 11, 17])
}

@Test func gemmaTokenizesAsLlamaCppDoes() throws {
    let ref = try gemmaReference()
    let tok = try BPETokenizer(gguf: GGUFFile(path: gemma))
    #expect(tok.sentencePiece != nil && tok.addBOS && tok.bos == 2)
    #expect(ref.strings.count >= 30)
    // a chat turn in Gemma's template, control tokens parsed, as llama.cpp tokenizes it; its reply ends at <end_of_turn>
    #expect(tok.chatPrompt(user: "What is the capital of France?") == ref.chat.text)
    #expect(tok.encode(ref.chat.text, special: true) == ref.chat.ids)
    #expect(tok.turnEnds.contains(ref.chat.ids[ref.chat.ids.count - 5]))  // … <end_of_turn> \n <start_of_turn> model \n
    for (s, expected) in zip(ref.strings, ref.tokens) {
        let ids = tok.encode(s)
        #expect(ids == expected, "\(s.debugDescription)")
        #expect(tok.decode(Array(ids.dropFirst())) == s, "round trip of \(s.debugDescription)")
    }
}

@Test func gemmaScoresTextAndContinuesPromptsAsLlamaCppDoes() throws {
    let ref = try gemmaReference()
    let f = try GGUFFile(path: gemma)
    let tok = try BPETokenizer(gguf: f)
    let (model, _) = try loadGGUFModel(path: gemma, maxSeqLen: ref.context)
    // first window: BOS and the text's first context − 1 tokens
    let text = try String(contentsOf: repoRoot.appendingPathComponent("Tests/KDTrainTests/Fixtures/\(ref.text)"), encoding: .utf8)
    let ids = [tok.bos!] + tok.encode(text, addSpecial: false).prefix(ref.context - 1)
    let targets = Array(ids.dropFirst()) + [-1]
    ids.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: 1, t: ids.count) }
    let ls = targets.withUnsafeBufferPointer { model.loss(targets: $0.baseAddress!) }
    let w = ref.window_nll[0]
    #expect(ls.count == w.predicted)
    #expect(abs(ls.mean - w.nll_sum / Double(w.predicted)) < 1e-3, "distill \(ls.mean), llama.cpp \(w.nll_sum / Double(w.predicted))")
    for g in ref.greedy {
        #expect(tok.encode(g.prompt) == g.prompt_ids)
        let out = model.generate(prompt: g.prompt_ids, maxNewTokens: 12, sampler: .greedy, rng: CounterRNG(seed: 0, purpose: .test))
        #expect(out == Array(g.ids.prefix(12)), "\(g.prompt)")
    }
}
