// `distill bench`: times a student training step and a forward-only pass on named shapes, against the machine's
// measured sgemm peak on the same thread count. Medians over repeats; peak RSS per measurement.
import CBLAS
import Foundation
import KDConfig
import KDCore
import KDLoss
import KDModel
import KDOps
import KDQuant

/// A named model shape and the mode it is benchmarked in by default.
public struct BenchShape: Sendable {
    public let name: String
    public let model: ModelConfig
    public let defaultModes: [BenchMode]

    public init(name: String, model: ModelConfig, defaultModes: [BenchMode]) {
        self.name = name
        self.model = model
        self.defaultModes = defaultModes
    }

    public static func llama(layers: Int, dim: Int, heads: Int, kvHeads: Int, ffn: Int, vocab: Int) -> ModelConfig {
        var m = ModelConfig()
        m.layers = layers; m.dim = dim; m.heads = heads; m.kvHeads = kvHeads; m.ffnDim = ffn; m.vocabSize = vocab
        m.maxSeqLen = 2048
        return m
    }

    public static let all: [BenchShape] = [
        BenchShape(name: "smollm2-135m", model: llama(layers: 30, dim: 576, heads: 9, kvHeads: 3, ffn: 1536, vocab: 49152),
                   defaultModes: [.forward]),
        BenchShape(name: "student-8x384", model: llama(layers: 8, dim: 384, heads: 6, kvHeads: 2, ffn: 1024, vocab: 49152),
                   defaultModes: [.train, .forward]),
        // the student of the PyTorch peer's preset B (run it with --seq 128)
        BenchShape(name: "tiny", model: llama(layers: 2, dim: 128, heads: 4, kvHeads: 4, ffn: 344, vocab: 4096),
                   defaultModes: [.train, .forward]),
    ]

    public static func named(_ name: String) -> BenchShape? { all.first { $0.name == name } }
}

/// train: a student step (CE); forward: forward + loss; kd: a full distillation step with the smollm2-135m-shaped
/// teacher (random dense weights, as the PyTorch peer uses): teacher forward, student forward, FKL + CE, backward, AdamW.
public enum BenchMode: String, Sendable, CaseIterable { case train, forward, kd }

/// One measurement, as printed by `distill bench --json`.
public struct BenchResult: Codable, Sendable {
    public var shape: String
    public var mode: String
    public var threads: Int
    public var batch: Int
    public var seq: Int
    public var repeats: Int
    public var medianSeconds: Double
    public var tokensPerS: Double
    /// FLOPs per token assumed (see ModelConfig.forwardFLOPsPerToken; training = 3× forward).
    public var flopsPerToken: Double
    public var gflops: Double
    /// The GEMM peak of this precision (f32: sgemm; bf16: the bf16 kernel), what MFU divides by.
    public var sgemmPeakGflops: Double
    public var mfu: Double
    public var peakRSSBytes: Int
    /// "f32", or "bf16" with its kernel ("bf16-avx512", "bf16-rounded", …).
    public var precision = "f32"
    /// With the AVX512-BF16 kernel: how it formed its products (``BF16Products``: "vdpbf16ps" or "fma").
    public var bf16Products: String?
    /// With `--breakdown`: milliseconds per step by "phase/op class" (``StepPhase``, ``OpClass``), and the step's mean
    /// milliseconds over the same repeats (the breakdown's 100%).
    public var breakdownMS: [String: Double]?
    public var breakdownStepMS: Double?

    enum CodingKeys: String, CodingKey {
        case shape, mode, threads, batch, seq, repeats
        case medianSeconds = "median_s", tokensPerS = "tokens_per_s", flopsPerToken = "flops_per_token", gflops
        case sgemmPeakGflops = "sgemm_peak_gflops", mfu, peakRSSBytes = "peak_rss_bytes", precision
        case bf16Products = "bf16_products"
        case breakdownMS = "breakdown_ms", breakdownStepMS = "breakdown_step_ms"
    }
}

/// Sets the kernels' thread count (OpenBLAS stays on one thread: ``gemm`` splits f32 products over these).
public func configureThreads(_ n: Int) {
    let t = n > 0 ? n : ProcessInfo.processInfo.activeProcessorCount
    Parallel.threads = t
}

public func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Best GFLOP/s of `repeats` square GEMMs (2048³ by default) in the task's precision (``BF16/kernel``; f32 = sgemm) on the
/// current thread count. The best, not the median: a peak is what the hardware can do, and a noisy neighbour only ever
/// lowers it (keeping MFU conservative).
public func measureSGEMMPeak(size: Int = 2048, repeats: Int = 10) -> Double {
    measureGEMM(m: size, n: size, k: size, transB: false, repeats: repeats)
}

/// Best GFLOP/s of `repeats` GEMMs C [m, n] = A [m, k] · op(B) in the task's precision, after one warm-up call; `transB`
/// = B stored [n, k], as a linear layer's forward multiplies by its weight.
public func measureGEMM(m: Int, n: Int, k: Int, transB: Bool, repeats: Int) -> Double {
    let a = Slab(count: m * k), b = Slab(count: k * n), c = Slab(count: m * n)
    for i in 0..<(m * k) { a.base[i] = Float(i % 7) * 0.01 }
    for i in 0..<(k * n) { b.base[i] = Float(i % 5) * 0.01 }
    var times: [Double] = []
    for r in 0...repeats {
        let t0 = monotonicSeconds()
        gemm(transA: false, transB: transB, m: m, n: n, k: k, alpha: 1, a: a.base, lda: k, b: b.base, ldb: transB ? k : n,
             beta: 0, c: c.base, ldc: n)
        if r > 0 { times.append(monotonicSeconds() - t0) }  // the first call warms up threads and pages
    }
    return 2 * Double(m) * Double(n) * Double(k) / times.min()! / 1e9
}

/// Times `repeats` steps (after one warm-up) of `mode` on `shape` with random weights and tokens; or, when `load`
/// is given, forward passes of the model it returns (a real teacher, weights as stored), named `shape.name`. The kd
/// mode's teacher is dense, or in GGUF blocks of `teacherType` (as a user's teacher file is).
/// With `breakdown`, the timed steps run with ``StepProfile`` recording (its cost is in their times too).
public func runBenchmark(shape: BenchShape, mode: BenchMode, threads: Int, batch: Int, seq: Int, repeats: Int,
                         sgemmPeak: Double, lmHeadChunk: Int = 256, load: (() throws -> Transformer)? = nil,
                         breakdown: Bool = false, divergence: Divergence = .forwardKL, teacherType: GGMLType? = nil) throws -> BenchResult {
    var m = shape.model
    m.maxSeqLen = max(m.maxSeqLen, seq)
    ProcessMemory.resetPeak()
    let n = batch * seq
    let rng = CounterRNG(seed: 42, purpose: .bench)
    let model: Transformer
    if let load {
        model = try load()
        m = model.config
        model.lmHeadChunk = lmHeadChunk
    } else {
        model = Transformer(config: m, needsGrad: mode != .forward, lmHeadChunk: lmHeadChunk)
        model.initialize(seed: 1)
    }
    // a forward-only model is measured as a bf16 run uses a teacher: its dense matrices packed once (RunSetup.makeTrainer)
    if mode == .forward, BF16.panelKernel != nil { model.packDenseMatricesBF16() }
    let tokens = (0..<n).map { Int32(rng.index(m.vocabSize, UInt64($0))) }
    let targets = (0..<n).map { Int32(rng.index(m.vocabSize, UInt64($0), 1)) }
    let training = mode != .forward
    let adamM = training ? Slab(count: model.layout.count) : nil
    let adamV = training ? Slab(count: model.layout.count) : nil
    var teacher: Transformer?
    if mode == .kd {
        var tm = BenchShape.named("smollm2-135m")!.model
        tm.vocabSize = m.vocabSize
        tm.maxSeqLen = max(tm.maxSeqLen, seq)
        teacher = Transformer(config: tm, needsGrad: false, lmHeadChunk: lmHeadChunk)
        teacher!.initialize(seed: 2)
        // stored as a GGUF teacher is (`teacherType`), or as a bf16 run packs a dense one (RunSetup.makeTrainer)
        if let teacherType { teacher!.quantizeDenseMatrices(teacherType) }
        else if BF16.panelKernel != nil { teacher!.packDenseMatricesBF16() }
    }
    var times: [Double] = []
    func step(_ r: Int) {
        let t0 = monotonicSeconds()
        tokens.withUnsafeBufferPointer { tk in targets.withUnsafeBufferPointer { tg in
            if training, let g = model.grads, let am = adamM, let av = adamV {
                g.zero()
                var target: DistillTarget?
                if let teacher {
                    teacher.forward(tokens: tk.baseAddress!, b: batch, t: seq)
                    target = DistillTarget(teacherHead: teacher.lmHeadWeight, teacherHidden: teacher.finalHidden, divergence: divergence,
                                           temperature: 1, kdRatio: 0.5, t2Scale: false)
                }
                model.forward(tokens: tk.baseAddress!, b: batch, t: seq)
                model.backward(targets: tg.baseAddress!, lossScale: 1 / Float(n), distill: target)
                StepProfile.phase(.optimizer) {
                    clipGradNorm(g.base, count: g.count, maxNorm: 1)
                    adamWUpdate(param: model.params.base, grad: g.base, m: am.base, v: av.base, count: g.count,
                                step: AdamWStep(lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, t: r + 1))
                }
            } else {
                model.forward(tokens: tk.baseAddress!, b: batch, t: seq)
                _ = model.loss(targets: tg.baseAddress!)
            }
        } }
        if r > 0 { times.append(monotonicSeconds() - t0) }  // the first step warms up threads and pages
    }
    step(0)
    var parts: [StepPhase: [OpClass: Double]]?
    if breakdown {
        parts = StepProfile.record { for r in 1...repeats { step(r) } }
    } else {
        for r in 1...repeats { step(r) }
    }
    let med = median(times)
    var flops = mode == .forward ? m.forwardFLOPsPerToken(seqLen: seq) : m.trainFLOPsPerToken(seqLen: seq)
    if let teacher { flops += teacher.config.forwardFLOPsPerToken(seqLen: seq) }
    let tps = Double(n) / med
    let gflops = tps * flops / 1e9
    var result = BenchResult(shape: shape.name, mode: mode.rawValue, threads: threads, batch: batch, seq: seq, repeats: repeats,
                             medianSeconds: med, tokensPerS: tps, flopsPerToken: flops, gflops: gflops,
                             sgemmPeakGflops: sgemmPeak, mfu: gflops / sgemmPeak, peakRSSBytes: ProcessMemory.peakRSSBytes(),
                             precision: BF16.label, bf16Products: BF16.activeProducts?.rawValue)
    if let parts {
        var ms: [String: Double] = [:]
        for (p, ops) in parts { for (o, s) in ops where s > 0 { ms["\(p.label)/\(o.label)"] = 1000 * s / Double(repeats) } }
        result.breakdownMS = ms
        result.breakdownStepMS = 1000 * times.reduce(0, +) / Double(times.count)
    }
    return result
}
