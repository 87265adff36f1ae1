// Cross-tokenizer distillation as a user runs it: a student with SmolLM2's tokenizer (data from a plain
// `distill prepare`) and Gemma-3-270M (another tokenizer) as a teacher, alone or beside SmolLM2, replicated or in
// groups, live or from the offline cache; and the bad inputs, each one line before anything runs.
import Foundation
import KDFormats
import KDTestSupport
import Testing

let gemmaTeacher = repoRoot.appendingPathComponent("Checkpoints/teachers/gemma-3-270m-q4_k_m.gguf").path

/// The first `bytes` of fortunes-sample.txt (whole fortunes) prepared with SmolLM2's tokenizer (prepare.json then names
/// it) into dir/data.
func prepareSmolLMData(_ dir: URL, bytes: Int = 8000) throws -> String {
    guard FileManager.default.fileExists(atPath: gemmaTeacher) else {
        throw PythonError(message: "Gemma missing: run Launch/fetch_teacher.sh gemma3 (Launch/test.sh does) to fetch \(gemmaTeacher)")
    }
    let all = try String(contentsOf: repoRoot.appendingPathComponent("Tests/KDTrainTests/Fixtures/fortunes-sample.txt"), encoding: .utf8)
    let text = dir.appendingPathComponent("fortunes.txt")
    try String(all.utf8.prefix(bytes).split(separator: UInt8(ascii: "%")).dropLast().map { String(decoding: $0, as: UTF8.self) }
        .joined(separator: "%")).write(to: text, atomically: true, encoding: .utf8)
    let out = dir.appendingPathComponent("data").path
    let r = try runDistill(["prepare", text.path, "--separator", "%", "--tokenizer", teacher, "--output", out, "--val-fraction", "0.2"])
    #expect(r.status == 0, "\(r.err)")
    return out
}

/// A tiny student with SmolLM2's vocabulary (2 blocks × 32) on that data, with `teacher` as its teacher section.
func crossYAML(_ dir: URL, _ name: String, data: String, teacher: String, distill: String = "", steps: Int = 2) throws -> String {
    let y = """
    model: {layers: 2, dim: 32, heads: 4, kv_heads: 2, ffn_dim: 64, vocab_size: 49152, max_seq_len: 32}
    train: {steps: \(steps), micro_batch: 2, seq_len: 32, log_every: 1, eval_every: \(steps), eval_batches: 1, seed: 5}
    optimizer: {lr: 1.0e-3, warmup_steps: 1}
    data: {train: [\(data)]}
    \(teacher)
    distill:
      objective: fkl
      kd_ratio: 0.5
    \(distill)
    checkpoint: {dir: \(dir.appendingPathComponent(name).path), every: \(steps)}
    """
    let path = dir.appendingPathComponent("\(name).yaml")
    try y.write(to: path, atomically: true, encoding: .utf8)
    return path.path
}

@Suite(.serialized) struct CrossTokenizerRuns {
    @Test func aGemmaTeacherTeachesASmolLMStudentFromAPlainPrepare() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try prepareSmolLMData(dir)
        let prepared = try String(contentsOf: URL(fileURLWithPath: data).appendingPathComponent("prepare.json"), encoding: .utf8)
        #expect(prepared.contains("SmolLM2-135M-Instruct.Q4_1.gguf"), "\(prepared)")
        let gemmaSection = "teacher: {path: \(gemmaTeacher), exchange: topk, top_k: 16}"
        // off: one line naming both tokenizers and the option; nothing written
        let off = try runDistill(["train", "--config", try crossYAML(dir, "off", data: data, teacher: gemmaSection)])
        #expect(off.status != 0 && off.err.contains("distill.cross_tokenizer uld or gold") && off.err.contains("262144 tokens, hash e6ba97dca900453a")
                && off.err.contains("49152 tokens, hash"), "\(off.err)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("off").path))
        // gold and uld: the student's tokenizer comes from prepare.json; both train, report the alignment and save
        for loss in ["gold", "uld"] {
            let r = try runDistill(["train", "--config", try crossYAML(dir, loss, data: data, teacher: gemmaSection, distill: "  cross_tokenizer: \(loss)")])
            let log = r.out + r.err
            #expect(r.status == 0, "\(log)")
            #expect(log.contains("another tokenizer: windows re-tokenized") && log.contains("have a teacher twin"), "\(log)")
            let line = try #require(log.split(separator: "\n").first { $0.hasPrefix("cross-tokenizer:") }, "\(log)")
            #expect(line.contains("aligned") && line.contains("matched") && line.contains("ms per step"))
            #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("\(loss)/step_00000002/tokenizer.json").path))
        }
        // the same tokenizer with cross_tokenizer set: a warning, plain distillation
        let same = try runDistill(["train", "--config", try crossYAML(dir, "same", data: data, teacher: "teacher: {path: \(teacher)}",
                                                                      distill: "  cross_tokenizer: gold")])
        #expect(same.status == 0 && (same.out + same.err).contains("every teacher has the student's tokenizer: plain distillation"), "\(same.err)")
        // a teacher with no tokenizer in its file (a byte-level HF folder): refused, off or not
        try saveTinyTeacher(dir.appendingPathComponent("bytes-teacher"), layers: 1, seed: 3)
        let none = try runDistill(["train", "--config", try crossYAML(dir, "none", data: data,
                                                                      teacher: "teacher: {path: \(dir.appendingPathComponent("bytes-teacher").path)}",
                                                                      distill: "  cross_tokenizer: uld")])
        #expect(none.status != 0 && none.err.contains("expected a tokenizer in the file") && none.err.split(separator: "\n").count <= 3, "\(none.err)")
        // a student tokenizer that is not the data's
        let wrong = try runDistill(["train", "--config", try crossYAML(dir, "wrong", data: data, teacher: gemmaSection,
                                                                       distill: "  cross_tokenizer: gold\n  student_tokenizer: \(gemmaTeacher)")])
        #expect(wrong.status != 0 && wrong.err.contains("distill.student_tokenizer") && wrong.err.contains("the tokenizer the data was prepared with"), "\(wrong.err)")
    }

    @Test func groupsWithTeachersOfTwoTokenizersEqualReplicated() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try prepareSmolLMData(dir)
        func section(_ place: String) -> String {
            // the full exchange for SmolLM2 (its head applied at the owner in both placements); Gemma's rows are top-16
            "teacher:\n  members:\n    - {path: \(teacher), weight: 1}\n    - {path: \(gemmaTeacher), weight: 3}\n  placement: \(place)\n  top_k: 16"
        }
        let g = try launch("distill_mpi.sh", ["2", "train", "--config", try crossYAML(dir, "groups", data: data, teacher: section("groups"),
                                                                                    distill: "  cross_tokenizer: gold"), "--sample-tokens", "0"])
        #expect(g.status == 0 && g.out.contains("teacher 2 with another tokenizer send top-k rows"), "\(g.out)")
        let r = try launch("distill_mpi.sh", ["2", "train", "--config", try crossYAML(dir, "repl", data: data, teacher: section("replicated"),
                                                                                    distill: "  cross_tokenizer: gold"), "--sample-tokens", "0"])
        #expect(r.status == 0, "\(r.out)")
        // Gemma ran on rank 1 for both micro-batches in groups, on each rank for its own in replicated: the same run
        #expect(try Data(contentsOf: dir.appendingPathComponent("groups/step_00000002/model.safetensors"))
                == Data(contentsOf: dir.appendingPathComponent("repl/step_00000002/model.safetensors")))
        let lines = { (s: String) in s.split(separator: "\n").filter { $0.hasPrefix("cross-tokenizer:") }.map { $0.components(separatedBy: "; aligning")[0] } }
        #expect(lines(g.out) == lines(r.out) && lines(g.out).count == 1, "\(lines(g.out)) \(lines(r.out))")
        // pipelined cannot carry another tokenizer
        let p = try launch("distill_mpi.sh", ["2", "train", "--config", try crossYAML(dir, "pipe", data: data,
            teacher: "teacher: {path: \(gemmaTeacher), placement: pipelined}", distill: "  cross_tokenizer: gold"), "--sample-tokens", "0"])
        #expect(p.status != 0 && p.out.contains("cross_tokenizer runs with replicated or groups"), "\(p.out)")
    }

    @Test func aCrossTokenizerCacheTrainsWithoutTheTeacherAndOnlyForItsTokenizer() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = try prepareSmolLMData(dir, bytes: 3000)
        let live = try crossYAML(dir, "live", data: data, teacher: "teacher: {path: \(gemmaTeacher), exchange: topk, top_k: 16}",
                                 distill: "  cross_tokenizer: gold")
        let c = try launch("distill_mpi.sh", ["2", "teacher-cache", "--config", live, "--out", dir.appendingPathComponent("cache").path, "--batch", "2", "--threads", "1"])
        #expect(c.status == 0, "\(c.out)")
        let info = try String(contentsOf: dir.appendingPathComponent("cache/cache.json"), encoding: .utf8)
        #expect(info.contains("student_tokenizer_hash") && info.contains("\"teacher_vocab\" : 262144") && info.contains("matched_share"), "\(info)")
        let cached = { (extra: String) in try crossYAML(dir, "cached", data: data, teacher: "teacher: {cache: \(dir.appendingPathComponent("cache").path)}",
                                                        distill: extra) }
        let t = try launch("distill_mpi.sh", ["2", "train", "--config", try cached("  cross_tokenizer: gold"), "--sample-tokens", "0"])
        #expect(t.status == 0 && t.out.contains("no teacher in memory (another tokenizer: rows aligned") && t.out.contains("step     2/2"), "\(t.out)")
        // the cache of another tokenizer's rows needs cross_tokenizer
        let off = try runDistill(["train", "--config", try cached("")])
        #expect(off.status != 0 && off.err.contains("the cache holds a teacher with another tokenizer"), "\(off.err)")
        // data prepared with another tokenizer than the cache's student: named before anything runs
        let bytesData = dir.appendingPathComponent("bytes").path
        let p = try runDistill(["prepare", dir.appendingPathComponent("fortunes.txt").path, "--separator", "%", "--output", bytesData])
        #expect(p.status == 0, "\(p.err)")
        let other = try crossYAML(dir, "other", data: bytesData, teacher: "teacher: {cache: \(dir.appendingPathComponent("cache").path)}",
                                  distill: "  cross_tokenizer: gold")
        let o = try runDistill(["train", "--config", other])
        #expect(o.status != 0 && o.err.contains("student tokenizer") && o.err.contains("a cache made for tokenizer"), "\(o.err)")
    }
}
