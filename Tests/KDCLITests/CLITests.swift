// Whole commands: argument validation through Distill.parseAsRoot, and end-to-end runs of the built binary
// (exit codes, progress lines, one-line errors on bad input).
import Foundation
import KDFormats
import KDOps
import KDTestSupport
import Testing
@testable import KDCLI

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The `distill` binary built beside the test bundle.
func distillBinary() throws -> URL {
    let dir = Bundle.main.bundleURL.deletingLastPathComponent()
    for candidate in [dir.appendingPathComponent("distill"), Bundle.main.bundleURL.appendingPathComponent("distill"),
                      repoRoot.appendingPathComponent(".build/debug/distill")]
    where FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
    throw CocoaError(.fileNoSuchFile)
}

/// Runs the binary from the repository root (with `stdin` written to it, if given); returns status, stdout, stderr.
func runDistill(_ args: [String], stdin: String? = nil) throws -> (status: Int32, out: String, err: String) {
    try runProcess(try distillBinary(), args, in: repoRoot, stdin: stdin)
}

@Test func trainArgumentsParseAndValidate() throws {
    let cmd = try Distill.parseAsRoot(["train", "--config", "Configs/tiny.yaml", "--steps", "3", "--threads", "1"])
    let train = try #require(cmd as? Train)
    #expect(train.steps == 3 && train.threads == 1 && train.config == "Configs/tiny.yaml")
    #expect(throws: (any Error).self) { try Distill.parseAsRoot(["train", "--config", "x.yaml", "--steps", "0"]) }
    #expect(throws: (any Error).self) { try Distill.parseAsRoot(["train"]) }  // --config is required
    #expect(throws: (any Error).self) { try Distill.parseAsRoot(["train", "--config", "x", "--threads", "-1"]) }
}

@Test func benchArgumentsParseAndValidate() throws {
    let cmd = try Distill.parseAsRoot(["bench", "--shape", "tiny", "--shape", "student-8x384", "--threads", "1,2", "--json"])
    let bench = try #require(cmd as? Bench)
    #expect(bench.shapes == ["tiny", "student-8x384"] && bench.threadCounts == [1, 2] && bench.json)
    #expect(throws: (any Error).self) { try Distill.parseAsRoot(["bench", "--shape", "gpt5"]) }
    #expect(throws: (any Error).self) { try Distill.parseAsRoot(["bench", "--threads", "1,x"]) }
    #expect(throws: (any Error).self) { try Distill.parseAsRoot(["bench", "--mode", "backward"]) }
    let g = try #require(try Distill.parseAsRoot(["bench", "--gemm", "2048x384x384,8x9x10", "--precision", "f32,bf16"]) as? Bench)
    #expect(g.gemmShapes.map { [$0.m, $0.n, $0.k] } == [[2048, 384, 384], [8, 9, 10]] && g.precisions == [.f32, .bf16])
    for bad in [["--gemm", "2048x384"], ["--gemm", "0x1x1"], ["--precision", "f16"], ["--precision", "f32,"]] {
        #expect(throws: (any Error).self, "\(bad)") { try Distill.parseAsRoot(["bench"] + bad) }
    }
}

/// `bench --gemm` in both precisions: f32 measured, bf16 forced off skipped with its one warning (as on a CPU without
/// AVX512-BF16), and with bf16's numbers (the rounded kernel) measured under its own name.
@Test func benchGemmMeasuresEachPrecisionOrSaysWhyNot() throws {
    let args = ["bench", "--gemm", "64x48x32", "--precision", "f32,bf16", "--threads", "1", "--repeats", "1", "--json"]
    let off = try runProcess(try distillBinary(), args, in: repoRoot, env: ["DISTILL_BF16_KERNEL": "off"])
    #expect(off.status == 0, "\(off.err)")
    let lines = off.out.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    #expect(lines.count == 1 && lines[0]["precision"] as? String == "f32" && (lines[0]["gflops"] as? Double ?? 0) > 0, "\(off.out)")
    #expect(off.err.contains("warning: bench --precision bf16: DISTILL_BF16_KERNEL=off, bf16 not measured"), "\(off.err)")
    let rounded = try runProcess(try distillBinary(), args, in: repoRoot, env: ["DISTILL_BF16_KERNEL": "rounded"])
    #expect(rounded.status == 0 && rounded.out.contains("\"precision\":\"bf16-rounded\""), "\(rounded.out)\(rounded.err)")
}

@Test func trainRunsEndToEndWithAFallingLoss() throws {
    let r = try runDistill(["train", "--config", "Configs/tiny.yaml", "--steps", "6", "--sample-tokens", "20"])
    #expect(r.status == 0, "\(r.err)")
    let losses = r.out.split(separator: "\n").filter { $0.hasPrefix("step") }.compactMap { line -> Double? in
        guard let range = line.range(of: "loss ") else { return nil }
        return Double(line[range.upperBound...].prefix { $0 != " " })
    }
    #expect(losses.count == 6)
    #expect(losses.last! < losses.first!)
    #expect(r.out.contains("val loss"))
    #expect(r.out.contains("ETA"))
}

@Test(arguments: [
    ("model:\n  dimm: 64\ndata: {train: [x]}\n", "model.dimm: unknown key 'dimm'; did you mean 'dim'?"),
    ("data: {train: [/no/such/file.txt]}\n", "data.train: no such file or folder: /no/such/file.txt"),
    ("model: {heads: 3}\ndata: {train: [x]}\n", "config model.dim: expected a multiple of heads (3), or a head_dim, found 128"),
    ("model: [unclosed\n", "not valid YAML"),
])
func badInputFailsWithOneClearLine(yaml: String, message: String) throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("distill-bad-\(UUID().uuidString).yaml")
    try yaml.write(to: path, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: path) }
    let r = try runDistill(["train", "--config", path.path])
    #expect(r.status != 0)
    #expect(r.err.contains(message), "stderr: \(r.err)")
    #expect(r.err.split(separator: "\n").count == 1, "stderr: \(r.err)")
    #expect(!r.out.contains("step"))
}

@Test func missingConfigFileFails() throws {
    let r = try runDistill(["train", "--config", "Configs/nope.yaml"])
    #expect(r.status != 0)
    #expect(r.err.contains("config file not found: Configs/nope.yaml"))
}

@Test func everyShippedConfigResolves() throws {
    // every YAML under Configs/ as `distill train --dry-run` reads it: bases followed, strict keys, cross-field rules
    let root = repoRoot.appendingPathComponent("Configs")
    let files = try #require(FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil)).compactMap { $0 as? URL }
        .filter { $0.pathExtension == "yaml" }
    #expect(files.count >= 40, "\(files.count) configs")
    for f in files {
        let r = try runDistill(["train", "--config", f.path, "--dry-run"])
        #expect(r.status == 0, "\(f.path): \(r.err)")
    }
    // and the hour recipe is what its header says: the 24-block cut (smollm2-cut.yaml) with Q4_0 QAT of the embedding too
    let hour = try runDistill(["train", "--config", "Configs/recipes/smollm2-hour.yaml", "--dry-run"])
    #expect(hour.out.contains("scheme: q4_0") && hour.out.contains("embeddings: true") && hour.out.contains("select: angular"), "\(hour.out)")
    // and the quickstart is what its header and the README say: every block kept, IQ4_NL of every matrix and the table,
    // its scale search weighed by the student's own activations
    let quick = try runDistill(["train", "--config", "Configs/recipes/quickstart.yaml", "--dry-run"])
    for line in ["  layers: 30", "  select: every", "  every: 1", "  scheme: iq4_nl", "  embedding_scheme: iq4_nl", "  embeddings: true",
                 "  objective: fkl", "  steps: 24", "  importance: activations"] {
        #expect(quick.out.split(separator: "\n").contains { $0 == line[...] }, "quickstart: expected \(line)")
    }
}

@Test func benchPrintsTheRequiredJSONFields() throws {
    let r = try runDistill(["bench", "--shape", "tiny", "--mode", "both", "--threads", "1", "--repeats", "1", "--batch", "2", "--seq", "32", "--json"])
    #expect(r.status == 0, "\(r.err)")
    let lines = r.out.split(separator: "\n")
    #expect(lines.count == 2)
    for line in lines {
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        for key in ["shape", "mode", "threads", "tokens_per_s", "gflops", "sgemm_peak_gflops", "mfu", "peak_rss_bytes"] {
            #expect(obj[key] != nil, "missing \(key)")
        }
        #expect(obj["shape"] as? String == "tiny")
        #expect((obj["tokens_per_s"] as? Double ?? 0) > 0)
        #expect((obj["peak_rss_bytes"] as? Int ?? 0) > 0)
    }
}

/// `bench --breakdown` on a distillation step: every phase of the step shows up, GEMMs where there are GEMMs, and the
/// parts add up to no more than the step.
@Test func benchBreaksTheKDStepDownByPhase() throws {
    let r = try runDistill(["bench", "--shape", "tiny", "--mode", "kd", "--threads", "1", "--repeats", "1", "--batch", "1", "--seq", "16",
                            "--breakdown", "--json"])
    #expect(r.status == 0, "\(r.err)")
    let obj = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
    let parts = try #require(obj["breakdown_ms"] as? [String: Double]), step = try #require(obj["breakdown_step_ms"] as? Double)
    for key in ["teacher forward/GEMM", "teacher forward/attention", "student forward/GEMM", "loss (heads, softmax, divergence)/GEMM",
                "loss (heads, softmax, divergence)/rest", "backward (blocks, embedding)/GEMM", "backward (blocks, embedding)/attention",
                "optimizer (clip, AdamW)/rest"] {
        #expect((parts[key] ?? 0) > 0, "\(key) missing in \(parts.keys.sorted())")
    }
    #expect(parts.values.reduce(0, +) <= step * 1.001, "parts \(parts.values.reduce(0, +)) ms of a \(step) ms step")
    let text = try runDistill(["bench", "--shape", "tiny", "--mode", "kd", "--threads", "1", "--repeats", "1", "--batch", "1", "--seq", "16", "--breakdown"])
    #expect(text.status == 0 && text.out.contains("breakdown (ms per step") && text.out.contains("outside the phases"), "\(text.out)")
}

@Test func aSignalStopsTrainingWithACheckpoint() throws {
    let dir = try scratchDir()
    defer { try? FileManager.default.removeItem(at: dir) }
    let cfg = try tinyYAML(dir, "sig", edits: [("steps: 10", "steps: 100000"), ("every: 5", "every: 0"), ("log_every: 1", "log_every: 100")])
    func start() throws -> Process {
        let p = Process()
        p.executableURL = try distillBinary()
        p.arguments = ["train", "--config", cfg, "--sample-tokens", "0"]
        p.currentDirectoryURL = repoRoot
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }
    // one SIGTERM: the step finishes, a checkpoint is written, the exit is clean
    let p = try start()
    Thread.sleep(forTimeInterval: 4)
    kill(p.processIdentifier, SIGTERM)
    p.waitUntilExit()
    #expect(p.terminationStatus == 0)
    let store = dir.appendingPathComponent("sig")
    let names = try FileManager.default.contentsOfDirectory(atPath: store.path).filter { $0.hasPrefix("step_") }
    #expect(names.count == 1, "\(names)")
    let v = try runProcess(try distillBinary(), ["checkpoint", "verify", store.appendingPathComponent(names[0]).path])
    #expect(v.status == 0, "\(v.err)")
}

@Test func resumingACheckpointOfAnotherModelShapeIsRefused() throws {
    let dir = try scratchDir()
    defer { try? FileManager.default.removeItem(at: dir) }
    let cfg = try tinyYAML(dir, "run", edits: [("steps: 10", "steps: 2")])
    #expect(try runDistill(["train", "--config", cfg, "--sample-tokens", "0"]).status == 0)
    // tensors are found by name: a one-block model would otherwise quietly take block 0 of the two-block checkpoint
    let shallower = try tinyYAML(dir, "run", edits: [("steps: 10", "steps: 4"), ("layers: 2", "layers: 1")])
    let r = try runDistill(["train", "--config", shallower, "--resume", "auto", "--sample-tokens", "0"])
    #expect(r.status != 0 && r.err.contains("the checkpoint has another model shape (layers 2, this config 1)"), "\(r.err)")
}

@Test func theProgressLineIsRedrawnOnATerminalAndPlainOtherwise() throws {
    let dir = try scratchDir()
    defer { try? FileManager.default.removeItem(at: dir) }
    let cfg = try tinyYAML(dir, "p", edits: [("steps: 10", "steps: 4"), ("log_every: 1", "log_every: 4")])
    let cmd = "\(try distillBinary().path) train --config \(cfg) --sample-tokens 0"
    // util-linux `script` gives the command a pseudo-terminal
    let tty = try runProcess(URL(fileURLWithPath: "/usr/bin/script"), ["-qec", cmd, "/dev/null"], in: repoRoot)
    #expect(tty.status == 0, "\(tty.err)")
    #expect(tty.out.contains("\r\u{1B}[2Kstep     2/4"), "\(tty.out)")
    // in a pipe: plain lines at step 1 and every log_every, no control characters
    let piped = try runDistill(["train", "--config", cfg, "--sample-tokens", "0", "--resume", "none", "--checkpoint-dir", dir.appendingPathComponent("q").path])
    #expect(piped.status == 0 && !piped.out.contains("\u{1B}"))
    #expect(piped.out.split(separator: "\n").filter { $0.hasPrefix("step") }.count == 2, "\(piped.out)")
}

/// Qwen pads its vocabulary tables past its tokenizer: a teacher with 16 padding rows past a 256-token student
/// distills over the shared ids; the same rows holding real tokens are another tokenizer, refused with one line.
@Test func aTeacherPaddedPastTheStudentsVocabularyDistillsOverTheSharedIds() throws {
    let dir = try temporaryDirectory("distill-padded")
    defer { try? FileManager.default.removeItem(at: dir) }
    let script = repoRoot.appendingPathComponent("Tests/KDCLITests/Scripts/padded_teacher.py").path
    for kind in ["padded", "real"] {
        let teacher = dir.appendingPathComponent("\(kind).gguf").path
        _ = try runPython(script, [teacher, kind])
        let base = try String(contentsOf: repoRoot.appendingPathComponent("Configs/tiny.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "dir: Checkpoints/tiny", with: "dir: \(dir.appendingPathComponent("run-\(kind)").path)")
        let cfg = dir.appendingPathComponent("\(kind).yaml")
        try (base + "teacher:\n  path: \(teacher)\ndistill:\n  objective: fkl\n  kd_ratio: 0.5\n").write(to: cfg, atomically: true, encoding: .utf8)
        let r = try runDistill(["train", "--config", cfg.path, "--steps", "2"])
        if kind == "padded" {
            #expect(r.status == 0, "\(r.err)")
            #expect(r.out.contains("272 vocabulary rows, padding past 256; distilling over the 256 shared ids"), "\(r.out)")
            #expect(r.out.contains("fkl"))
        } else {
            #expect(r.status != 0)
            #expect(r.err.contains("id 256 is the real token 'word256'"), "\(r.err)")
            #expect(r.err.split(separator: "\n").count == 1, "\(r.err)")
        }
    }
}

@Test func aSentencePieceVocabularyIsNotWrittenAsATokenizerJSON() throws {
    // (GGUF stores scores, not the merges Hugging Face would need)
    let bytes: [String] = (0..<256).map { String(format: "<0x%02X>", $0) }
    let sp = try SentencePieceVocab(tokens: bytes, scores: [Float](repeating: 0, count: 256), types: [Int](repeating: 6, count: 256),
                                    addSpacePrefix: false)
    let tok = try BPETokenizer(tokens: bytes, merges: [], special: [], pre: .gpt2, bos: nil, eos: nil, addBOS: false, sentencePiece: sp)
    #expect(tok.decode(tok.encode("hé")) == "hé")
    #expect(throws: (any Error).self) { try tok.hfTokenizerJSON() }
}

/// `distill bench` names the OpenBLAS kernels, and where OPENBLAS_CORETYPE forces AVX2 kernels on an AVX-512 CPU it
/// warns with the cost it measured against a child run with the variable unset; on a CPU without AVX-512 it does not.
@Test func benchNamesTheBLASKernelsAndWarnsWhenAnOlderCoreIsForced() throws {
    let r = try runProcess(try distillBinary(), ["bench", "--gemm", "64x64x64", "--threads", "1", "--repeats", "1"], in: repoRoot,
                           env: ["OPENBLAS_CORETYPE": "Haswell"])
    #expect(r.status == 0, "\(r.err)")
    #expect(r.err.contains("OpenBLAS Haswell kernels"), "\(r.err)")
    let avx512 = BLASCore.cpuFlags().isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512dq"])
    if avx512 {
        #expect(r.err.contains("warning: OPENBLAS_CORETYPE=Haswell forces Haswell kernels") && r.err.contains("with the variable unset"), "\(r.err)")
    } else {
        #expect(!r.err.contains("warning: OPENBLAS_CORETYPE"), "\(r.err)")
    }
}

