// Real mpirun (through Launch/distill_mpi.sh and Launch/restart.sh): data parallelism equals a bigger batch,
// resume is bitwise exact, a rank killed mid-checkpoint loses nothing that verified and the restart loop finishes.
import Foundation
import KDCheckpoint
import KDConfig
import KDFormats
import KDModel
import KDTestSupport
import Testing

/// Runs a Launch script from the repository root with the debug binary the tests built.
func launch(_ script: String, _ args: [String], env: [String: String] = [:]) throws -> (status: Int32, out: String) {
    let r = try runProcess(URL(fileURLWithPath: "/bin/bash"), [repoRoot.appendingPathComponent("Launch/\(script)").path] + args,
                           in: repoRoot, env: env.merging(["DISTILL_BIN": try distillBinary().path]) { a, _ in a }, mergeOutput: true)
    return (r.status, r.out)
}

/// Configs/tiny.yaml with the data path made absolute, a private checkpoint folder and `edits` applied.
func tinyYAML(_ dir: URL, _ name: String, edits: [(String, String)] = []) throws -> String {
    var y = try String(contentsOf: repoRoot.appendingPathComponent("Configs/tiny.yaml"), encoding: .utf8)
    y = y.replacingOccurrences(of: "Tests/KDTrainTests/Fixtures/", with: repoRoot.appendingPathComponent("Tests/KDTrainTests/Fixtures/").path + "/")
    y = y.replacingOccurrences(of: "dir: Checkpoints/tiny", with: "dir: \(dir.appendingPathComponent(name).path)")
    for (a, b) in edits { y = y.replacingOccurrences(of: a, with: b) }
    let path = dir.appendingPathComponent("\(name).yaml")
    try y.write(to: path, atomically: true, encoding: .utf8)
    return path.path
}

func weights(_ ckpt: URL) throws -> [String: [Float]] {
    let f = try SafetensorsFile(path: ckpt.appendingPathComponent("model.safetensors").path)
    var out: [String: [Float]] = [:]
    for t in f.tensors {
        var a = [Float](repeating: 0, count: t.elements)
        a.withUnsafeMutableBufferPointer { f.read(t, into: $0.baseAddress!) }
        out[t.name] = a
    }
    return out
}

/// A tiny byte-level teacher (dim 48, 4 heads / 2 kv, ffn 96) with random weights, saved as a Hugging Face folder.
func saveTinyTeacher(_ dir: URL, layers: Int, seed: UInt64) throws {
    var tm = ModelConfig()
    tm.layers = layers; tm.dim = 48; tm.heads = 4; tm.kvHeads = 2; tm.ffnDim = 96; tm.vocabSize = 256; tm.maxSeqLen = 64
    let teacher = Transformer(config: tm, needsGrad: false)
    teacher.initialize(seed: seed)
    try saveHFModel(teacher, dir: dir.path)
}

/// Max over tensors of ‖a − b‖ / ‖b‖ between two checkpoints' student weights.
func relativeWeightDifference(_ a: URL, _ b: URL) throws -> Double {
    let wa = try weights(a), wb = try weights(b)
    #expect(wa.count == wb.count && !wa.isEmpty)
    var worst = 0.0
    for (k, x) in wa {
        let y = try #require(wb[k])
        let d = zip(x, y).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }, n = y.reduce(0.0) { $0 + Double($1) * Double($1) }
        worst = max(worst, (d / max(n, 1e-30)).squareRoot())
    }
    return worst
}

@Suite(.serialized) struct MPIRuns {
    @Test func twoRanksEqualOneRankWithTwiceTheBatch() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let two = try tinyYAML(dir, "two", edits: [("micro_batch: 4", "micro_batch: 2"), ("steps: 10", "steps: 4")])
        let one = try tinyYAML(dir, "one", edits: [("steps: 10", "steps: 4")])
        let a = try launch("distill_mpi.sh", ["2", "train", "--config", two, "--sample-tokens", "0"])
        #expect(a.status == 0, "\(a.out)")
        #expect(a.out.contains("on 2 ranks"))
        let b = try launch("distill_mpi.sh", ["1", "train", "--config", one, "--sample-tokens", "0"])
        #expect(b.status == 0, "\(b.out)")
        // summation order differs (micro-batches of 2 vs 4 rows, the all-reduce), nothing else
        let worst = try relativeWeightDifference(dir.appendingPathComponent("two/step_00000004"), dir.appendingPathComponent("one/step_00000004"))
        #expect(worst < 1e-5, "max relative weight difference \(worst)")
    }

    /// train.precision bf16 on 2 ranks: forced off (DISTILL_BF16_KERNEL=off, as on a CPU without AVX512-BF16) it warns
    /// once and trains exactly as f32; with bf16's numbers (the rounded kernel) it says so, ends near, not at, f32, and
    /// resumes bit for bit.
    @Test func bf16PrecisionFallsBackOnceOrTrainsNearF32() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let edits = [("micro_batch: 4", "micro_batch: 2"), ("steps: 10", "steps: 3")]
        let f32 = try tinyYAML(dir, "f32", edits: edits)
        let off = try tinyYAML(dir, "off", edits: edits + [("lm_head_chunk: 96", "lm_head_chunk: 96\n  precision: bf16")])
        let rounded = try tinyYAML(dir, "rounded", edits: edits + [("lm_head_chunk: 96", "lm_head_chunk: 96\n  precision: bf16")])
        let a = try launch("distill_mpi.sh", ["2", "train", "--config", f32, "--sample-tokens", "0"])
        #expect(a.status == 0, "\(a.out)")
        #expect(!a.out.contains("bf16"), "\(a.out)")
        let b = try launch("distill_mpi.sh", ["2", "train", "--config", off, "--sample-tokens", "0"], env: ["DISTILL_BF16_KERNEL": "off"])
        #expect(b.status == 0, "\(b.out)")
        let warning = "warning: train.precision bf16: DISTILL_BF16_KERNEL=off, computing in f32"
        #expect(b.out.components(separatedBy: warning).count == 2, "expected the warning once:\n\(b.out)")
        let c = try launch("distill_mpi.sh", ["2", "train", "--config", rounded, "--sample-tokens", "0"], env: ["DISTILL_BF16_KERNEL": "rounded"])
        #expect(c.status == 0 && c.out.contains("bf16 matmuls (rounded kernel)"), "\(c.out)")
        let wf = try weights(dir.appendingPathComponent("f32/step_00000003"))
        #expect(try weights(dir.appendingPathComponent("off/step_00000003")) == wf, "the fallback did not train as f32 bit for bit")
        #expect(try weights(dir.appendingPathComponent("rounded/step_00000003")) != wf, "the bf16 run trained as f32 bit for bit")
        // stopped after step 1 and resumed, the bf16 run ends bit for bit where the uninterrupted one did
        let resumed = try tinyYAML(dir, "resumed", edits: edits + [("lm_head_chunk: 96", "lm_head_chunk: 96\n  precision: bf16")])
        let env = ["DISTILL_BF16_KERNEL": "rounded"]
        let r1 = try launch("distill_mpi.sh", ["2", "train", "--config", resumed, "--sample-tokens", "0", "--stop-after", "1"], env: env)
        let r2 = try launch("distill_mpi.sh", ["2", "train", "--config", resumed, "--sample-tokens", "0", "--resume", "auto"], env: env)
        #expect(r1.status == 0 && r2.status == 0, "\(r1.out)\n\(r2.out)")
        #expect(try weights(dir.appendingPathComponent("resumed/step_00000003")) == weights(dir.appendingPathComponent("rounded/step_00000003")),
                "a resumed bf16 run is not the uninterrupted one bit for bit")
        // the final validation loss (every rank's view of the same weights) within 1% of f32's
        func valLoss(_ out: String) -> Double? {
            out.components(separatedBy: "val loss ").dropFirst().last.flatMap { Double($0.prefix { !$0.isWhitespace }) }
        }
        let (v32, v16) = (try #require(valLoss(a.out)), try #require(valLoss(c.out)))
        #expect(abs(v16 - v32) <= 0.01 * v32, "validation loss bf16 \(v16) vs f32 \(v32)")
        // a misspelt precision is refused in one line that names the choices
        let bad = try tinyYAML(dir, "bad", edits: [("lm_head_chunk: 96", "lm_head_chunk: 96\n  precision: bf61")])
        let d = try launch("distill_mpi.sh", ["1", "train", "--config", bad])
        #expect(d.status != 0 && d.out.contains("train.precision") && d.out.contains("'f32' or 'bf16'") && d.out.contains("bf61"), "\(d.out)")
    }

    @Test func onPolicyRolloutsDoNotDependOnTheWorldSize() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try saveTinyTeacher(dir.appendingPathComponent("teacher"), layers: 2, seed: 41)
        // MiniLLM: rollouts are drawn per global sample, returns whitened over the global batch. Two steps: the second
        // step's rollouts come from weights that differ by summation order only, and a third step's may already draw
        // one other token (seen on a Zen 5 machine: rewards −0.023 vs −0.022 at step 3, weights 4% apart)
        let section = "teacher:\n  path: \(dir.appendingPathComponent("teacher").path)\ndistill:\n  objective: rkl\npolicy:\n  mode: minillm\n  fraction: 1\n  prompt_tokens: 24\n"
        let edits = [("steps: 10", "steps: 2"), ("grad_accum: 2", "grad_accum: 1"), ("data:\n", section + "data:\n")]
        let two = try tinyYAML(dir, "two", edits: edits + [("micro_batch: 4", "micro_batch: 2")])
        let one = try tinyYAML(dir, "one", edits: edits)
        let a = try launch("distill_mpi.sh", ["2", "train", "--config", two, "--sample-tokens", "0"])
        #expect(a.status == 0 && a.out.contains("[rollout, reward"), "\(a.out)")
        let b = try launch("distill_mpi.sh", ["1", "train", "--config", one, "--sample-tokens", "0"])
        #expect(b.status == 0, "\(b.out)")
        // the same rollouts and rewards on 2 ranks × 2 as on 1 rank × 4 ...
        let parts = { (s: String) in s.split(separator: "\n").filter { $0.contains("[rollout") }.map { $0.components(separatedBy: " | lr")[0] } }
        #expect(parts(a.out) == parts(b.out) && parts(a.out).count == 2, "\(a.out)\n\(b.out)")
        // ... and the same weights up to summation order, which the policy-gradient coefficients amplify (they divide by
        // the returns' standard deviation and exponentiate log-ratios): 4e-5 measured, where one different token moves
        // the weights by more than 1e-3
        let worst = try relativeWeightDifference(dir.appendingPathComponent("two/step_00000002"), dir.appendingPathComponent("one/step_00000002"))
        #expect(worst < 2e-4, "max relative weight difference \(worst)")
        // the tolerance tells rollouts apart: another teacher mix (α 0.25) draws other tokens
        let other = try tinyYAML(dir, "other", edits: edits + [("prompt_tokens: 24", "prompt_tokens: 24\n  teacher_mix: 0.25")])
        #expect(try launch("distill_mpi.sh", ["1", "train", "--config", other, "--sample-tokens", "0"]).status == 0)
        let apart = try relativeWeightDifference(dir.appendingPathComponent("other/step_00000002"), dir.appendingPathComponent("one/step_00000002"))
        #expect(apart > 1e-3, "other rollouts moved the weights by only \(apart)")
    }

    /// How people start long runs (nohup, ssh, a scheduler's script): `LAUNCHER … &` from a non-interactive shell,
    /// which starts it with SIGINT ignored. `kill -INT` (and -TERM) to the launcher's pid must still stop the run after
    /// a step with a checkpoint that verifies, exit 0 and leave no rank behind; restart.sh must not restart it.
    @Test(arguments: [("distill_mpi.sh", "INT"), ("distill_mpi.sh", "TERM"), ("restart.sh", "INT")])
    func aLauncherStartedInTheBackgroundStopsGracefullyOnASignal(script: String, signal: String) throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cfg = try tinyYAML(dir, "bg", edits: [("steps: 10", "steps: 100000"), ("every: 5", "every: 0"), ("log_every: 1", "log_every: 20")])
        let log = dir.appendingPathComponent("log"), pidFile = dir.appendingPathComponent("pid"), rcFile = dir.appendingPathComponent("rc")
        let line = "DISTILL_BIN='\(try distillBinary().path)' '\(repoRoot.appendingPathComponent("Launch/\(script)").path)' 2 train --config '\(cfg)' "
            + "--sample-tokens 0 > '\(log.path)' 2>&1 & echo $! > '\(pidFile.path)'; wait $!; echo $? > '\(rcFile.path)'"
        // the test runner's threads block most signals and a blocked mask survives exec (mpirun would never see the
        // launcher's SIGUSR1): start the shell as a user's would be, with nothing blocked
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        shell.arguments = ["-c", "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execv('/bin/bash', ['bash', '-c', sys.argv[1]])", line]
        try shell.run()
        func text(_ u: URL) -> String { (try? String(contentsOf: u, encoding: .utf8)) ?? "" }
        let start = Date()
        while Date().timeIntervalSince(start) < 120, !text(log).contains("20/100000") { Thread.sleep(forTimeInterval: 0.1) }
        let pid = try #require(Int32(text(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(kill(pid, signal == "INT" ? SIGINT : SIGTERM) == 0)
        let sent = Date()
        while shell.isRunning, Date().timeIntervalSince(sent) < 90 { Thread.sleep(forTimeInterval: 0.1) }
        if shell.isRunning {
            Issue.record("the launcher ignored SIG\(signal) for 90 s")
            _ = try? runProcess(URL(fileURLWithPath: "/usr/bin/pkill"), ["-KILL", "-f", cfg])
        }
        shell.waitUntilExit()
        #expect(text(rcFile).trimmingCharacters(in: .whitespacesAndNewlines) == "0", "\(text(log))")
        #expect(text(log).contains("(checkpoint written)") && !text(log).contains("restart 1"), "\(text(log))")
        let store = dir.appendingPathComponent("bg")
        let names = try FileManager.default.contentsOfDirectory(atPath: store.path).filter { $0.hasPrefix("step_") }
        #expect(names.count == 1, "\(names)")
        if let name = names.first { #expect(try runDistill(["checkpoint", "verify", store.appendingPathComponent(name).path]).status == 0) }
        let left = try runProcess(URL(fileURLWithPath: "/usr/bin/pgrep"), ["-f", cfg])
        #expect(left.out.isEmpty, "processes left: \(left.out)")
    }

    /// Launch/chaos.sh with five kill -9s (the CI-sized chaos run): the run finishes, every checkpoint that verified
    /// still does or was retired by keep, and the final state equals the uninterrupted run's bit for bit.
    @Test func aChaosRunOfFiveKillsEndsInTheUninterruptedRunsState() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        // the script's default length for 5 kills (250 steps; ~70 s with the debug build, whose kernels are optimized)
        let r = try launch("chaos.sh", ["5"], env: ["CHAOS_DIR": dir.path, "CHAOS_SEED": "3"])
        #expect(r.status == 0, "\(r.out)")
        let row = r.out.split(separator: "\n").last { $0.hasPrefix("| ") && !$0.hasPrefix("| kills") } ?? ""
        #expect(row.hasPrefix("| 5 (") && row.hasSuffix("| yes |"), "\(r.out)")
    }

    @Test func resumeIsBitwiseExactAndWorksAtAnotherWorldSize() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let full = try tinyYAML(dir, "full"), split = try tinyYAML(dir, "split")
        #expect(try launch("distill_mpi.sh", ["2", "train", "--config", full, "--sample-tokens", "0"]).status == 0)
        let first = try launch("distill_mpi.sh", ["2", "train", "--config", split, "--sample-tokens", "0", "--stop-after", "3"])
        #expect(first.status == 0 && first.out.contains("stopped after step 3"), "\(first.out)")
        let second = try launch("distill_mpi.sh", ["2", "train", "--config", split, "--sample-tokens", "0", "--resume", "auto"])
        #expect(second.status == 0 && second.out.contains("resumed from"), "\(second.out)")
        for f in ["model.safetensors", "optimizer.safetensors"] {
            let a = try Data(contentsOf: dir.appendingPathComponent("full/step_00000010/\(f)"))
            let b = try Data(contentsOf: dir.appendingPathComponent("split/step_00000010/\(f)"))
            #expect(a == b, "\(f) differs after resume")
        }
        // a 2-rank checkpoint resumed on 1 rank continues from the same global sample cursor
        let one = try launch("distill_mpi.sh", ["1", "train", "--config", split, "--sample-tokens", "0",
                                                "--resume", dir.appendingPathComponent("split/step_00000005").path,
                                                "--checkpoint-dir", dir.appendingPathComponent("one").path])
        #expect(one.status == 0, "\(one.out)")
        let s5 = try CheckpointStore.verify(dir: dir.appendingPathComponent("split/step_00000005").path)
        let s10 = try CheckpointStore.verify(dir: dir.appendingPathComponent("one/step_00000010").path)
        #expect(s5.worldSize == 2 && s10.worldSize == 1)
        #expect(s10.sampleCursor == s5.sampleCursor + 5 * 8)  // 5 more steps of 1 rank × 4 × 2 samples
    }

    @Test func commCollectivesMatchANaiveReference() throws {
        // LocalCommunicator (no mpirun), then MPICommunicator on 2 and 3 ranks; 1001 Floats split unevenly (and one
        // empty piece on 3 ranks)
        let local = try runDistill(["comm-check"])
        #expect(local.status == 0 && local.out.contains("comm-check ok: 1 rank"), "\(local.out)")
        for n in ["2", "3"] {
            let r = try launch("distill_mpi.sh", [n, "comm-check", "--count", "1001"])
            #expect(r.status == 0 && r.out.contains("comm-check ok: \(n) ranks"), "\(r.out)")
        }
        // pieces above 2^20 Floats: a rank's range is reduced in several requests
        let big = try launch("distill_mpi.sh", ["2", "comm-check", "--count", "3000001"])
        #expect(big.status == 0 && big.out.contains("comm-check ok: 2 ranks, 3000001 floats"), "\(big.out)")
    }

    /// "step N/M | loss X" of a run's log, by step.
    func losses(_ out: String) -> [Int: Double] {
        var out2: [Int: Double] = [:]
        for line in out.split(separator: "\n") where line.hasPrefix("step ") {
            let f = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard f.count > 1, let s = Int(f[0].dropFirst(5).split(separator: "/")[0].trimmingCharacters(in: .whitespaces)),
                  let l = Double(f[1].split(separator: " ")[1]) else { continue }
            out2[s] = l
        }
        return out2
    }

    /// Tiny config with QAT (Q4_0, learned scales) and a sharding.
    func shardedYAML(_ dir: URL, _ name: String, _ sharding: String, accum: Int = 2) throws -> String {
        try tinyYAML(dir, name, edits: [("ffn_dim: 172", "ffn_dim: 192"), ("warmup_steps: 2", "warmup_steps: 2\n  sharding: \(sharding)"),
                                        ("grad_accum: 2", "grad_accum: \(accum)"),
                                        ("data:\n", "qat:\n  scheme: q4_0\n  scales: learned\n  start_step: 1\ndata:\n")])
    }

    @Test func shardedStatesAndGradientsTrainAsUnsharded() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        var runs: [String: [Int: Double]] = [:]
        for mode in ["none", "states", "gradients"] {
            let r = try launch("distill_mpi.sh", ["2", "train", "--config", try shardedYAML(dir, mode, mode), "--sample-tokens", "0"])
            #expect(r.status == 0, "\(r.out)")
            runs[mode] = losses(r.out)
        }
        let none = try #require(runs["none"])
        #expect(none.count == 10)
        // with 2 ranks a sum of two gradients is the same in any order; only the clipping norm is summed otherwise
        // (two Double partial sums of squares instead of one), which moves the weights by float rounding
        for mode in ["states", "gradients"] {
            for (s, l) in none { #expect(abs((runs[mode]?[s] ?? .nan) - l) < 2e-4, "\(mode) step \(s): \(runs[mode]?[s] ?? .nan) vs \(l)") }
            let worst = try relativeWeightDifference(dir.appendingPathComponent("\(mode)/step_00000010"), dir.appendingPathComponent("none/step_00000010"))
            #expect(worst < 1e-5, "\(mode): max relative weight difference \(worst)")
        }
        // the checkpoints hold the whole slab whatever the sharding: same tensors, same learned scales
        for f in ["optimizer.safetensors", "qat_scales.safetensors"] {
            let a = try SafetensorsFile(path: dir.appendingPathComponent("gradients/step_00000010/\(f)").path)
            let b = try SafetensorsFile(path: dir.appendingPathComponent("none/step_00000010/\(f)").path)
            #expect(a.tensors.map(\.name).sorted() == b.tensors.map(\.name).sorted() && !a.tensors.isEmpty)
        }
    }

    @Test func gradientsCheckpointResumesAtAnotherWorldSizeAndSharding() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let full = try launch("distill_mpi.sh", ["2", "train", "--config", try shardedYAML(dir, "full", "none"), "--sample-tokens", "0"])
        #expect(full.status == 0, "\(full.out)")
        let first = try launch("distill_mpi.sh", ["2", "train", "--config", try shardedYAML(dir, "zero2", "gradients"), "--sample-tokens", "0", "--stop-after", "3"])
        #expect(first.status == 0 && first.out.contains("stopped after step 3"), "\(first.out)")
        let ckpt = dir.appendingPathComponent("zero2/step_00000003").path
        // 1 rank, unsharded, 4 micro-batches (the same global batch of 16 windows); 2 ranks with sharded states
        let one = try launch("distill_mpi.sh", ["1", "train", "--config", try shardedYAML(dir, "one", "none", accum: 4), "--sample-tokens", "0",
                                                "--resume", ckpt])
        let two = try launch("distill_mpi.sh", ["2", "train", "--config", try shardedYAML(dir, "two", "states"), "--sample-tokens", "0",
                                                "--resume", ckpt])
        let want = losses(full.out)
        for (name, r) in [("one", one), ("two", two)] {
            #expect(r.status == 0 && r.out.contains("resumed from"), "\(r.out)")
            let got = losses(r.out)
            #expect(got.keys.sorted() == Array(4...10), "\(name): steps \(got.keys.sorted())")
            for (s, l) in got { #expect(abs((want[s] ?? .nan) - l) < 2e-4, "\(name) step \(s): \(l) vs uninterrupted \(want[s] ?? .nan)") }
            let worst = try relativeWeightDifference(dir.appendingPathComponent("\(name)/step_00000010"), dir.appendingPathComponent("full/step_00000010"))
            #expect(worst < 1e-5, "\(name): max relative weight difference \(worst)")
        }
    }

    @Test func killedMidCheckpointLosesNothingAndTheRestartLoopFinishes() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cfg = try tinyYAML(dir, "crash", edits: [("every: 5", "every: 3"), ("keep: 2", "keep: 5")])
        // one-shot: rank 0 SIGKILLs itself inside the second checkpoint write (step 6), after step 3's completed
        let marker = dir.appendingPathComponent("crashed").path
        let r = try launch("restart.sh", ["2", "train", "--config", cfg, "--sample-tokens", "0"],
                           env: ["DISTILL_CRASH_ONCE": marker, "DISTILL_CRASH_STEP": "6", "MAX_RESTARTS": "2", "RESTART_DELAY": "0"])
        #expect(r.status == 0, "\(r.out)")
        #expect(FileManager.default.fileExists(atPath: marker))
        #expect(r.out.contains("restart: the job failed"), "\(r.out)")
        #expect(r.out.contains("resumed from"), "\(r.out)")
        #expect(r.out.contains("ignoring unfinished step_00000006.tmp"), "\(r.out)")
        for step in [3, 6, 9, 10] {
            let d = dir.appendingPathComponent("crash/" + CheckpointStore.name(step: step)).path
            #expect(try CheckpointStore.verify(dir: d).step == step)
        }
        // the CLI verifier agrees, and rejects a corrupted copy
        #expect(try runDistill(["checkpoint", "verify", dir.appendingPathComponent("crash/step_00000010").path]).status == 0)
        let bad = dir.appendingPathComponent("crash/step_00000009/optimizer.safetensors")
        var bytes = try Data(contentsOf: bad)
        bytes[bytes.count - 1] ^= 0xFF
        try bytes.write(to: bad)
        let v = try runDistill(["checkpoint", "verify", dir.appendingPathComponent("crash/step_00000009").path])
        #expect(v.status == 1 && v.err.contains("optimizer.safetensors checksum"), "\(v.err)")
    }

    @Test func trainsAcrossTwoNetworkNamespacesOverTCP() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cfg = try tinyYAML(dir, "multihost")
        let r = try launch("test_multihost.sh", ["train", "--config", cfg, "--sample-tokens", "0", "--threads", "1"])
        #expect(r.status == 0, "\(r.out)")
        #expect(r.out.contains("on 2 ranks"), "\(r.out)")
        #expect(try CheckpointStore.verify(dir: dir.appendingPathComponent("multihost/step_00000010").path).worldSize == 2)
        // the same numbers as two ranks on one host
        let local = try launch("distill_mpi.sh", ["2", "train", "--config", cfg, "--sample-tokens", "0", "--threads", "1",
                                                  "--checkpoint-dir", dir.appendingPathComponent("local").path])
        #expect(local.status == 0)
        let a = try Data(contentsOf: dir.appendingPathComponent("multihost/step_00000010/model.safetensors"))
        let b = try Data(contentsOf: dir.appendingPathComponent("local/step_00000010/model.safetensors"))
        #expect(a == b)
    }

    @Test func pipelinedTeacherEqualsReplicatedTeacher() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        // a tiny byte-level teacher with 3 blocks (uneven stages on 2 ranks), saved as a Hugging Face folder
        try saveTinyTeacher(dir.appendingPathComponent("teacher"), layers: 3, seed: 77)
        let section = "teacher:\n  path: \(dir.appendingPathComponent("teacher").path)\n  placement: PLACE\ndistill:\n  objective: skew_rkl\n  kd_ratio: 0.7\n"
        let edits = [("steps: 10", "steps: 4"), ("data:\n", section.replacingOccurrences(of: "PLACE", with: "pipelined") + "data:\n")]
        let pipe = try tinyYAML(dir, "pipe", edits: edits)
        let repl = try tinyYAML(dir, "repl", edits: [edits[0], ("data:\n", section.replacingOccurrences(of: "PLACE", with: "replicated") + "data:\n")])
        let a = try launch("distill_mpi.sh", ["2", "train", "--config", pipe, "--sample-tokens", "0"])
        #expect(a.status == 0 && a.out.contains("skew_rkl"), "\(a.out)")
        let b = try launch("distill_mpi.sh", ["2", "train", "--config", repl, "--sample-tokens", "0"])
        #expect(b.status == 0, "\(b.out)")
        // the same teacher distributions reach the students: the runs are identical to the bit
        for f in ["model.safetensors", "optimizer.safetensors"] {
            #expect(try Data(contentsOf: dir.appendingPathComponent("pipe/step_00000004/\(f)")) == Data(contentsOf: dir.appendingPathComponent("repl/step_00000004/\(f)")))
        }
        let lossLines = { (s: String) in s.split(separator: "\n").filter { $0.hasPrefix("step") }.map { $0.components(separatedBy: " | lr")[0] } }
        #expect(lossLines(a.out) == lossLines(b.out) && lossLines(a.out).count == 4)
        // the top-k exchange (k = 16 of 256): pipelined stages return top-k rows, replicated ranks compute them locally
        let topk = "  exchange: topk\n  top_k: 16\ndistill:"
        let pk = try tinyYAML(dir, "pk", edits: [edits[0], ("data:\n", section.replacingOccurrences(of: "PLACE", with: "pipelined") + "data:\n"), ("distill:", topk)])
        let rk = try tinyYAML(dir, "rk", edits: [edits[0], ("data:\n", section.replacingOccurrences(of: "PLACE", with: "replicated") + "data:\n"), ("distill:", topk)])
        let c = try launch("distill_mpi.sh", ["2", "train", "--config", pk, "--sample-tokens", "0"])
        let d = try launch("distill_mpi.sh", ["2", "train", "--config", rk, "--sample-tokens", "0"])
        #expect(c.status == 0 && d.status == 0, "\(c.out)\n\(d.out)")
        #expect(c.out.contains("132 B/token to the student's rank"), "\(c.out)")
        #expect(try Data(contentsOf: dir.appendingPathComponent("pk/step_00000004/model.safetensors")) == Data(contentsOf: dir.appendingPathComponent("rk/step_00000004/model.safetensors")))
        #expect(lossLines(c.out) == lossLines(d.out) && lossLines(c.out) != lossLines(a.out))
    }

    @Test func teacherGroupsEqualReplicatedTeachers() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        // two different tiny byte-level teachers, one per rank group
        for (name, seed) in [("ta", UInt64(31)), ("tb", 32)] { try saveTinyTeacher(dir.appendingPathComponent(name), layers: 2, seed: seed) }
        let section = """
        teacher:
          members:
            - {path: \(dir.appendingPathComponent("ta").path), weight: 1}
            - {path: \(dir.appendingPathComponent("tb").path), weight: 3}
          placement: PLACE
        distill:
          objective: jsd
          kd_ratio: 0.7

        """
        func config(_ name: String, _ place: String, _ extra: String = "") throws -> String {
            try tinyYAML(dir, name, edits: [("steps: 10", "steps: 3"), ("data:\n", section.replacingOccurrences(of: "PLACE", with: place) + "data:\n"),
                                            ("distill:", extra + "distill:")])
        }
        let g = try launch("distill_mpi.sh", ["2", "train", "--config", try config("groups", "groups"), "--sample-tokens", "0"])
        #expect(g.status == 0 && g.out.contains("groups: 2 groups of 1 rank"), "\(g.out)")
        let r = try launch("distill_mpi.sh", ["2", "train", "--config", try config("repl", "replicated"), "--sample-tokens", "0"])
        #expect(r.status == 0, "\(r.out)")
        // each rank ran one teacher on both micro-batches and the results crossed over: the same run, to the bit
        #expect(try Data(contentsOf: dir.appendingPathComponent("groups/step_00000003/model.safetensors"))
                == Data(contentsOf: dir.appendingPathComponent("repl/step_00000003/model.safetensors")))
        // top-k exchange in groups: each teacher's rows are merged into the mixture at the owner (2 × 132 B/token)
        let k = try launch("distill_mpi.sh", ["2", "train", "--config", try config("gk", "groups", "  exchange: topk\n  top_k: 16\n"), "--sample-tokens", "0"])
        #expect(k.status == 0 && k.out.contains("264 B/token to the student's rank"), "\(k.out)")
        // a teacher count that does not divide the world size is refused with both numbers
        let bad = try launch("distill_mpi.sh", ["3", "train", "--config", try config("bad", "groups"), "--sample-tokens", "0"])
        #expect(bad.status != 0 && bad.out.contains("divisible by the 2 teachers") && bad.out.contains("3 ranks"), "\(bad.out)")
    }

    @Test func theHiddenStateLossIsTheSameWithEveryLivePlacement() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, seed) in [("ta", UInt64(51)), ("tb", 52)] { try saveTinyTeacher(dir.appendingPathComponent(name), layers: 3, seed: seed) }
        // a 2-block student cut from the first teacher (blocks 0 and 2) matching their outputs; pipelined on 2 ranks,
        // block 0 is on the first stage and block 2 on the second, so both outputs cross ranks to one owner
        let one = "teacher:\n  path: \(dir.appendingPathComponent("ta").path)\n  placement: PLACE\n"
        let two = "teacher:\n  members:\n    - {path: \(dir.appendingPathComponent("ta").path), weight: 1}\n"
            + "    - {path: \(dir.appendingPathComponent("tb").path), weight: 3}\n  placement: PLACE\n"
        let rest = "student:\n  init: from_teacher\n  layers: [0, 2]\ndistill:\n  objective: fkl\n  kd_ratio: 0.5\n  hidden_weight: 1\ndata:\n"
        func run(_ name: String, _ teacher: String, _ place: String) throws -> (status: Int32, out: String) {
            let cfg = try tinyYAML(dir, name, edits: [("dim: 64", "dim: 48"), ("ffn_dim: 172", "ffn_dim: 96"), ("steps: 10", "steps: 3"),
                                                     ("data:\n", teacher.replacingOccurrences(of: "PLACE", with: place) + rest)])
            return try launch("distill_mpi.sh", ["2", "train", "--config", cfg, "--sample-tokens", "0"])
        }
        let lossLines = { (s: String) in s.split(separator: "\n").filter { $0.hasPrefix("step") }.map { $0.components(separatedBy: " | lr")[0] } }
        func same(_ a: String, _ b: String) throws -> Bool {
            try Data(contentsOf: dir.appendingPathComponent("\(a)/step_00000003/model.safetensors"))
                == Data(contentsOf: dir.appendingPathComponent("\(b)/step_00000003/model.safetensors"))
        }
        let pipe = try run("pipe", one, "pipelined"), repl = try run("repl", one, "replicated")
        #expect(pipe.status == 0 && repl.status == 0, "\(pipe.out)\n\(repl.out)")
        // two blocks of 48 floats per token come back to the owner, reported beside the pipeline's own traffic
        #expect(pipe.out.contains("384 B/token of block outputs to the owner"), "\(pipe.out)")
        #expect(lossLines(pipe.out).count == 3 && lossLines(pipe.out).allSatisfy { $0.contains("hidden ") } && !lossLines(pipe.out)[0].contains("hidden 0.0000"),
                "\(lossLines(pipe.out))")
        let pipeSame = try same("pipe", "repl")
        #expect(lossLines(pipe.out) == lossLines(repl.out) && pipeSame)
        // groups: the first teacher's message carries its block outputs behind its final hidden states
        let groups = try run("groups", two, "groups"), repl2 = try run("repl2", two, "replicated")
        #expect(groups.status == 0 && repl2.status == 0, "\(groups.out)\n\(repl2.out)")
        let groupsSame = try same("groups", "repl2")
        #expect(lossLines(groups.out) == lossLines(repl2.out) && groupsSame, "\(lossLines(groups.out))\n\(lossLines(repl2.out))")
        #expect(lossLines(groups.out) != lossLines(pipe.out))
    }

    @Test func teacherCacheIsTheSameFromTwoRanksAndTrainsWithoutTheTeacher() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try saveTinyTeacher(dir.appendingPathComponent("teacher"), layers: 2, seed: 43)
        let live = try tinyYAML(dir, "live", edits: [("steps: 10", "steps: 2"),
            ("data:\n", "teacher:\n  path: \(dir.appendingPathComponent("teacher").path)\n  exchange: topk\n  top_k: 8\ndata:\n")])
        let two = try launch("distill_mpi.sh", ["2", "teacher-cache", "--config", live, "--out", dir.appendingPathComponent("c2").path, "--batch", "3", "--threads", "1"])
        #expect(two.status == 0 && two.out.contains("on 2 ranks"), "\(two.out)")
        let one = try launch("distill_mpi.sh", ["1", "teacher-cache", "--config", live, "--out", dir.appendingPathComponent("c1").path, "--batch", "3", "--threads", "1"])
        #expect(one.status == 0, "\(one.out)")
        // windows dealt to the ranks in slices of 3 and written by rank 0 in window order: the same file, to the bit (at
        // the same thread count and slice size; other batchings differ in summation order only)
        for f in ["train.topk", "validation.topk"] {
            let a = try Data(contentsOf: dir.appendingPathComponent("c2/\(f)")), b = try Data(contentsOf: dir.appendingPathComponent("c1/\(f)"))
            #expect(a.count > 0 && a == b, "\(f)")
        }
        // training from the cache on 2 ranks: no teacher loaded, resumable, and the manifest names the cache
        let cached = try tinyYAML(dir, "cached", edits: [("steps: 10", "steps: 2"), ("data:\n", "teacher:\n  cache: \(dir.appendingPathComponent("c2").path)\ndata:\n")])
        let t = try launch("distill_mpi.sh", ["2", "train", "--config", cached, "--sample-tokens", "0"])
        #expect(t.status == 0 && t.out.contains("no teacher in memory") && t.out.contains("step     2/2"), "\(t.out)")
        // a cache that does not exist is named
        let missing = try tinyYAML(dir, "missing", edits: [("data:\n", "teacher:\n  cache: \(dir.appendingPathComponent("nope").path)\ndata:\n")])
        let m = try launch("distill_mpi.sh", ["1", "train", "--config", missing])
        #expect(m.status != 0 && m.out.contains("no cache.json"), "\(m.out)")
    }
}
