// The memory plan as a user meets it: `train --dry-run` for N ranks, the plan at the start of a run against the
// peak it then measures, and a plan that does not fit stopping with the fix — on synthetic teachers written by
// Launch/synthetic_teacher.py with SmolLM2's tokenizer, over fortunes prepared with it.
import Foundation
import KDFormats
import KDTestSupport
import Testing

/// Writes a synthetic llama GGUF (SmolLM2's tokenizer) with Launch/synthetic_teacher.py.
func syntheticTeacher(_ path: URL, _ args: [String]) throws {
    let r = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", repoRoot.appendingPathComponent("Launch/synthetic_teacher.py").path,
                                                                  "--out", path.path, "--tokenizer-from", teacher] + args, mergeOutput: true)
    #expect(r.status == 0, "\(r.out)")
}

/// Fortunes prepared with SmolLM2's tokenizer into `dir`/data.
func smolShards(_ dir: URL) throws -> String {
    let out = dir.appendingPathComponent("data").path
    let r = try runDistill(["prepare", repoRoot.appendingPathComponent("Tests/KDTrainTests/Fixtures/fortunes-sample.txt").path,
                            "--output", out, "--tokenizer", teacher, "--separator", "%", "--val-fraction", "0.1"])
    #expect(r.status == 0, "\(r.err)")
    return out
}

/// A run config distilling `teacherPath` into a small student (SmolLM2's vocabulary, tied head; 2 × 128 by default).
func planYAML(_ dir: URL, _ name: String, teacher teacherPath: String, data: String, teacherLines: String = "",
              student: String = "layers: 2, dim: 128, heads: 4, kv_heads: 2, ffn_dim: 384", train: String = "steps: 3, micro_batch: 4") throws -> String {
    let y = """
    model: {\(student), vocab_size: 49152, max_seq_len: 64}
    train: {\(train), seq_len: 64, log_every: 1, threads: 1}
    optimizer: {warmup_steps: 1}
    data: {train: [\(data)]}
    teacher:
      path: \(teacherPath)
    \(teacherLines)
    checkpoint: {dir: \(dir.appendingPathComponent("ckpt-\(name)").path), every: 3}
    """
    let path = dir.appendingPathComponent("\(name).yaml")
    try y.write(to: path, atomically: true, encoding: .utf8)
    return path.path
}

/// Parses the MiB figures of a plan's lines named `part` (one per rank printed).
func planFigures(_ out: String, _ part: String) -> [Double] {
    out.split(separator: "\n").compactMap { line in
        let t = line.drop { $0 == "#" || $0 == " " }
        guard t.hasPrefix(part + " ") else { return nil }
        return Double(t.dropFirst(part.count).split(separator: " ").first ?? "")
    }
}

@Test func theMemoryPlanPredictsTheMeasuredPeakAndNamesTheFixWhenItDoesNotFit() throws {
    let dir = try scratchDir()
    defer { try? FileManager.default.removeItem(at: dir) }
    // 8 × 512 blocks in F16 (~34 MiB) with a tied 49,152 × 512 embedding (48 MiB)
    let t = dir.appendingPathComponent("t.gguf")
    try syntheticTeacher(t, ["--layers", "8", "--dim", "512", "--ffn", "1408", "--heads", "8", "--kv-heads", "4", "--type", "F16", "--tied"])
    let data = try smolShards(dir)
    let cfg = try planYAML(dir, "replicated", teacher: t.path, data: data)

    // the run prints its plan before the teacher loads; its total is within 15% of the peak RSS it ends with
    let r = try runDistill(["train", "--config", cfg, "--sample-tokens", "0"])
    #expect(r.status == 0, "\(r.err)")
    let planned = try #require(planFigures(r.out, "total").first, "no plan in: \(r.out)")
    let peakLine = try #require(r.out.split(separator: "\n").last { $0.contains("peak RSS") }, "\(r.out)")
    let peak = try #require(Double(peakLine.split(separator: " ").reversed().dropFirst().first ?? ""))
    #expect(abs(planned - peak) / peak <= 0.15, "planned \(planned) MiB, measured peak \(peak) MiB\n\(r.out)")
    let teacherPart = try #require(planFigures(r.out, "teacher 1 weights").first)
    let file = Double(try FileManager.default.attributesOfItem(atPath: t.path)[.size] as! Int) / 1048576
    #expect(teacherPart > 0.9 * file && teacherPart < 1.05 * file, "replicated: teacher \(teacherPart) MiB of a \(file) MiB file")

    // dry-run for 2 ranks: pipelined halves the blocks; rank 0 embeds, both apply the (tied) head
    let pipe = try planYAML(dir, "pipelined", teacher: t.path, data: data, teacherLines: "  placement: pipelined")
    let d = try runDistill(["train", "--config", pipe, "--dry-run", "--ranks", "2"])
    #expect(d.status == 0, "\(d.err)")
    let shares = planFigures(d.out, "teacher 1 weights")
    #expect(shares.count == 2 && shares.allSatisfy { $0 < 0.80 * file && $0 > 0.55 * file }, "pipelined shares \(shares) of \(file) MiB\n\(d.out)")
    #expect(d.out.contains("blocks 0..<4 of 8, head, embedding") && d.out.contains("blocks 4..<8 of 8, head"), "\(d.out)")

    // a plan over the memory a rank can have: one line with the fix, a non-zero exit
    let tight = try runDistill(["train", "--config", cfg, "--dry-run", "--ranks", "2", "--memory-per-rank", "120M"])
    #expect(tight.status != 0, "\(tight.out)")
    let line = tight.err.split(separator: "\n").filter { $0.hasPrefix("error:") }
    #expect(line.count == 1 && line[0].contains("memory plan of rank 0: expected at most 0.12 GiB") && line[0].contains("teacher.placement: pipelined"),
            "\(tight.err)")
    let typo = try runDistill(["train", "--config", cfg, "--dry-run", "--memory-per-rank", "lots"])
    #expect(typo.status != 0 && typo.err.contains("--memory-per-rank: expected a size such as 8G"), "\(typo.err)")
}
