// bf16 training (train.precision bf16): a whole-model finite-difference check means nothing at bf16's 8 bits, so the
// bf16 step is checked against the f32 step instead — its gradient (student and teacher matmuls in bf16) and where 50
// steps of training get to. `.rounded` gives bf16's numbers on any CPU; `.emulated` runs the AVX512-BF16 kernel's
// own source on a portable emulation of its instructions; `.avx512` runs where the CPU has them.
import KDConfig
import KDCore
import KDData
import KDModel
import KDOps
import KDTrain
import Testing

private let cpuKernels: [BF16Kernel] = BF16.cpuHasAVX512BF16 ? [.avx512] : []

/// One step of the tiny config distilling from a random in-memory teacher (kd_ratio 0.5, no clipping, one warmup
/// step): `step(kernel)` runs it from the same initial weights in that kernel's matmuls (nil = f32) and returns the
/// gradient and the loss.
private func oneDistillationStep() throws -> (_ kernel: BF16Kernel?) throws -> (g: [Float], loss: Double) {
    var c = try tinyConfig()
    c.train.steps = 1
    c.train.gradAccum = 1
    c.teacher = TeacherConfig()
    c.teacher!.path = "in-memory"
    c.distill.kdRatio = 0.5
    c.optimizer.gradClip = 0
    c.optimizer.warmupSteps = 1
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    let teacher = Transformer(config: c.model, needsGrad: false)
    teacher.initialize(seed: 99)
    return { kernel in
        let tr = try Trainer(config: c, corpus: corpus, teacher: teacher)
        let s = try BF16.$kernel.withValue(kernel) { try tr.trainStep() }
        return (tr.model.grads!.toArray(), s.loss)
    }
}

/// One distillation step (kd_ratio 0.5, a random teacher, no clipping) from the same initial weights in f32 and in
/// bf16: cosine(g_bf16, g_f32) ≥ 0.999 and ‖g_bf16 − g_f32‖ / ‖g_f32‖ ≤ 0.01 — 5× bf16's unit roundoff (2⁻⁹; measured 1.4×) for
/// rounding at every matmul of a 2-block forward and backward; and > 1e-4, so the step really ran in bf16.
@Test(arguments: [BF16Kernel.rounded, .emulated] + cpuKernels)
func bf16StepsGradientIsF32sWithinBF16Error(kernel: BF16Kernel) throws {
    let gradient = try oneDistillationStep()
    let (g32, l32) = try gradient(nil), (g16, l16) = try gradient(kernel)
    var dot = 0.0, n32 = 0.0, n16 = 0.0, diff = 0.0
    for (a, b) in zip(g32, g16) {
        dot += Double(a) * Double(b)
        n32 += Double(a) * Double(a)
        n16 += Double(b) * Double(b)
        diff += Double(a - b) * Double(a - b)
    }
    let cosine = dot / (n32.squareRoot() * n16.squareRoot()), rel = (diff / n32).squareRoot()
    #expect(cosine >= 0.999, "\(kernel): cosine \(cosine)")
    #expect(rel <= 0.01, "\(kernel): relative error \(rel)")
    #expect(rel > 1e-4, "\(kernel): the gradient is f32's (relative difference \(rel))")
    #expect(abs(l16 - l32) <= 0.01 * l32, "\(kernel): loss \(l16) vs f32 \(l32)")
    print("bf16 (\(kernel)) step gradient vs f32: cosine \(cosine), relative error \(rel); loss \(l16) vs \(l32)")
}

/// A bf16 distillation step (a random teacher, kd_ratio 0.5) gives the same loss and gradient bit for bit whichever
/// way the AVX512-BF16 kernel forms its products (vdpbf16ps, or widened to f32 and FMAs: the default on Intel's CPUs),
/// so a run and its checkpoints do not depend on the choice; and the bf16 step is not f32's (the kernel ran).
@Test(.enabled(if: BF16.cpuHasAVX512BF16, "the vdpbf16ps products need AVX512-BF16"))
func aBF16StepIsTheSameWithEitherProducts() throws {
    let gradient = try oneDistillationStep()
    func step(_ k: BF16Kernel?, _ products: BF16Products) throws -> (g: [Float], loss: Double) {
        try BF16.$productsOverride.withValue(products) { try gradient(k) }
    }
    let dp = try step(.avx512, .vdpbf16ps), fma = try step(.avx512, .fma), f32 = try step(nil, .fma)
    #expect(dp.loss.bitPattern == fma.loss.bitPattern, "loss \(dp.loss) with vdpbf16ps, \(fma.loss) with fma")
    let differing = zip(dp.g, fma.g).filter { $0.bitPattern != $1.bitPattern }.count
    #expect(differing == 0, "\(differing) of \(dp.g.count) gradient entries differ")
    #expect(dp.g != f32.g, "the bf16 step's gradient is f32's: did the kernel run?")
}

/// 50 steps of the tiny config in bf16 reach a validation loss within 1% of f32's (same seed, same data).
@Test(arguments: [BF16Kernel.rounded] + cpuKernels)
func fiftyBF16StepsReachF32sValidationLossWithinOnePercent(kernel: BF16Kernel) throws {
    var c = try tinyConfig()
    c.train.steps = 50
    let corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    func validation(_ k: BF16Kernel?) throws -> (val: Double, last: Double) {
        let tr = try Trainer(config: c, corpus: corpus)
        return try BF16.$kernel.withValue(k) {
            let stats = try tr.run()
            return (try tr.evaluate(teacher: false)!.mean, stats.last!.loss)
        }
    }
    let f32 = try validation(nil), bf16 = try validation(kernel)
    #expect(abs(bf16.val - f32.val) <= 0.01 * f32.val, "\(kernel): validation loss \(bf16.val) vs f32 \(f32.val)")
    #expect(bf16.last != f32.last, "\(kernel): the bf16 run's losses are f32's")
    print("50 steps, validation loss: f32 \(f32.val), bf16 (\(kernel)) \(bf16.val)")
}
