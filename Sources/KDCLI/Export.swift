// `distill export`: a checkpoint to GGUF (llama.cpp) or a Hugging Face folder, quantized as it trained.
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

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export a trained student (a checkpoint folder) as GGUF (llama.cpp, Ollama) or as a Hugging Face safetensors folder.")

    @Argument(help: "A checkpoint folder (or any Hugging Face folder).") var checkpoint: String
    @Option(help: "gguf or safetensors.") var format: ExportFormat
    @Option(help: "f32, f16, q8_0, q4_0, q4_1, q5_0, q5_1 or a k-quant q2_k … q6_k (GGUF; rows a k-quant's 256-blocks do not divide take llama.cpp's fallback type; default: the QAT scheme the student trained with, else f16). For safetensors the weights are stored F32, after the round trip through the type when one is given.") var quant: String?
    @Option(help: "Output file (gguf) or folder (safetensors); replaced only when complete.") var out: String
    @Option(help: "Type of the token embedding and LM head (default: what a QAT student trained them with — its qat.embedding_scheme, f32 when it kept them in full precision — else --quant).") var embeddingQuant: String?
    @Option(help: "A GGUF file whose tokenizer and chat template to copy (default: the checkpoint's GGUF teacher).") var tokenizerFrom: String?

    func validate() throws {
        for (flag, v) in [("--quant", quant), ("--embedding-quant", embeddingQuant)] {
            if let v, exportTypes[v] == nil { throw ValidationError("\(flag): expected one of \(exportTypeNames), found '\(v)'") }
        }
    }

    func run() throws {
        do {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: checkpoint, isDirectory: &isDir), isDir.boolValue else {
                throw KDError.invalidInput(what: "export", expected: "a checkpoint folder", found: FileManager.default.fileExists(atPath: checkpoint) ? "a file: \(checkpoint)" : "nothing at \(checkpoint)")
            }
            if FileManager.default.fileExists(atPath: (checkpoint as NSString).appendingPathComponent(CheckpointFile.checksums)) {
                _ = try CheckpointStore.verify(dir: checkpoint)
            }
            // the full-precision weights as stored, run with the RoPE style they trained with; QAT is applied below
            let (model, _) = try loadHFModel(dir: checkpoint, needsGrad: false, ropeStyle: try checkpointConfig(dir: checkpoint)?.config.model.ropeStyle)
            let qat = try checkpointQAT(dir: checkpoint)
            let scheme = qat.flatMap { FakeQuantScheme($0.scheme) }
            let trained = scheme?.ggmlType
            let typeName = quant ?? trained.map { "\($0)".lowercased() } ?? (format == .gguf ? "f16" : "f32")
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
                        model.writeFakeQuantized(scheme, tables: FakeQuantScheme(qat!.tableScheme), master: model.params.base, mask: nil)
                    }
                    if type != .f32 { KDLog.info("note: \(scheme) values are exact in f32 only; \(type) rounds them") }
                }
                if qat!.activations != .none { KDLog.info("note: int8 activation quantization is a runtime setting; the file holds weights only") }
            }
            let tableType = embeddingQuant.flatMap { exportTypes[$0] } ?? qat?.tableExportType(blocks: type) ?? type
            let withScales = trained != nil && trained == type ? scales : nil
            if format == .gguf {
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
                let type = type.forRows(of: e.shape[1])
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
            try saveHFModel(model, dir: tmp, hfLayout: true)
            let tj = (checkpoint as NSString).appendingPathComponent(CheckpointFile.tokenizer)
            if fm.fileExists(atPath: tj) { try fm.copyItem(atPath: tj, toPath: (tmp as NSString).appendingPathComponent(HFFolder.tokenizer)) }
            if fm.fileExists(atPath: out) { try fm.removeItem(atPath: out) }
            try fm.moveItem(atPath: tmp, toPath: out)
        } catch {
            try? fm.removeItem(atPath: tmp)
            throw error
        }
        KDLog.info("exported \(checkpoint) → \(out) (Hugging Face safetensors folder, F32\(applyQuant && type != .f32 ? " after the \(type) round trip" : ""))")
    }
}

/// `distill export --format`: what the student is written as.
enum ExportFormat: String, ExpressibleByArgument, CaseIterable {
    /// One file llama.cpp and Ollama load.
    case gguf
    /// A Hugging Face folder.
    case safetensors
}
