// The training loop: micro-batches from the global sample cursor, gradient accumulation, loss normalized by the
// global loss-token count, clipping, AdamW with warmup + cosine, progress lines. Single process for now; every
// cross-rank step already goes through the Communicator so the MPI issue only swaps the implementation.
import Foundation
import KDComm
import KDConfig
import KDCore
import KDData
import KDModel
import KDOps

/// What one optimizer step did.
public struct StepStats: Sendable {
    public var step: Int
    public var loss: Double
    public var tokens: Int
    public var lr: Float
    public var gradNorm: Double
    public var seconds: Double
}

/// Trains a student on next-token cross-entropy.
public final class Trainer {
    public let config: RunConfig
    public let model: Transformer
    public let comm: any Communicator
    let sampler: WindowSampler
    let validation: WindowSampler?
    let adamM: Slab, adamV: Slab
    /// Next global sample index; every rank advances it by the global batch each step.
    public private(set) var sampleCursor = 0
    /// Optimizer steps completed.
    public private(set) var step = 0
    let inputs: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>

    public init(config: RunConfig, corpus: TokenCorpus, comm: any Communicator = LocalCommunicator()) throws {
        try config.validate()
        self.config = config
        self.comm = comm
        let t = config.train
        guard corpus.vocabSize <= config.model.vocabSize else {
            throw KDError.invalidInput(what: "model.vocab_size", expected: ">= the data's vocabulary (\(corpus.vocabSize) tokens)",
                                       found: "\(config.model.vocabSize)")
        }
        sampler = try WindowSampler(stream: corpus.train, mask: corpus.trainMask, seqLen: t.seqLen, seed: t.seed)
        validation = corpus.validation.count > t.seqLen
            ? try WindowSampler(stream: corpus.validation, mask: corpus.validationMask, seqLen: t.seqLen, seed: t.seed, split: "validation") : nil
        model = Transformer(config: config.model, needsGrad: true, lmHeadChunk: t.lmHeadChunk)
        model.initialize(seed: t.seed)
        adamM = Slab(count: model.layout.count)
        adamV = Slab(count: model.layout.count)
        let rows = t.gradAccum * t.microBatch * t.seqLen
        inputs = .allocate(capacity: rows)
        targets = .allocate(capacity: rows)
    }

    deinit {
        inputs.deallocate()
        targets.deallocate()
    }

    /// Samples per optimizer step over all ranks.
    public var globalBatch: Int { config.train.microBatch * config.train.gradAccum * comm.worldSize }

    /// One optimizer step: every micro-batch's forward and backward, all-reduce, clip, AdamW.
    public func trainStep() throws -> StepStats {
        let t = config.train, o = config.optimizer
        let start = monotonicSeconds()
        let perMicro = t.microBatch * t.seqLen
        // this rank's samples: a contiguous slice of the global batch, so the cursor is world-size independent
        let rankFirst = sampleCursor + comm.rank * t.microBatch * t.gradAccum
        sampler.fill(inputs: inputs, targets: targets, first: rankFirst, count: t.microBatch * t.gradAccum)
        // normalize by the global number of loss tokens, counted before any forward
        var counts = [Double((0..<(perMicro * t.gradAccum)).reduce(0) { $0 + (targets[$1] >= 0 ? 1 : 0) })]
        try comm.allReduceSum(&counts)
        let scale = Float(1 / max(counts[0], 1))
        model.grads!.zero()
        var local = LossSum()
        for micro in 0..<t.gradAccum {
            model.forward(tokens: inputs + micro * perMicro, b: t.microBatch, t: t.seqLen)
            local = local + model.backward(targets: targets + micro * perMicro, lossScale: scale)
        }
        let g = model.grads!
        try comm.allReduceSum(g.base, count: g.count)
        var lossSum = [local.sum]
        try comm.allReduceSum(&lossSum)
        let loss = lossSum[0] / max(counts[0], 1)
        let norm = clipGradNorm(g.base, count: g.count, maxNorm: o.gradClip)
        guard loss.isFinite else { throw KDError.nonFinite(what: "training loss", step: step + 1) }
        guard norm.isFinite else { throw KDError.nonFinite(what: "gradient norm", step: step + 1) }
        let lr = o.learningRate(step: step, total: t.steps)
        for e in model.layout.entries {
            adamWUpdate(param: model.params.base + e.offset, grad: g.base + e.offset, m: adamM.base + e.offset,
                        v: adamV.base + e.offset, count: e.count,
                        step: AdamWStep(lr: lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps,
                                        weightDecay: e.isMatrix ? o.weightDecay : 0, t: step + 1))
        }
        step += 1
        sampleCursor += globalBatch
        return StepStats(step: step, loss: loss, tokens: Int(counts[0]), lr: lr, gradNorm: norm,
                         seconds: monotonicSeconds() - start)
    }

    /// Mean cross-entropy over `config.train.evalBatches` sequential validation micro-batches (nil without a split).
    public func evaluate() -> Double? {
        guard let validation else { return nil }
        let t = config.train
        var total = LossSum()
        for i in 0..<t.evalBatches {
            validation.fillSequential(inputs: inputs, targets: targets, first: i * t.microBatch, count: t.microBatch)
            model.forward(tokens: inputs, b: t.microBatch, t: t.seqLen)
            total = total + model.loss(targets: targets)
        }
        return total.mean
    }

    /// Runs the remaining steps, logging every `log_every` steps and evaluating on cadence; returns every step's stats.
    @discardableResult
    public func run(onStep: (StepStats) -> Void = { _ in }) throws -> [StepStats] {
        let t = config.train
        var history: [StepStats] = []
        let begin = monotonicSeconds()
        var tokensSeen = 0
        while step < t.steps {
            let s = try trainStep()
            history.append(s)
            tokensSeen += s.tokens
            onStep(s)
            if s.step % t.logEvery == 0 || s.step == 1 || s.step == t.steps {
                let elapsed = monotonicSeconds() - begin
                let tps = Double(tokensSeen) / elapsed
                let eta = elapsed / Double(history.count) * Double(t.steps - s.step)
                KDLog.info(String(format: "step %5d/%d | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | ETA %@",
                                  s.step, t.steps, s.loss, s.lr, s.gradNorm, tps, formatDuration(eta)))
            }
            if t.evalEvery > 0, s.step % t.evalEvery == 0, let v = evaluate() {
                KDLog.info(String(format: "eval  step %5d | val loss %.4f | val ppl %.2f", s.step, v, Foundation.exp(v)))
            }
        }
        return history
    }
}

/// "1h02m", "3m05s", "12s".
public func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    if s >= 3600 { return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60) }
    if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
    return "\(s)s"
}
