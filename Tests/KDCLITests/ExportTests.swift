// distill export against independent readers: the GGUF through gguf-py (metadata, shapes, types, every tensor's
// bytes equal to gguf-py quantizing the checkpoint itself), the safetensors folder through the safetensors package;
// a QAT student's NLL from its checkpoint (fake quantization on) and from its exported GGUF agree to 1e-5; bad
// requests fail with one line and leave no file; a student cut from the exported (quantized) teacher holds exactly
// its dequantized blocks.
import Foundation
import KDCheckpoint
import KDConfig
import KDFormats
import KDModel
import KDQuant
import KDTestSupport
import Testing

let cliScripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts")

@Suite(.serialized) struct ExportRuns {
    func distill(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try runProcess(try distillBinary(), args, in: repoRoot)
    }

    /// Mean NLL of `model` (checkpoint folder or GGUF) on the fortunes fixture, through `distill eval`.
    func nll(_ model: String, windows: Int = 40) throws -> Double {
        let text = repoRoot.appendingPathComponent("Tests/KDTrainTests/Fixtures/fortunes-sample.txt").path
        let r = try distill(["eval", "--model", model, "--text", text, "--context", "64", "--max-windows", "\(windows)", "--json", "--threads", "1"])
        #expect(r.status == 0, "\(r.err)")
        return (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any])["mean_nll"] as! Double
    }

    /// A 2-step QAT run of the tiny config (ffn 192: rows in blocks of 32; `dim`/`ffn` widen it) in `dir`; returns its
    /// last checkpoint and the run's log.
    @discardableResult
    func trainQAT(_ dir: URL, scheme: String, extra: String = "", dim: Int = 64, ffn: Int = 192) throws -> (checkpoint: URL, log: String) {
        let cfg = try tinyYAML(dir, "qat-\(scheme)", edits: [("steps: 10", "steps: 2"), ("dim: 64", "dim: \(dim)"), ("ffn_dim: 172", "ffn_dim: \(ffn)"),
                                                              ("checkpoint:", "qat:\n  scheme: \(scheme)\n\(extra)checkpoint:")])
        let r = try distill(["train", "--config", cfg, "--sample-tokens", "0"])
        #expect(r.status == 0, "\(r.err)")
        return (dir.appendingPathComponent("qat-\(scheme)/step_00000002"), r.out + r.err)
    }

    /// A 2-step run of the tiny config with `edits` in `dir`/`name`, exported to an F32 GGUF beside it and read back by
    /// gguf-py (check_gguf_export.py: metadata, and every tensor against the checkpoint); returns the checkpoint, the
    /// GGUF and the reader's report.
    func trainAndExportF32(_ dir: URL, _ name: String, edits: [(String, String)]) throws -> (checkpoint: URL, gguf: String, check: [String: Any]) {
        let cfg = try tinyYAML(dir, name, edits: [("steps: 10", "steps: 2")] + edits)
        #expect(try distill(["train", "--config", cfg, "--sample-tokens", "0"]).status == 0)
        let ckpt = dir.appendingPathComponent("\(name)/step_00000002")
        let gguf = dir.appendingPathComponent("\(name).gguf").path
        #expect(try distill(["export", ckpt.path, "--format", "gguf", "--quant", "f32", "--out", gguf]).status == 0)
        let check = try runPython(cliScripts.appendingPathComponent("check_gguf_export.py").path,
                                  [gguf, ckpt.appendingPathComponent("model.safetensors").path, "f32"])
        return (ckpt, gguf, try JSONSerialization.jsonObject(with: Data(check.utf8)) as! [String: Any])
    }

    @Test(arguments: ["q8_0", "q4_0", "mxfp4"])
    func qatStudentExportsToExactlyWhatItTrainedWith(scheme: String) throws {
        let dir = try temporaryDirectory("distill-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpt = try trainQAT(dir, scheme: scheme).checkpoint
        let gguf = dir.appendingPathComponent("student.gguf").path
        let e = try distill(["export", ckpt.path, "--format", "gguf", "--out", gguf])
        // the embedding/head stayed full precision in training (qat.embeddings false): F32 in the file too
        #expect(e.status == 0 && (e.out + e.err).contains("GGUF, \(scheme.uppercased()), embedding/head F32"), "\(e.out)\(e.err)")
        // gguf-py reads it, and quantizing the checkpoint's full-precision weights itself gives the same bytes
        let check = try runPython(cliScripts.appendingPathComponent("check_gguf_export.py").path,
                                  [gguf, ckpt.appendingPathComponent("model.safetensors").path, scheme, "f32"])
        let j = try JSONSerialization.jsonObject(with: Data(check.utf8)) as! [String: Any]
        let meta = j["metadata"] as! [String: Any]
        #expect(meta["general.architecture"] as? String == "llama" && meta["llama.block_count"] as? Int == 2
                && meta["llama.embedding_length"] as? Int == 64 && meta["llama.feed_forward_length"] as? Int == 192)
        #expect((j["bad"] as! [String]).isEmpty && (j["extra"] as! [String]).isEmpty, "\(check)")
        #expect(j["tensors"] as? Int == 2 * 9 + 2)
        // the NLL of the checkpoint (fake quantization on) and of the GGUF read back by our reader agree
        let (a, b) = (try nll(ckpt.path), try nll(gguf))
        #expect(abs(a - b) <= 1e-5, "checkpoint \(a) vs GGUF \(b)")
        // the same weights unquantized give another NLL: the checkpoint really ran quantized
        let f32 = dir.appendingPathComponent("f32.gguf").path
        #expect(try distill(["export", ckpt.path, "--format", "gguf", "--quant", "f32", "--out", f32]).status == 0)
        let unquantized = try nll(f32)
        #expect(abs(unquantized - a) > 20 * max(abs(a - b), 1e-7), "f32 \(unquantized), QAT \(a), GGUF \(b)")
    }

    @Test(arguments: ["q8_0", "q4_0"])
    func learnedScalesExportToExactlyWhatTheStudentTrainedWith(scheme: String) throws {
        let dir = try temporaryDirectory("distill-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpt = try trainQAT(dir, scheme: scheme, extra: "  scales: learned\n  embeddings: true\n").checkpoint
        #expect(FileManager.default.fileExists(atPath: ckpt.appendingPathComponent("qat_scales.safetensors").path))
        let gguf = dir.appendingPathComponent("student.gguf").path, hf = dir.appendingPathComponent("hf")
        #expect(try distill(["export", ckpt.path, "--format", "gguf", "--out", gguf]).status == 0)
        #expect(try distill(["export", ckpt.path, "--format", "safetensors", "--out", hf.path]).status == 0)
        // gguf-py decodes the GGUF to exactly the values the student computed with (exported as safetensors) …
        let st = hf.appendingPathComponent("model.safetensors").path
        let j = try JSONSerialization.jsonObject(with: Data(try runPython(cliScripts.appendingPathComponent("check_gguf_export.py").path,
                                                                          [gguf, st, scheme, scheme, "--dequant"]).utf8)) as! [String: Any]
        #expect((j["bad"] as! [String]).isEmpty, "\(j["bad"]!)")
        // … which are not what absmax quantization of the masters would give: the learned scales were used
        let absmax = try JSONSerialization.jsonObject(with: Data(try runPython(cliScripts.appendingPathComponent("check_gguf_export.py").path,
                                                                               [gguf, ckpt.appendingPathComponent("model.safetensors").path, scheme, scheme]).utf8)) as! [String: Any]
        #expect(!(absmax["bad"] as! [String]).isEmpty)
        // and the checkpoint (learned scales on) and the GGUF read back by our reader have the same NLL
        let (a, b) = (try nll(ckpt.path), try nll(gguf))
        #expect(abs(a - b) <= 1e-5, "checkpoint \(a) vs GGUF \(b)")
    }

    /// `qat.embedding_scheme`: blocks in Q4_0, the embedding and head in Q8_0 (llama.cpp's Q4_0 preset layout), in
    /// training and in the file: gguf-py finds each tensor's bytes equal to its own quantization of the checkpoint's
    /// masters in that tensor's type, and the checkpoint and the GGUF read the same NLL.
    @Test func aStudentTrainedWithItsTablesInAnotherFormatExportsThemInIt() throws {
        let dir = try temporaryDirectory("distill-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpt = try trainQAT(dir, scheme: "q4_0", extra: "  embeddings: true\n  embedding_scheme: q8_0\n").checkpoint
        let gguf = dir.appendingPathComponent("student.gguf").path
        let e = try distill(["export", ckpt.path, "--format", "gguf", "--out", gguf])
        #expect(e.status == 0 && (e.out + e.err).contains("GGUF, Q4_0, embedding/head Q8_0"), "\(e.out)\(e.err)")
        let check = try runPython(cliScripts.appendingPathComponent("check_gguf_export.py").path,
                                  [gguf, ckpt.appendingPathComponent("model.safetensors").path, "q4_0", "q8_0"])
        let j = try JSONSerialization.jsonObject(with: Data(check.utf8)) as! [String: Any]
        #expect((j["bad"] as! [String]).isEmpty && (j["extra"] as! [String]).isEmpty, "\(check)")
        let (a, b) = (try nll(ckpt.path), try nll(gguf))
        #expect(abs(a - b) <= 1e-5, "checkpoint \(a) vs GGUF \(b)")
        // the tables in Q4_0 instead read another NLL: the checkpoint really ran them in Q8_0
        let q4 = dir.appendingPathComponent("all-q4.gguf").path
        #expect(try distill(["export", ckpt.path, "--format", "gguf", "--embedding-quant", "q4_0", "--out", q4]).status == 0)
        let allQ4 = try nll(q4)
        #expect(abs(allQ4 - a) > 20 * max(abs(a - b), 1e-7), "tables Q4_0 \(allQ4), trained \(a), GGUF \(b)")
    }

    /// A k-quant student (qat.scheme q4_k, the tables too) on a model whose rows are 256 wide except the FFN's down
    /// projection (320): QAT trains the 256-wide matrices in Q4_K and the down projection in Q5_0, llama.cpp's
    /// fallback; the GGUF holds exactly those types, gguf-py reads every tensor back to the values the student
    /// computed with (the safetensors export after the round trip), and the checkpoint and the GGUF read one NLL.
    @Test func aKQuantStudentExportsToExactlyWhatItTrainedWithAndFallsBackAsLlamaCppDoes() throws {
        let dir = try temporaryDirectory("distill-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpt = try trainQAT(dir, scheme: "q4_k", extra: "  embeddings: true\n", dim: 256, ffn: 320).checkpoint
        let gguf = dir.appendingPathComponent("student.gguf").path, hf = dir.appendingPathComponent("hf")
        let e = try distill(["export", ckpt.path, "--format", "gguf", "--out", gguf])
        #expect(e.status == 0 && (e.out + e.err).contains("GGUF, Q4_K+Q5_0, embedding/head Q4_K"), "\(e.out)\(e.err)")
        #expect(try distill(["export", ckpt.path, "--format", "safetensors", "--out", hf.path]).status == 0)
        let check = try runPython(cliScripts.appendingPathComponent("check_gguf_export.py").path,
                                  [gguf, hf.appendingPathComponent("model.safetensors").path, "q4_k", "q4_k", "--dequant"])
        let j = try JSONSerialization.jsonObject(with: Data(check.utf8)) as! [String: Any]
        #expect((j["bad"] as! [String]).isEmpty && (j["extra"] as! [String]).isEmpty, "\(check)")
        let (a, b) = (try nll(ckpt.path), try nll(gguf))
        #expect(abs(a - b) <= 1e-5, "checkpoint \(a) vs GGUF \(b)")
        // the masters themselves are not what the file holds: the student really computed with quantized weights
        let masters = try JSONSerialization.jsonObject(with: Data(try runPython(cliScripts.appendingPathComponent("check_gguf_export.py").path,
            [gguf, ckpt.appendingPathComponent("model.safetensors").path, "q4_k", "q4_k", "--dequant"]).utf8)) as! [String: Any]
        #expect((masters["bad"] as! [String]).count == 2 * 7 + 1, "\(masters["bad"]!)")
    }

    /// An IQ4_NL or MXFP4 student (qat.scheme iq4_nl / mxfp4, the tables too): the GGUF holds that type for every
    /// matrix, gguf-py reads each back to the values the student computed with, the checkpoint and the GGUF read one
    /// NLL, and the masters are not those values.
    @Test(arguments: ["iq4_nl", "mxfp4"])
    func a4BitTableStudentExportsToExactlyWhatItTrainedWith(scheme: String) throws {
        let dir = try temporaryDirectory("distill-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpt = try trainQAT(dir, scheme: scheme, extra: "  embeddings: true\n").checkpoint
        let gguf = dir.appendingPathComponent("student.gguf").path, hf = dir.appendingPathComponent("hf")
        let e = try distill(["export", ckpt.path, "--format", "gguf", "--out", gguf])
        let label = scheme.uppercased()
        #expect(e.status == 0 && (e.out + e.err).contains("GGUF, \(label), embedding/head \(label)"), "\(e.out)\(e.err)")
        #expect(try distill(["export", ckpt.path, "--format", "safetensors", "--out", hf.path]).status == 0)
        let script = cliScripts.appendingPathComponent("check_gguf_export.py").path
        let check = try runPython(script, [gguf, hf.appendingPathComponent("model.safetensors").path, scheme, scheme, "--dequant"])
        let j = try JSONSerialization.jsonObject(with: Data(check.utf8)) as! [String: Any]
        #expect((j["bad"] as! [String]).isEmpty && (j["extra"] as! [String]).isEmpty, "\(check)")
        let (a, b) = (try nll(ckpt.path), try nll(gguf))
        #expect(abs(a - b) <= 1e-5, "checkpoint \(a) vs GGUF \(b)")
        let masters = try JSONSerialization.jsonObject(with: Data(try runPython(script,
            [gguf, ckpt.appendingPathComponent("model.safetensors").path, scheme, scheme, "--dequant"]).utf8)) as! [String: Any]
        #expect((masters["bad"] as! [String]).count == 2 * 7 + 1, "\(masters["bad"]!)")
    }

    /// qat.importance: an IQ4_NL student whose scale search the student's own activations weighed: the checkpoint holds
    /// the importance file, the GGUF and the HF export hold the values the student computed with (gguf-py reads them
    /// back), and the checkpoint and the GGUF read one NLL; a checkpoint that lost its importance file is refused with
    /// one line (its checksums list it) rather than quantized otherwise than it trained.
    /// Both layouts the importance weighs: IQ4_NL throughout, and Q4_0 blocks with a Q5_0 table.
    @Test(arguments: [("iq4_nl", "iq4_nl"), ("q4_0", "q5_0")])
    func anImportanceWeighedStudentExportsToExactlyWhatItTrainedWith(blocks: String, table: String) throws {
        let dir = try temporaryDirectory("distill-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (ckpt, log) = try trainQAT(dir, scheme: blocks, extra: "  embeddings: true\n  embedding_scheme: \(table)\n  importance: activations\n  importance_windows: 8\n")
        #expect(log.contains("qat.importance: the input channels of 15 matrices measured on"), "\(log)")
        let gguf = dir.appendingPathComponent("student.gguf").path, hf = dir.appendingPathComponent("hf")
        let e = try distill(["export", ckpt.path, "--format", "gguf", "--out", gguf])
        #expect(e.status == 0 && (e.out + e.err).contains("GGUF, \(blocks.uppercased()), embedding/head \(table.uppercased())"), "\(e.out)\(e.err)")
        #expect(try distill(["export", ckpt.path, "--format", "safetensors", "--out", hf.path]).status == 0)
        let script = cliScripts.appendingPathComponent("check_gguf_export.py").path
        let check = try runPython(script, [gguf, hf.appendingPathComponent("model.safetensors").path, blocks, table, "--dequant"])
        let j = try JSONSerialization.jsonObject(with: Data(check.utf8)) as! [String: Any]
        #expect((j["bad"] as! [String]).isEmpty && (j["extra"] as! [String]).isEmpty, "\(check)")
        let (a, b) = (try nll(ckpt.path), try nll(gguf))
        #expect(abs(a - b) <= 1e-5, "checkpoint \(a) vs GGUF \(b)")
        let importance = ckpt.appendingPathComponent("qat_importance.safetensors")
        try FileManager.default.removeItem(at: importance)
        let lost = try distill(["export", ckpt.path, "--format", "gguf", "--out", dir.appendingPathComponent("lost.gguf").path])
        #expect(lost.status != 0 && lost.err.contains("corrupt checkpoint: qat_importance.safetensors is missing"), "\(lost.err)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("lost.gguf").path))
    }

    /// qat.preset q4_k_m: every tensor trains in the type llama.cpp's Q4_K_M picks for it (QuantPreset, checked against
    /// llama.cpp's own files in KDQuantTests) — on 2 blocks, block 1's attn_v and ffn_down in Q6_K, block 0's in Q4_K,
    /// the tied embedding Q6_K — and the GGUF holds those types and exactly the values the student computed with; the
    /// checkpoint and the GGUF read one NLL; `export --quant q4_k_m` of the same checkpoint writes the same file. With
    /// an importance matrix as well: every tensor weighed as llama-quantize --imatrix weighs it, in training and export.
    @Test(arguments: [false, true])
    func aStudentTrainedForLlamaCppsQ4KMExportsEachTensorInItsType(importance: Bool) throws {
        let dir = try temporaryDirectory("distill-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        // the preset's own k-quant as scheme beside it is accepted (it is what the resolved config records)
        let weighed = importance ? "  importance: activations\n  importance_windows: 8\n" : ""
        let (ckpt, log) = try trainQAT(dir, scheme: "q4_k", extra: "  preset: q4_k_m\n" + weighed, dim: 256, ffn: 512)
        #expect(log.contains("llama.cpp's q4_k_m preset: Q4_K ×12, Q6_K ×3"), "\(log)")
        #expect(log.contains("qat.importance: the input channels of 15 matrices measured on") == importance, "\(log)")
        let gguf = dir.appendingPathComponent("student.gguf").path, hf = dir.appendingPathComponent("hf")
        let e = try distill(["export", ckpt.path, "--format", "gguf", "--out", gguf])
        #expect(e.status == 0 && (e.out + e.err).contains("GGUF, Q4_K+Q6_K, embedding/head Q6_K"), "\(e.out)\(e.err)")
        #expect(try distill(["export", ckpt.path, "--format", "safetensors", "--out", hf.path]).status == 0)
        var types = ["token_embd.weight=Q6_K"]
        for (l, kinds) in [(0, ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]), (1, ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"])] {
            types += kinds.map { "blk.\(l).\($0).weight=Q4_K" }
        }
        types += ["blk.1.attn_v.weight=Q6_K", "blk.1.ffn_down.weight=Q6_K"]
        let check = try runPython(cliScripts.appendingPathComponent("check_gguf_export.py").path,
                                  [gguf, hf.appendingPathComponent("model.safetensors").path, "q4_k", "q6_k", "--dequant", "--types", types.joined(separator: ",")])
        let j = try JSONSerialization.jsonObject(with: Data(check.utf8)) as! [String: Any]
        #expect((j["bad"] as! [String]).isEmpty && (j["extra"] as! [String]).isEmpty, "\(check)")
        let (a, b) = (try nll(ckpt.path), try nll(gguf))
        #expect(abs(a - b) <= 1e-5, "checkpoint \(a) vs GGUF \(b)")
        let again = dir.appendingPathComponent("again.gguf").path
        #expect(try distill(["export", ckpt.path, "--format", "gguf", "--quant", "q4_k_m", "--out", again]).status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: again)) == Data(contentsOf: URL(fileURLWithPath: gguf)))
    }

    /// qat.tensor_types: blocks in IQ4_NL, every block's ffn_down in Q3_K and attn_v in Q8_0 (a mix no preset writes);
    /// training logs the mix, the checkpoint's config reads back with it, and the GGUF holds exactly those types and
    /// the values the student computed with; the checkpoint and the GGUF read one NLL.
    @Test func aStudentTrainedWithPerMatrixTypesExportsEachInItsType() throws {
        let dir = try temporaryDirectory("distill-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (ckpt, log) = try trainQAT(dir, scheme: "iq4_nl", extra: "  embeddings: true\n  tensor_types: {ffn_down: q3_k, attn_v: q8_0}\n", dim: 256, ffn: 512)
        #expect(log.contains("iq4_nl (embedding and head too), attn_v: q8_0, ffn_down: q3_k: IQ4_NL ×11, Q3_K ×2, Q8_0 ×2"), "\(log)")
        let gguf = dir.appendingPathComponent("student.gguf").path, hf = dir.appendingPathComponent("hf")
        let e = try distill(["export", ckpt.path, "--format", "gguf", "--out", gguf])
        #expect(e.status == 0 && (e.out + e.err).contains("embedding/head IQ4_NL"), "\(e.out)\(e.err)")
        #expect(try distill(["export", ckpt.path, "--format", "safetensors", "--out", hf.path]).status == 0)
        let types = (0..<2).flatMap { ["blk.\($0).ffn_down.weight=Q3_K", "blk.\($0).attn_v.weight=Q8_0"] }
        let check = try runPython(cliScripts.appendingPathComponent("check_gguf_export.py").path,
                                  [gguf, hf.appendingPathComponent("model.safetensors").path, "iq4_nl", "iq4_nl", "--dequant", "--types", types.joined(separator: ",")])
        let j = try JSONSerialization.jsonObject(with: Data(check.utf8)) as! [String: Any]
        #expect((j["bad"] as! [String]).isEmpty && (j["extra"] as! [String]).isEmpty, "\(check)")
        let (a, b) = (try nll(ckpt.path), try nll(gguf))
        #expect(abs(a - b) <= 1e-5, "checkpoint \(a) vs GGUF \(b)")
        // exported all in IQ4_NL instead, the file reads another NLL: the student really trained with the mix
        let uniform = dir.appendingPathComponent("uniform.gguf").path
        let u = try distill(["export", ckpt.path, "--format", "gguf", "--quant", "q4_0", "--out", uniform])
        #expect(u.status == 0, "\(u.err)")
        #expect(abs(try nll(uniform) - a) > 20 * max(abs(a - b), 1e-7))
    }

    @Test func aStudentWithFewerHeadsExportsAndReadsBack() throws {
        let dir = try temporaryDirectory("distill-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        // 4 heads of 8 on a residual of 64: what a head-pruned student looks like
        let (ckpt, gguf, j) = try trainAndExportF32(dir, "heads", edits: [("kv_heads: 2", "kv_heads: 2\n  head_dim: 8")])
        #expect((j["bad"] as! [String]).isEmpty && (j["metadata"] as! [String: Any])["llama.attention.key_length"] as? Int == 8, "\(j)")
        let (a, b) = (try nll(ckpt.path), try nll(gguf))
        #expect(abs(a - b) <= 1e-5, "checkpoint \(a) vs GGUF \(b)")
    }

    /// The exported files declare the context the run configured (model.max_seq_len), also above the 4096 a reader
    /// caps an unknown model's context at: a student that keeps its teacher's 8192 says so to llama.cpp (which warns
    /// "possible training context overflow" when a file claims less than it is asked for). Read back by gguf-py and,
    /// for the Hugging Face folder, from its config.json.
    @Test func theExportDeclaresTheContextTheRunConfigured() throws {
        let dir = try temporaryDirectory("distill-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (ckpt, _, j) = try trainAndExportF32(dir, "ctx", edits: [("max_seq_len: 64", "max_seq_len: 8192")])
        #expect((j["bad"] as! [String]).isEmpty && (j["metadata"] as! [String: Any])["llama.context_length"] as? Int == 8192, "\(j)")
        let hf = dir.appendingPathComponent("hf")
        #expect(try distill(["export", ckpt.path, "--format", "safetensors", "--out", hf.path]).status == 0)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: hf.appendingPathComponent("config.json"))) as! [String: Any]
        #expect(config["max_position_embeddings"] as? Int == 8192, "\(config)")
    }

    @Test func safetensorsExportLoadsInTheSafetensorsPackage() throws {
        let dir = try temporaryDirectory("distill-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpt = try trainQAT(dir, scheme: "q8_0").checkpoint
        let out = dir.appendingPathComponent("hf")
        let e = try distill(["export", ckpt.path, "--format", "safetensors", "--out", out.path])
        #expect(e.status == 0, "\(e.err)")
        let names = try runPython(cliScripts.appendingPathComponent("list_safetensors.py").path, [out.appendingPathComponent("model.safetensors").path])
        #expect(names.contains("model.layers.1.mlp.down_proj.weight [64, 192] float32"), "\(names)")
        #expect(names.split(separator: "\n").count == 2 * 9 + 2)
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("config.json").path))
    }

    @Test func badExportRequestsFailClearlyAndLeaveNoFile() throws {
        let dir = try temporaryDirectory("distill-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        // the tiny config's ffn rows of 172 do not fit 4-bit blocks of 32
        let cfg = try tinyYAML(dir, "plain", edits: [("steps: 10", "steps: 1"), ("warmup_steps: 2", "warmup_steps: 1")])
        #expect(try distill(["train", "--config", cfg, "--sample-tokens", "0"]).status == 0)
        let ckpt = dir.appendingPathComponent("plain/step_00000001").path
        let out = dir.appendingPathComponent("x.gguf").path
        let r = try distill(["export", ckpt, "--format", "gguf", "--quant", "q4_0", "--out", out])
        #expect(r.status != 0 && r.err.contains("multiples of 32") && r.err.contains("172"), "\(r.err)")
        #expect(r.err.split(separator: "\n").count == 1)
        let unwritable = try distill(["export", ckpt, "--format", "gguf", "--quant", "f16", "--out", "/nonexistent/dir/x.gguf"])
        #expect(unwritable.status != 0 && unwritable.err.contains("/nonexistent/dir/x.gguf"), "\(unwritable.err)")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("x.gguf") }
        #expect(leftovers.isEmpty, "\(leftovers)")
        #expect(try distill(["export", ckpt, "--format", "onnx", "--out", out]).status != 0)
    }

    /// A student cut from a GGUF teacher runs adjacent-pair RoPE (GGUF's Q/K row order). Its checkpoint, its GGUF export
    /// and its Hugging Face export must all evaluate as the teacher it still is (learning rate ~0): the checkpoint and the
    /// GGUF once loaded as rotate-half and scrambled every head's rotation (1.6 nats on the 24-block SmolLM2 student).
    @Test func aStudentCutFromAGGUFTeacherEvaluatesAsItTrainedInEveryFormat() throws {
        let dir = try temporaryDirectory("distill-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        var tm = ModelConfig()
        tm.layers = 2; tm.dim = 64; tm.heads = 4; tm.kvHeads = 2; tm.ffnDim = 172; tm.vocabSize = 256; tm.maxSeqLen = 64; tm.ropeStyle = .adjacent
        let teacher = Transformer(config: tm, needsGrad: false)
        teacher.initialize(seed: 12)
        let tpath = dir.appendingPathComponent("t.gguf").path
        try teacher.exportGGUF(path: tpath, type: .f32, name: "t", extraMetadata: [])
        let cfg = try tinyYAML(dir, "cut", edits: [("steps: 10", "steps: 2"), ("lr: 3.0e-3", "lr: 1.0e-12"), ("warmup_steps: 2", "warmup_steps: 1"),
                                                   ("max_seq_len: 64", "max_seq_len: 64\n  rope_style: adjacent"),
                                                   ("data:\n", "teacher:\n  path: \(tpath)\nstudent:\n  init: from_teacher\n  layers: [0, 1]\ndata:\n")])
        let r = try distill(["train", "--config", cfg, "--sample-tokens", "0"])
        #expect(r.status == 0, "\(r.err)")
        let ckpt = dir.appendingPathComponent("cut/step_00000002").path
        let gguf = dir.appendingPathComponent("s.gguf").path, hf = dir.appendingPathComponent("s-hf").path
        #expect(try distill(["export", ckpt, "--format", "gguf", "--quant", "f32", "--out", gguf]).status == 0)
        #expect(try distill(["export", ckpt, "--format", "safetensors", "--out", hf]).status == 0)
        let reference = try nll(tpath, windows: 8)
        for m in [ckpt, gguf, hf] {
            let x = try nll(m, windows: 8)
            #expect(abs(x - reference) < 1e-4, "\(m): \(x) vs the teacher's \(reference)")
        }
        // the Hugging Face export is rotate-half (what transformers runs): its Q rows are the teacher's, reordered
        let st = try SafetensorsFile(path: hf + "/model.safetensors")
        let q = try #require(st.tensor("model.layers.0.self_attn.q_proj.weight"))
        var rows = [Float](repeating: 0, count: q.elements)
        try rows.withUnsafeMutableBufferPointer { try st.read(q, into: $0.baseAddress!) }
        let wq = teacher.params.base + teacher.layout.blocks[0].wq, hs = tm.headSize
        #expect(Array(rows[0..<64]) == Array(UnsafeBufferPointer(start: wq, count: 64)))            // row 0 ← adjacent row 0
        #expect(Array(rows[64..<128]) == Array(UnsafeBufferPointer(start: wq + 2 * 64, count: 64)))  // row 1 ← adjacent row 2
        #expect(Array(rows[(hs / 2 * 64)..<(hs / 2 * 64 + 64)]) == Array(UnsafeBufferPointer(start: wq + 64, count: 64)))  // row hs/2 ← row 1
    }

    @Test func aStudentCutFromAQuantizedTeacherHoldsItsDequantizedBlocks() throws {
        let dir = try temporaryDirectory("distill-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        // a 4-block teacher exported as Q8_0 GGUF
        var tm = ModelConfig()
        tm.layers = 4; tm.dim = 64; tm.heads = 4; tm.kvHeads = 2; tm.ffnDim = 192; tm.vocabSize = 256; tm.maxSeqLen = 64; tm.ropeStyle = .adjacent
        let teacher = Transformer(config: tm, needsGrad: false)
        teacher.initialize(seed: 8)
        let path = dir.appendingPathComponent("t.gguf").path
        try teacher.exportGGUF(path: path, type: .q8_0, name: "t", extraMetadata: [])
        let loaded = try openModel(path: path)
        var sm = tm
        sm.layers = 2
        let student = Transformer(config: sm, needsGrad: true)
        try student.copyPruned(from: loaded.model, layers: [1, 3])
        for e in student.layout.entries {
            // student block i is teacher block [1, 3][i]; the rest keeps its name
            var src = e.name
            if e.name.hasPrefix("model.layers.0.") { src = "model.layers.1." + e.name.dropFirst("model.layers.0.".count) }
            if e.name.hasPrefix("model.layers.1.") { src = "model.layers.3." + e.name.dropFirst("model.layers.1.".count) }
            let te = loaded.model.layout.entries.first { $0.name == src }!
            var want = [Float](repeating: 0, count: e.count)
            want.withUnsafeMutableBufferPointer { loaded.model.denseTensor(te, into: $0.baseAddress!) }
            #expect(Array(UnsafeBufferPointer(start: student.params.base + e.offset, count: e.count)) == want, "\(e.name)")
            if e.isMatrix {
                // and those are the Q8_0 round trip of the original teacher's weights
                let orig = Array(UnsafeBufferPointer(start: teacher.params.base + teacher.layout.entry(src)!.offset, count: e.count))
                var rt = [Float](repeating: 0, count: e.count)
                rt.withUnsafeMutableBufferPointer { fakeQuantize(.q8_0, src: orig, rows: e.shape[0], c: e.shape[1], out: $0.baseAddress!, mask: nil) }
                #expect(rt == want, "\(e.name)")
            }
        }
        // a width that differs from the teacher's is named
        var wide = sm
        wide.dim = 128
        #expect(throws: (any Error).self) { try Transformer(config: wide, needsGrad: true).copyPruned(from: loaded.model, layers: [0, 1]) }
    }
}
