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
    @Option(help: "f32, f16, q8_0, q4_0, q4_1, q5_0, q5_1, a k-quant q2_k … q6_k, iq4_nl, mxfp4, or a llama.cpp preset q2_k, q3_k_s/m/l, q4_k_s/m, q5_k_s/m (each tensor in the type llama.cpp's quantizer picks for it) (GGUF; rows a k-quant's 256-blocks do not divide take llama.cpp's fallback type; default: the QAT scheme the student trained with, else f16). For safetensors the weights are stored F32, after the round trip through the type when one is given.") var quant: String?
    @Option(help: "Output file (gguf) or folder (safetensors); replaced only when complete.") var out: String
    @Option(help: "Type of the token embedding and LM head (default: what a QAT student trained them with — its qat.embedding_scheme, f32 when it kept them in full precision — else --quant).") var embeddingQuant: String?
    @Option(help: "A GGUF file whose tokenizer and chat template to copy (default: the checkpoint's GGUF teacher).") var tokenizerFrom: String?

    func validate() throws {
        for (flag, v) in [("--quant", quant), ("--embedding-quant", embeddingQuant)] {
            if let v, exportTypes[v] == nil, flag == "--embedding-quant" || QuantPreset(rawValue: v) == nil {
                throw ValidationError("\(flag): expected one of \(exportTypeNames)\(flag == "--quant" ? " or a llama.cpp preset (\(QuantPreset.allCases.map(\.rawValue).joined(separator: ", ")))" : ""), found '\(v)'")
            }
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
            // the full-precision weights as stored, run with the RoPE style they trained with and the context the run
            // declared (model.max_seq_len: the file says what the student is for, not the 4096 a reader caps an unknown
            // context at); QAT is applied below
            let run = try checkpointConfig(dir: checkpoint)?.config.model
            let (model, _) = try loadHFModel(dir: checkpoint, needsGrad: false, maxSeqLen: run?.maxSeqLen, ropeStyle: run?.ropeStyle)
            let qat = try checkpointQAT(dir: checkpoint)
            let scheme = qat.flatMap { FakeQuantScheme($0.scheme) }
            // what the student trained with, tensor by tensor (nil: full precision, or a per-channel scheme)
            let trainedPlan = scheme?.ggmlType != nil ? model.quantPlan(qat!) : nil
            // --quant names a type for every matrix, or one of llama.cpp's presets
            var requestedPlan: QuantPlan?, uniform: GGMLType?
            // --quant naming the type a student trained every block in (no preset) is its default
            let quant = qat?.preset == nil && quant != nil && exportTypes[quant!] == scheme?.ggmlType && trainedPlan != nil ? nil : quant
            if let quant, let preset = QuantPreset(rawValue: quant) {
                var q = QATConfig()
                q.preset = preset; q.scheme = preset.base; q.embeddings = true
                requestedPlan = model.quantPlan(q)
            } else if let quant {
                guard let t = exportTypes[quant] else { throw ValidationError("--quant: unknown type \(quant)") }
                uniform = t
            } else if trainedPlan == nil {
                uniform = format == .gguf ? .f16 : .f32
            }
            // learned or frozen scales: the weights are quantized with those, not with the absmax of each block
            let scales = try qat.flatMap { try loadQATScales(dir: checkpoint, model: model, qat: $0) }
            // an importance matrix: the IQ4_NL, Q4_0 and Q5_0 tensors are quantized weighed by it, as they trained
            let importance = try qat.flatMap { try loadQATImportance(dir: checkpoint, model: model, qat: $0) }
            if let scheme {
                if scheme.ggmlType == nil {
                    // per-channel schemes have no GGUF type: store the values it trained with
                    if let scales {
                        model.writeFakeQuantized(scales: scales, master: model.params.base, mask: nil)
                    } else {
                        model.writeFakeQuantized(model.quantPlan(qat!), master: model.params.base, mask: nil, importance: importance)
                    }
                    if let uniform, uniform != .f32 { KDLog.info("note: \(scheme) values are exact in f32 only; \(uniform) rounds them") }
                } else if quant != nil {
                    KDLog.info("note: the student trained with \(trainedPlan!.summary(model.layout)); --quant \(quant!) quantizes its full-precision weights instead (not what it trained with: a 4-bit QAT student written in another 4-bit grid measured 0.24–0.32 nats worse, in MXFP4 0.47–1.12)")
                }
                if qat!.activations != .none { KDLog.info("note: int8 activation quantization is a runtime setting; the file holds weights only") }
            }
            let layout = model.layout
            let plan = requestedPlan ?? (uniform == nil ? trainedPlan : nil)
            let tableOverride = embeddingQuant.flatMap { exportTypes[$0] }
            let defaultTables = uniform.map { qat?.tableExportType(blocks: $0) ?? $0 }
            func typeOf(_ e: ParameterLayout.Entry) -> GGMLType {
                let table = e.offset == layout.embedding || e.offset == layout.lmHead
                if table, let t = tableOverride { return t.forRows(of: e.shape[1]) }
                if let plan { return plan.ggmlType(e) }
                return (table ? defaultTables! : uniform!).forRows(of: e.shape[1])
            }
            let withScales = quant == nil && trainedPlan != nil ? scales : nil
            if format == .gguf {
                try exportGGUF(model, typeOf: typeOf, scales: withScales, importance: importance)
            } else if let withScales {
                model.writeFakeQuantized(scales: withScales, master: model.params.base, mask: nil)
                try exportSafetensors(model, typeOf: nil)
            } else {
                try exportSafetensors(model, typeOf: quant != nil || trainedPlan != nil ? typeOf : nil, importance: importance)
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

    func exportGGUF(_ model: Transformer, typeOf: (ParameterLayout.Entry) -> GGMLType, scales: QATScales?, importance: QATImportance?) throws {
        let start = monotonicSeconds()
        let meta = try tokenizerMetadata()
        if let n = meta.first(where: { $0.0 == "tokenizer.ggml.tokens" })?.1.array?.count, n != model.config.vocabSize {
            throw KDError.invalidInput(what: "tokenizer for the export", expected: "\(model.config.vocabSize) tokens (the student's vocabulary)", found: "\(n)")
        }
        try model.exportGGUF(path: out, typeOf: typeOf, name: (checkpoint as NSString).lastPathComponent, extraMetadata: meta, scales: scales,
                             importance: importance)
        let size = (try? FileManager.default.attributesOfItem(atPath: out)[.size] as? Int) ?? 0
        let layout = model.layout, blocks = layout.entries.filter { $0.isMatrix && $0.offset != layout.embedding && $0.offset != layout.lmHead }
        var byType: [GGMLType: Int] = [:]
        for e in blocks { byType[typeOf(e), default: 0] += e.count }
        let blockTypes = byType.keys.sorted { byType[$0]! > byType[$1]! }.map { "\($0)" }.joined(separator: "+")
        let tableType = typeOf(layout.entries.first { $0.offset == layout.embedding }!)
        KDLog.info(String(format: "exported %@ → %@ (GGUF, %@, embedding/head %@, %.1f MiB%@) in %.1f s", checkpoint, out, blockTypes, "\(tableType)", Double(size) / 1048576,
                          meta.isEmpty ? "" : ", tokenizer and chat template copied", monotonicSeconds() - start))
    }

    func exportSafetensors(_ model: Transformer, typeOf: ((ParameterLayout.Entry) -> GGMLType)?, importance: QATImportance? = nil) throws {
        if let typeOf {
            // the weights as they come back from their type
            for e in model.layout.entries where e.isMatrix && typeOf(e) != .f32 {
                let type = typeOf(e)
                guard e.shape[1] % type.blockSize == 0 else {
                    throw KDError.invalidInput(what: "export as \(type)", expected: "rows that are multiples of \(type.blockSize)", found: "\(e.name) with rows of \(e.shape[1])")
                }
                var d = Data(count: type.byteCount(elements: e.count))
                d.withUnsafeMutableBytes { b in
                    quantize(type, src: model.params.base + e.offset, count: e.count, out: b.baseAddress!,
                             importance: importance?.row(forOffset: e.offset))
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
        KDLog.info("exported \(checkpoint) → \(out) (Hugging Face safetensors folder, F32\(typeOf != nil ? " after the round trip through its GGUF types" : ""))")
    }
}

/// `distill export --format`: what the student is written as.
enum ExportFormat: String, ExpressibleByArgument, CaseIterable {
    /// One file llama.cpp and Ollama load.
    case gguf
    /// A Hugging Face folder.
    case safetensors
}
