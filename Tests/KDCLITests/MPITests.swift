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
        try a.withUnsafeMutableBufferPointer { try f.read(t, into: $0.baseAddress!) }
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

    /// Two ranks on one host exchange through shared memory in a folder of the launcher's own (Open MPI's vader; the
    /// all-reduce then runs behind backward), or over TCP where this kernel refuses process_vm_readv; a kill -9 of
    /// mpirun leaves nothing of it in /dev/shm (vader's own segments would stay there).
    @Test func twoRanksOnOneHostShareMemoryAndAKilledMpirunLeavesNoSegments() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cfg = try tinyYAML(dir, "shm", edits: [("steps: 10", "steps: 100000"), ("every: 5", "every: 0"), ("log_every: 1", "log_every: 20")])
        let log = dir.appendingPathComponent("log")
        let job = Process()
        job.executableURL = URL(fileURLWithPath: "/bin/bash")
        job.arguments = ["-c", "'\(repoRoot.appendingPathComponent("Launch/distill_mpi.sh").path)' 2 train --config '\(cfg)' --sample-tokens 0 > '\(log.path)' 2>&1"]
        job.environment = ProcessInfo.processInfo.environment.merging(["DISTILL_BIN": try distillBinary().path]) { _, b in b }
        try job.run()
        func text(_ u: URL) -> String { (try? String(contentsOf: u, encoding: .utf8)) ?? "" }
        let start = Date()
        while Date().timeIntervalSince(start) < 120, !text(log).contains("20/100000") { Thread.sleep(forTimeInterval: 0.1) }
        // the folders of /dev/shm this job's processes map
        let pids = try runProcess(URL(fileURLWithPath: "/usr/bin/pgrep"), ["-f", cfg]).out.split(separator: "\n")
        let mapped = Set(pids.flatMap { pid in
            text(URL(fileURLWithPath: "/proc/\(pid)/maps")).split(separator: "\n").compactMap { line -> String? in
                guard let r = line.range(of: "/dev/shm/") else { return nil }
                return (line[r.lowerBound...] as Substring).split(separator: "/").prefix(3).joined(separator: "/")
            }
        })
        if processVMReadvWorks() {
            #expect(mapped.count == 1 && mapped.first!.hasPrefix("dev/shm/distill-mpi."), "\(mapped) \(text(log))")
        } else {
            #expect(mapped.isEmpty, "\(mapped)")
        }
        _ = try runProcess(URL(fileURLWithPath: "/usr/bin/pkill"), ["-KILL", "-f", "^mpirun .*\(cfg)"])
        let killed = Date()
        while job.isRunning, Date().timeIntervalSince(killed) < 60 { Thread.sleep(forTimeInterval: 0.1) }
        if job.isRunning { _ = try? runProcess(URL(fileURLWithPath: "/usr/bin/pkill"), ["-KILL", "-f", cfg]) }
        job.waitUntilExit()
        #expect(job.terminationStatus != 0, "mpirun was killed: the launcher must not report success")
        for folder in mapped { #expect(!FileManager.default.fileExists(atPath: "/" + folder), "/\(folder) left behind") }
        // the ranks notice their lost daemon and end
        var left = try runProcess(URL(fileURLWithPath: "/usr/bin/pgrep"), ["-f", cfg])
        while !left.out.isEmpty, Date().timeIntervalSince(killed) < 60 {
            Thread.sleep(forTimeInterval: 0.2)
            left = try runProcess(URL(fileURLWithPath: "/usr/bin/pgrep"), ["-f", cfg])
        }
        #expect(left.out.isEmpty, "processes left a minute after mpirun's kill: \(left.out)")
        if !left.out.isEmpty { _ = try? runProcess(URL(fileURLWithPath: "/usr/bin/pkill"), ["-KILL", "-f", cfg]) }
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

    /// A rank stopped with SIGSTOP after step 6 (as a node that stops answering): the other rank waits in its next
    /// collective, its watchdog (train.hang_timeout 8 s) ends it with exit code 75 and a line naming the rank, the step
    /// and the MPI call, mpirun ends the job, restart.sh relaunches it from step 5's checkpoint, and the run ends in the
    /// uninterrupted run's state bit for bit.
    @Test func aStoppedRankEndsTheJobAtTheHangTimeoutAndTheRestartLoopFinishes() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let edits = [("steps: 10", "steps: 10\n  hang_timeout: 8")]
        let reference = try tinyYAML(dir, "reference", edits: edits), hung = try tinyYAML(dir, "hung", edits: edits)
        #expect(try launch("distill_mpi.sh", ["2", "train", "--config", reference, "--sample-tokens", "0"]).status == 0)
        let marker = dir.appendingPathComponent("stopped").path
        let start = Date()
        let r = try launch("restart.sh", ["2", "train", "--config", hung, "--sample-tokens", "0"],
                           env: ["DISTILL_STOP_ONCE": marker, "DISTILL_STOP_STEP": "6", "MAX_RESTARTS": "2", "RESTART_DELAY": "0"])
        let took = Date().timeIntervalSince(start)
        #expect(r.status == 0, "\(r.out)")
        #expect(FileManager.default.fileExists(atPath: marker))
        let line = r.out.split(separator: "\n").first { $0.contains("no progress for") }.map(String.init) ?? ""
        #expect(line.contains("rank 0") && line.contains("in step 7") && line.contains("waiting in MPI_") && line.contains("exit code 75"), "\(r.out)")
        #expect(r.out.contains("restart: the job failed (exit code 75)") && r.out.contains("resumed from"), "\(r.out)")
        #expect(took < 150, "the hung job took \(took) s to end and finish")
        let a = dir.appendingPathComponent("reference/" + CheckpointStore.name(step: 10)), b = dir.appendingPathComponent("hung/" + CheckpointStore.name(step: 10))
        let wa = try weights(a), wb = try weights(b)
        #expect(!wa.isEmpty && wa.keys.allSatisfy { k in wa[k]!.map(\.bitPattern) == wb[k]?.map(\.bitPattern) }, "final weights differ from the uninterrupted run's")
        let left = try runProcess(URL(fileURLWithPath: "/usr/bin/pgrep"), ["-f", hung])
        #expect(left.out.isEmpty, "processes left: \(left.out)")
    }

    /// The whole job suspended for longer than train.hang_timeout (every process SIGSTOPped, as Ctrl-Z or Slurm's
    /// `scontrol suspend` does, then SIGCONTinued): no rank judges itself hung for the time it did not run, and the run
    /// finishes with the uninterrupted run's weights bit for bit.
    @Test func aSuspendedAndResumedJobCarriesOn() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let edits = [("steps: 10", "steps: 300\n  hang_timeout: 5"), ("every: 5", "every: 100")]
        let reference = try tinyYAML(dir, "reference", edits: edits), suspended = try tinyYAML(dir, "suspended", edits: edits)
        #expect(try launch("distill_mpi.sh", ["2", "train", "--config", reference, "--sample-tokens", "0"]).status == 0)
        // a script, so that the pattern its pgrep looks for is in no command line of its own
        let script = dir.appendingPathComponent("suspend.sh"), log = dir.appendingPathComponent("suspended.log").path
        try """
            "$LAUNCH" 2 train --config "$CFG" --sample-tokens 0 > "$LOG" 2>&1 &
            job=$!
            for i in $(seq 1 1200); do grep -q '^step    20/' "$LOG" && break; sleep 0.05; done
            pids=$(pgrep -f "distill train --config $CFG")
            kill -STOP $pids; echo "stopped $(echo $pids | wc -w) processes at: $(grep '^step' "$LOG" | tail -1 | cut -c1-14)"
            sleep 8
            kill -CONT $pids
            wait $job; echo "job exit $?"
            """.write(to: script, atomically: true, encoding: .utf8)
        let r = try runProcess(URL(fileURLWithPath: "/bin/bash"), [script.path], in: repoRoot,
                               env: ["LAUNCH": repoRoot.appendingPathComponent("Launch/distill_mpi.sh").path, "CFG": suspended, "LOG": log,
                                     "DISTILL_BIN": try distillBinary().path], mergeOutput: true)
        let out = r.out + ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
        // the job was caught mid-run (mpirun and both ranks stopped) and ended on its own, not by its watchdog
        #expect(r.out.contains("stopped 3 processes at: step") && !r.out.contains("step   300/300"), "\(out)")
        #expect(r.out.contains("job exit 0") && !out.contains("no progress for"), "\(out)")
        let a = dir.appendingPathComponent("reference/" + CheckpointStore.name(step: 300)), b = dir.appendingPathComponent("suspended/" + CheckpointStore.name(step: 300))
        let wa = try weights(a), wb = try weights(b)
        #expect(!wa.isEmpty && wa.keys.allSatisfy { k in wa[k]!.map(\.bitPattern) == wb[k]?.map(\.bitPattern) }, "final weights differ from the uninterrupted run's")
    }

    /// A checkpoint disk that fills up: a 2 MiB tmpfs holds step 5's checkpoint (1.3 MiB) but not step 10's (where the
    /// machine cannot mount one, the writer's DISTILL_ENOSPC_STEP hook fails it with ENOSPC instead). The job ends with
    /// exit code 74 and a line giving the bytes needed and free, restart.sh does not restart it, no partial checkpoint is
    /// left, and step 5's still verifies and resumes.
    @Test func aFullCheckpointDiskStopsTheJobAndLosesNothing() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let mountPoint = dir.appendingPathComponent("small")
        try FileManager.default.createDirectory(at: mountPoint, withIntermediateDirectories: true)
        let mounted = (try? runProcess(URL(fileURLWithPath: "/bin/mount"), ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mountPoint.path]))?.status == 0
        defer { if mounted { _ = try? runProcess(URL(fileURLWithPath: "/bin/umount"), [mountPoint.path]) } }
        let cfg = try tinyYAML(mountPoint, "full")
        let r = try launch("restart.sh", ["2", "train", "--config", cfg, "--sample-tokens", "0"],
                           env: mounted ? [:] : ["DISTILL_ENOSPC_STEP": "10"])
        #expect(r.status == 74, "\(r.out)")
        #expect(r.out.contains("no space for the checkpoint of step 10") && r.out.contains("MiB free") && r.out.contains("needs about"), "\(r.out)")
        #expect(r.out.contains("not restarting") && !r.out.contains("restart 1 of"), "\(r.out)")
        let store = mountPoint.appendingPathComponent("full")
        let names = try FileManager.default.contentsOfDirectory(atPath: store.path).filter { $0.hasPrefix("step_") }
        #expect(names == [CheckpointStore.name(step: 5)], "left behind: \(names)")
        #expect(try CheckpointStore.verify(dir: store.appendingPathComponent(CheckpointStore.name(step: 5)).path).step == 5)
        print("full-disk test: \(mounted ? "a real 2 MiB tmpfs" : "no mount allowed here; the writer's ENOSPC hook")")
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
        let r = try launch("lab/test_multihost.sh", ["train", "--config", cfg, "--sample-tokens", "0", "--threads", "1"])
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

    /// A per-rank memory cap smaller than the teacher (cgroup v1 `memory.limit_in_bytes` or v2 `memory.max`, one
    /// cgroup per rank, entered by a wrapper before exec): a synthetic teacher of 586 MiB (20 × 1024 blocks in F16,
    /// a tied 49,152 × 1024 embedding) under a 520 MiB cap per rank. Replicated stops at the plan, before loading, with
    /// the fix; pipelined on 2 ranks fits, trains, checkpoints, resumes, and ends bitwise where an uncapped run ends.
    @Test func aRankCappedBelowTheTeacherTrainsPipelinedAndReplicatedStopsAtThePlan() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cap = 520 << 20
        // a cgroup per rank, if this machine lets us make them
        let tag = "distill-test-\(getpid())"
        let v1 = "/sys/fs/cgroup/memory", v2 = "/sys/fs/cgroup"
        var groups: [String] = []
        var limitFile = ""
        for (root, file) in [(v1, "memory.limit_in_bytes"), (v2, "memory.max")] where groups.isEmpty {
            let made = (0..<2).map { "\(root)/\(tag)-\($0)" }
            if made.allSatisfy({ (try? FileManager.default.createDirectory(atPath: $0, withIntermediateDirectories: false)) != nil
                                    && (try? "\(cap)".write(toFile: "\($0)/\(file)", atomically: false, encoding: .utf8)) != nil }) {
                groups = made
                limitFile = file
            } else {
                for g in made { try? FileManager.default.removeItem(atPath: g) }
            }
        }
        defer { for g in groups { _ = rmdir(g) } }
        guard !groups.isEmpty else {
            print("memory-cap test: this machine allows no memory cgroup here; the capped run is not exercised")
            return
        }
        let wrapper = dir.appendingPathComponent("capped.sh")
        try """
        #!/bin/bash
        echo $$ > \(groups[0].dropLast())${OMPI_COMM_WORLD_RANK:-0}/cgroup.procs || exit 97
        exec \(try distillBinary().path) "$@"
        """.write(to: wrapper, atomically: true, encoding: .utf8)
        _ = chmod(wrapper.path, 0o755)

        let t = dir.appendingPathComponent("t.gguf")
        try syntheticTeacher(t, ["--layers", "20", "--dim", "1024", "--ffn", "2816", "--heads", "16", "--kv-heads", "8", "--type", "F16", "--tied"])
        let fileBytes = try FileManager.default.attributesOfItem(atPath: t.path)[.size] as! Int
        #expect(fileBytes > cap, "the teacher (\(fileBytes >> 20) MiB) must be larger than the cap")
        let data = try smolShards(dir)
        func config(_ name: String, placement: String, steps: Int) throws -> String {
            try planYAML(dir, name, teacher: t.path, data: data, teacherLines: "  placement: \(placement)",
                         student: "layers: 2, dim: 64, heads: 4, kv_heads: 2, ffn_dim: 192",
                         train: "steps: \(steps), micro_batch: 2, eval_batches: 1, lm_head_chunk: 64")
        }
        func capped(_ args: [String]) throws -> (status: Int32, out: String) {
            let r = try runProcess(URL(fileURLWithPath: "/bin/bash"), [repoRoot.appendingPathComponent("Launch/distill_mpi.sh").path] + args,
                                   in: repoRoot, env: ["DISTILL_BIN": wrapper.path], mergeOutput: true)
            return (r.status, r.out)
        }
        // replicated: each rank's plan holds the whole teacher and stops before loading it
        let rep = try capped(["2", "train", "--config", try config("replicated", placement: "replicated", steps: 2)])
        #expect(rep.status != 0 && rep.out.contains("memory plan of rank") && rep.out.contains("what this rank can have")
                && rep.out.contains("teacher.placement: pipelined"), "\(rep.out)")
        #expect(rep.out.contains("cgroup limit 0.51 GiB"), "the limit is the rank's cgroup's: \(rep.out)")
        // pipelined: 2 steps, a checkpoint, a resume to 3, under the cap
        let pipe = try config("pipelined", placement: "pipelined", steps: 3)
        let a = try capped(["2", "train", "--config", pipe, "--sample-tokens", "0", "--stop-after", "2"])
        #expect(a.status == 0 && a.out.contains("step     2/3"), "\(a.out)")
        let b = try capped(["2", "train", "--config", pipe, "--sample-tokens", "0", "--resume", "auto"])
        #expect(b.status == 0 && b.out.contains("resumed from") && b.out.contains("step     3/3"), "\(b.out)")
        let peaks = try #require(b.out.split(separator: "\n").last { $0.contains("peak RSS per rank") }, "\(b.out)")
        print("memory-cap test (\(limitFile) \(cap >> 20) MiB per rank, teacher \(fileBytes >> 20) MiB): \(peaks)")
        // the same run uncapped, straight through: bitwise equal
        let free = try config("free", placement: "pipelined", steps: 3)
        let c = try launch("distill_mpi.sh", ["2", "train", "--config", free, "--sample-tokens", "0"])
        #expect(c.status == 0, "\(c.out)")
        let wa = try weights(dir.appendingPathComponent("ckpt-pipelined/step_00000003")), wb = try weights(dir.appendingPathComponent("ckpt-free/step_00000003"))
        #expect(!wa.isEmpty && wa == wb, "capped and uncapped runs differ")
    }
}

/// Whether this process may read its own memory through process_vm_readv (what Open MPI's vader calls for single
/// copies between ranks; a seccomp profile can forbid it).
func processVMReadvWorks() -> Bool {
    // Glibc's module map leaves the _GNU_SOURCE declaration out: the symbol, looked up in libc itself
    typealias ReadV = @convention(c) (pid_t, UnsafePointer<iovec>?, UInt, UnsafePointer<iovec>?, UInt, UInt) -> Int
    guard let sym = dlsym(dlopen(nil, RTLD_NOW), "process_vm_readv") else { return false }
    let process_vm_readv = unsafeBitCast(sym, to: ReadV.self)
    var src: [UInt8] = Array("distill!".utf8), dst = [UInt8](repeating: 0, count: 8)
    let n = src.withUnsafeMutableBytes { s in
        dst.withUnsafeMutableBytes { d in
            var local = iovec(iov_base: d.baseAddress, iov_len: 8), remote = iovec(iov_base: s.baseAddress, iov_len: 8)
            return process_vm_readv(getpid(), &local, 1, &remote, 1, 0)
        }
    }
    return n == 8 && dst == src
}
