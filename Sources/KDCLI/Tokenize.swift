// `distill tokenize`: text to ids and back with a model's tokenizer (checked against Hugging Face tokenizers and llama.cpp).
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
