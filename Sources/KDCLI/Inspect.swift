// `distill inspect`: what a model file or checkpoint holds (shape, tensors, tokenizer, checkpoint state).
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
                if FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent(CheckpointFile.state)) {
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
        do {
            let m = try ggufModelConfig(f)
            print("  model  \(m.modelSummary)")
        } catch {
            print("  model  not runnable by distill: \(error)")
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
