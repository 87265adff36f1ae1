// Text ↔ ids for the model commands: a model's own BPE tokenizer or bytes, and JSON output.
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
    func encode(_ s: String, special: Bool = false, addSpecial: Bool = true) -> [Int32] {
        bpe?.encode(s, special: special, addSpecial: addSpecial) ?? ByteTokenizer().encode(s)
    }
    func decode(_ ids: [Int32]) -> String { bpe?.decode(ids) ?? ByteTokenizer().decode(ids) }
    /// `ids`, or when there are none the tokenizer's BOS alone (an unconditioned start); without a BOS, one line naming `what`.
    func orBOS(_ ids: [Int32], what: String) throws -> [Int32] {
        if !ids.isEmpty { return ids }
        guard let bos = bpe?.bos else {
            throw KDError.invalidInput(what: what, expected: "at least one token, or a tokenizer with a BOS token to start from", found: "no tokens")
        }
        return [bos]
    }

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
