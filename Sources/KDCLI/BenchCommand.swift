// `distill bench`: tokens/s, GFLOP/s, MFU and peak memory of a training step and a forward pass on named shapes.
import ArgumentParser
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDData
import KDFormats
import KDLoss
import KDModel
import KDOps
import KDQuant
import KDTrain

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time a training step and a forward pass on named shapes (build with -c release).")

    @Option(name: .customLong("shape"), parsing: .singleValue,
            help: "Shape to measure (repeatable): \(BenchShape.all.map(\.name).joined(separator: ", ")). Default: smollm2-135m and student-8x384.")
    var shapes: [String] = []
    @Option(help: "Modes: train, forward, kd (distillation step from a smollm2-135m-shaped teacher), both (train + forward), or all; default: each shape's own.")
    var mode: String?
    @Option(help: "Comma-separated thread counts.") var threads = "1,2"
    @Option(help: "Sequences per step.") var batch = 8
    @Option(help: "Tokens per sequence.") var seq = 256
    @Option(help: "Timed repeats per measurement (after one warm-up); the median is reported.") var repeats = 5
    @Option(help: "Comma-separated precisions: f32, bf16 (bf16 is skipped with a warning on a CPU without AVX512-BF16; DISTILL_BF16_KERNEL picks another kernel).")
    var precision = "f32"
    @Option(help: "Time the GEMM alone on these shapes instead of models: comma-separated MxNxK (C[M,N] = A[M,K]·B[N,K]ᵀ, a linear layer's forward), best of --repeats.")
    var gemm: String?
    @Option(help: "Rows of the LM head's logits per chunk (the run config's train.lm_head_chunk).") var lmHeadChunk = TrainConfig().lmHeadChunk
    @Option(help: "The kd mode's divergence, as distill.objective names it (its parameters at their defaults): fkl, rkl, skew_fkl, skew_rkl, jsd, tvd, fkl_rkl.")
    var objective = "fkl"
    @Flag(help: "Time QAT's fake quantization alone instead (one thread, a 576 × 1536 matrix, every block scheme; the k-quants and IQ4_NL also one (sub-)block at a time, as ggml's reference searches): ms per million weights, best of --repeats.")
    var fakeQuant = false
    @Flag(help: "One JSON object per measurement.") var json = false
    @Flag(help: "Also print where each step's time goes: teacher forward, student forward, loss, backward, exchange, optimizer, QAT, each by GEMM, attention and the rest.")
    var breakdown = false
    @Option(help: "Measure the forward pass of this model (GGUF or Hugging Face folder, weights as stored) instead of named shapes.")
    var model: String?
    @Option(help: "The kd mode's teacher in GGUF blocks of this type (q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q6_k, iq4_nl, ...), held as a teacher file is (on a CPU with AVX512-VNNI, Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K multiply in 8-bit integers in bf16, and in f32 with --teacher-products int8), instead of dense weights (bf16 panels in bf16: what the PyTorch peer multiplies).")
    var teacherType: String?
    @Option(help: "How a quantized teacher's matrices multiply, as teacher.products: auto (8-bit integers in bf16 on a CPU with AVX512-VNNI), int8 (in f32 too), float (dequantized).")
    var teacherProducts = "auto"

    /// `--teacher-type` as a GGUF type.
    var teacherGGMLType: GGMLType? { teacherType.flatMap { t in GGMLType.allCases.first { $0.description.lowercased() == t.lowercased() } } }

    /// The divergence `--objective` names, with distill's default parameters.
    var divergence: Divergence {
        var d = DistillConfig()
        d.objective = Objective(rawValue: objective)!
        return d.divergence
    }

    var gemmShapes: [(m: Int, n: Int, k: Int)] {
        (gemm ?? "").split(separator: ",").compactMap {
            let d = $0.split(separator: "x").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            return d.count == 3 && d.allSatisfy { $0 > 0 } ? (d[0], d[1], d[2]) : nil
        }
    }
    var precisions: [Precision] { precision.split(separator: ",").compactMap { Precision(rawValue: $0.trimmingCharacters(in: .whitespaces)) } }
    var threadCounts: [Int] { threads.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    func validate() throws {
        for s in shapes where BenchShape.named(s) == nil {
            throw ValidationError("--shape: expected one of \(BenchShape.all.map(\.name).joined(separator: ", ")), found '\(s)'")
        }
        if let mode, !["train", "forward", "kd", "both", "all"].contains(mode) {
            throw ValidationError("--mode: expected train, forward, kd, both or all, found '\(mode)'")
        }
        let counts = threadCounts
        if counts.isEmpty || counts.contains(where: { $0 < 1 }) || counts.count != threads.split(separator: ",").count {
            throw ValidationError("--threads: expected comma-separated integers >= 1, found '\(threads)'")
        }
        if precisions.isEmpty || precisions.count != precision.split(separator: ",", omittingEmptySubsequences: false).count {
            throw ValidationError("--precision: expected comma-separated f32 or bf16, found '\(precision)'")
        }
        if let gemm, gemmShapes.isEmpty || gemmShapes.count != gemm.split(separator: ",", omittingEmptySubsequences: false).count {
            throw ValidationError("--gemm: expected comma-separated MxNxK with positive sizes (e.g. 2048x2048x2048), found '\(gemm)'")
        }
        guard Objective(rawValue: objective) != nil else {
            throw ValidationError("--objective: expected one of \(Objective.allCases.map(\.rawValue).joined(separator: ", ")), found '\(objective)'")
        }
        if let teacherType {
            let blockTypes = GGMLType.allCases.filter { ![.f32, .f16, .bf16].contains($0) }
            guard let t = teacherGGMLType, blockTypes.contains(t) else {
                throw ValidationError("--teacher-type: expected one of \(blockTypes.map { $0.description.lowercased() }.joined(separator: ", ")), found '\(teacherType)'")
            }
            guard t.blockSize == 32 || 576 % t.blockSize == 0 else {
                throw ValidationError("--teacher-type: the smollm2-135m-shaped teacher's 576-wide rows do not take \(t)'s blocks of \(t.blockSize); expected a type with blocks of 32")
            }
        }
        guard TeacherProducts(rawValue: teacherProducts) != nil else {
            throw ValidationError("--teacher-products: expected one of \(TeacherProducts.allCases.map(\.rawValue).joined(separator: ", ")), found '\(teacherProducts)'")
        }
        if batch < 1 || seq < 2 || repeats < 1 || lmHeadChunk < 1 {
            throw ValidationError("--batch, --seq, --repeats, --lm-head-chunk: expected >= 1, >= 2, >= 1, >= 1, found \(batch), \(seq), \(repeats), \(lmHeadChunk)")
        }
    }

    func run() throws {
        var chosen = (shapes.isEmpty ? ["smollm2-135m", "student-8x384"] : shapes).compactMap(BenchShape.named)
        var load: (() throws -> Transformer)?
        if let model {
            let probe = try openModel(path: model, maxSeqLen: seq)
            chosen = [BenchShape(name: (model as NSString).lastPathComponent, model: probe.model.config, defaultModes: [.forward])]
            load = { try openModel(path: model, maxSeqLen: self.seq).model }
        }
        #if DEBUG
        KDLog.error("warning: debug build; figures are meaningless. Build with: swift build -c release")
        #endif
        if fakeQuant { return measureFakeQuantization() }
        try reportBLASCore()
        var kernels: [BF16Kernel?] = []
        for p in precisions {
            let (kernel, warning) = try BF16.resolve(bf16: p == .bf16, environment: ProcessInfo.processInfo.environment, setting: "bench --precision",
                                                     fallback: "bf16 not measured")
            if let warning {
                KDLog.error(warning)
                continue
            }
            kernels.append(kernel)
        }
        for t in threadCounts {
            configureThreads(t)
            for kernel in kernels {
                try withTeacherProducts(TeacherProducts(rawValue: teacherProducts)!) { try BF16.$kernel.withValue(kernel) {
                    if gemm != nil { try measureGEMMs(threads: t) } else { try measure(chosen, threads: t, load: load) }
                } }
            }
        }
    }

    /// `--fake-quant`: QAT's fake quantization of a 576 × 1536 matrix (SmolLM2's ffn_down) in every block scheme.
    func measureFakeQuantization() {
        let rows = 576, c = 1536, n = rows * c
        var rng = SystemRandomNumberGenerator()
        let x = (0..<n).map { _ in Float.random(in: -0.05...0.05, using: &rng) }
        var out = [Float](repeating: 0, count: n), mask = out
        var blocks = [UInt8](repeating: 0, count: GGMLType.q8_0.byteCount(elements: n))
        func best(_ body: () -> Void) -> Double {
            (0..<max(repeats, 1)).map { _ in
                let t0 = monotonicSeconds()
                body()
                return monotonicSeconds() - t0
            }.min()! * 1000 / (Double(n) / 1e6)
        }
        for scheme in FakeQuantScheme.allCases where scheme.ggmlType != nil {
            let ms = best {
                out.withUnsafeMutableBufferPointer { o in mask.withUnsafeMutableBufferPointer { m in
                    fakeQuantize(scheme, src: x, rows: rows, c: c, out: o.baseAddress!, mask: m.baseAddress!) } }
            }
            var line = String(format: "fake-quant %-5@ | %7.2f ms per million weights", "\(scheme.ggmlType!)", ms)
            var ref: Double?
            if let t = scheme.ggmlType, t.blockSize == 256 {
                let q = best { blocks.withUnsafeMutableBytes { b in quantize(t, src: x, count: n, out: b.baseAddress!) } }
                ref = best { blocks.withUnsafeMutableBytes { b in quantizeKQuantOneSubBlockAtATime(t, src: x, count: n, out: b.baseAddress!) } }
                line += String(format: " | quantize alone %7.2f, one sub-block at a time %7.2f", q, ref!)
            } else if scheme == .iq4_nl {
                let q = best { blocks.withUnsafeMutableBytes { b in quantize(.iq4_nl, src: x, count: n, out: b.baseAddress!) } }
                ref = best { blocks.withUnsafeMutableBytes { b in quantizeIQ4NLOneBlockAtATime(src: x, count: n, out: b.baseAddress!) } }
                line += String(format: " | quantize alone %7.2f, one block at a time %7.2f", q, ref!)
            } else if scheme == .mxfp4 {
                let q = best { blocks.withUnsafeMutableBytes { b in quantize(.mxfp4, src: x, count: n, out: b.baseAddress!) } }
                ref = best { blocks.withUnsafeMutableBytes { b in quantizeMXFP4ScanningCodes(src: x, count: n, out: b.baseAddress!) } }
                line += String(format: " | quantize alone %7.2f, scanning the codes %7.2f", q, ref!)
            }
            print(json ? "{\"fake_quant\":\"\(scheme)\",\"ms_per_million\":\(String(format: "%.3f", ms))\(ref.map { ",\"reference_quantize_ms_per_million\":\(String(format: "%.3f", $0))" } ?? "")}" : line)
        }
        // the schemes an importance matrix weighs (qat.importance), with one spread over three decades as llama-imatrix's are
        let w = (0..<c).map { _ in Float(Foundation.exp(Double.random(in: -3...3, using: &rng))) }
        w.withUnsafeBufferPointer { wp in
            let im = Importance(weights: wp.baseAddress!, perRow: c)
            for scheme in [FakeQuantScheme.q4_0, .q5_0, .q4_1, .q5_1, .iq4_nl, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K] {
                let t = scheme.ggmlType!
                let ms = best {
                    out.withUnsafeMutableBufferPointer { o in mask.withUnsafeMutableBufferPointer { m in
                        fakeQuantize(scheme, src: x, rows: rows, c: c, out: o.baseAddress!, mask: m.baseAddress!, importance: im) } }
                }
                var ref: Double?
                if t.blockSize == 256 {
                    ref = best { blocks.withUnsafeMutableBytes { b in quantizeKQuantOneSubBlockAtATime(t, src: x, count: n, out: b.baseAddress!, importance: im) } }
                } else if scheme != .iq4_nl {
                    ref = best { blocks.withUnsafeMutableBytes { b in quantizeWeightedOneBlockAtATime(t, src: x, count: n, out: b.baseAddress!, importance: im) } }
                }
                let line = String(format: "fake-quant %-5@ with an importance matrix | %7.2f ms per million weights", "\(t)", ms)
                    + (ref.map { String(format: " | one block at a time %7.2f", $0) } ?? "")
                print(json ? "{\"fake_quant\":\"\(scheme)+importance\",\"ms_per_million\":\(String(format: "%.3f", ms))\(ref.map { ",\"reference_quantize_ms_per_million\":\(String(format: "%.3f", $0))" } ?? "")}" : line)
            }
        }
    }

    /// `--gemm`: each shape's best GFLOP/s on `threads` threads in the task's precision.
    func measureGEMMs(threads t: Int) throws {
        let products = BF16.activeProducts?.rawValue, precision = BF16.label + (products.map { "·\($0)" } ?? "")
        for s in gemmShapes {
            let g = measureGEMM(m: s.m, n: s.n, k: s.k, transB: true, repeats: repeats)
            if json {
                print("{\"gemm\":\"\(s.m)x\(s.n)x\(s.k)\",\"gflops\":\(String(format: "%.2f", g)),\"precision\":\"\(BF16.label)\","
                      + (products.map { "\"bf16_products\":\"\($0)\"," } ?? "") + "\"threads\":\(t)}")
            } else {
                print(String(format: "gemm %5dx%5dx%5d %@ threads %d | %7.1f GFLOP/s (best of %d)", s.m, s.n, s.k, precision, t, g, repeats))
            }
            fflush(nil)
        }
    }

    /// Every mode of every shape on `threads` threads in the task's precision, against that precision's GEMM peak.
    func measure(_ chosen: [BenchShape], threads t: Int, load: (() throws -> Transformer)?) throws {
        let peak = measureSGEMMPeak()
        for s in chosen {
            let modes: [BenchMode] = load != nil ? [.forward] : mode.map {
                $0 == "both" ? [.train, .forward] : $0 == "all" ? BenchMode.allCases : [BenchMode(rawValue: $0)!]
            } ?? s.defaultModes
            for md in modes {
                let r = try runBenchmark(shape: s, mode: md, threads: t, batch: batch, seq: seq, repeats: repeats, sgemmPeak: peak,
                                         lmHeadChunk: lmHeadChunk, load: load, breakdown: breakdown, divergence: divergence,
                                         teacherType: teacherGGMLType)
                if json {
                    let enc = JSONEncoder()
                    enc.outputFormatting = [.sortedKeys]
                    print(String(decoding: try enc.encode(r), as: UTF8.self))
                } else {
                    let kd = teacherGGMLType.map { "kd \($0)" + (QuantizedMatrix.takesInt8($0) ? "·int8" : "") }
                    print(String(format: "%-14@ %-7@ %-12@ threads %d | %7.0f tok/s | %6.1f GFLOP/s (%.1f MFLOP/token) | gemm peak %6.1f | MFU %4.1f%% | peak RSS %5.0f MiB",
                                 s.name, md == .kd && kd != nil ? kd! : md.rawValue, r.precision + (r.bf16Products.map { "·\($0)" } ?? ""), t, r.tokensPerS, r.gflops, r.flopsPerToken / 1e6, r.sgemmPeakGflops,
                                 100 * r.mfu, Double(r.peakRSSBytes) / 1048576))
                    printBreakdown(r)
                }
                fflush(nil)
            }
        }
    }

    /// `--breakdown`: milliseconds per step and share of the step by phase and op class.
    func printBreakdown(_ r: BenchResult) {
        guard let ms = r.breakdownMS, let step = r.breakdownStepMS, step > 0 else { return }
        func cell(_ v: Double) -> String { v > 0 ? String(format: "%8.1f %5.1f%%", v, 100 * v / step) : String(repeating: " ", count: 15) + "–" }
        let ops = OpClass.allCases
        print(String(format: "  breakdown (ms per step, %% of the %.1f ms step; profiling on):", step))
        print("  " + "phase".padding(toLength: 36, withPad: " ", startingAt: 0)
              + (ops.map(\.label) + ["total"]).map { $0.padding(toLength: 16, withPad: " ", startingAt: 0) }.joined())
        var tracked = 0.0
        for p in StepPhase.allCases {
            let v = ops.map { ms["\(p.label)/\($0.label)"] ?? 0 }, total = v.reduce(0, +)
            guard total > 0 else { continue }
            tracked += total
            print("  " + p.label.padding(toLength: 36, withPad: " ", startingAt: 0) + (v + [total]).map { cell($0) + " " }.joined())
        }
        print("  " + "outside the phases".padding(toLength: 36, withPad: " ", startingAt: 0)
              + String(repeating: " ", count: 16 * ops.count) + cell(max(0, step - tracked)))
    }

    /// Which OpenBLAS kernels run; when the environment forces a core older than the CPU (OPENBLAS_CORETYPE=Haswell on
    /// an AVX-512 CPU), a warning with the cost measured here: one thread's 2048³ sgemm under the forced core, and under
    /// OpenBLAS's own choice in a child process with the variables unset.
    func reportBLASCore() throws {
        let env = ProcessInfo.processInfo.environment, core = BLASCore.current
        KDLog.error("OpenBLAS \(core) kernels")
        guard let forced = BLASCore.forcedOlder(flags: BLASCore.cpuFlags(), current: core, environment: env), env["DISTILL_BENCH_CHILD"] == nil else { return }
        configureThreads(1)
        let here = measureSGEMMPeak(repeats: 3)
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        child.arguments = ["bench", "--gemm", "2048x2048x2048", "--threads", "1", "--repeats", "3", "--json"]
        var childEnv = env
        childEnv["OPENBLAS_CORETYPE"] = nil
        childEnv["OPENBLAS_L2_SIZE"] = nil
        childEnv["DISTILL_BENCH_CHILD"] = "1"
        child.environment = childEnv
        let out = Pipe()
        child.standardOutput = out
        child.standardError = FileHandle.nullDevice
        try child.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        child.waitUntilExit()
        let own = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["gflops"] as? Double
        KDLog.error("warning: OPENBLAS_CORETYPE=\(forced) forces \(core) kernels on a CPU with AVX-512: one thread's sgemm runs at "
                    + String(format: "%.0f GFLOP/s here", here)
                    + (own.map { String(format: " against %.0f with the variable unset (%.2f×)", $0, $0 / max(here, 1e-9)) } ?? "")
                    + "; a user's machine runs OpenBLAS's own choice (on Zen 4, whose AVX-512 is two 256-bit halves, the two are "
                    + "close; on Zen 5 and Intel the AVX-512 kernels are about twice as fast): measure with "
                    + "`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE distill bench ...`")
    }
}
