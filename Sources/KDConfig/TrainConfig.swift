// The `train` section of a run config (the loop's batch geometry, length, logging). Keys are snake_case, every field has a default,
// unknown keys and out-of-range values fail while decoding.

/// `train.precision`: the operands of the linear layers' matmuls (teacher forward, student forward and backward).
public enum Precision: String, ConfigVocabulary {
    /// f32 operands and accumulation (OpenBLAS sgemm).
    case f32
    /// bf16 operands, f32 accumulation (AVX512-BF16); weights, gradients, optimizer state, norms, softmax and losses
    /// stay f32. A CPU without AVX512-BF16 computes in f32 after one warning line.
    case bf16
}

/// The training loop: batch geometry, length, logging.
public struct TrainConfig: Codable, Equatable, Sendable {
    /// Optimizer steps to run. Default 100.
    public var steps = 100
    /// Sequences per micro-batch (per rank). Default 8.
    public var microBatch = 8
    /// Micro-batches accumulated into one optimizer step. Default 1.
    public var gradAccum = 1
    /// Tokens per training sequence. Default 128.
    public var seqLen = 128
    /// Seed of every random stream (init, data order, sampling). Default 1234.
    public var seed: UInt64 = 1234
    /// Print a progress line every this many steps. Default 10.
    public var logEvery = 10
    /// Evaluate on the validation split every this many steps; 0 = only at the end. Default 0.
    public var evalEvery = 0
    /// Validation micro-batches per evaluation. Default 4.
    public var evalBatches = 4
    /// Compute threads for kernels and BLAS; 0 = all cores. Default 0.
    public var threads = 0
    /// Rows of logits materialized at once by the chunked LM head. Default 256.
    public var lmHeadChunk = 256
    /// Operands of the linear layers' matmuls. Default f32.
    public var precision = Precision.f32
    /// Seconds without progress (a finished step, checkpoint or evaluation) after which a rank ends itself with exit
    /// code 75, so a job with a stopped or hung rank ends and Launch/restart.sh relaunches it; 0 = no watchdog.
    /// Must exceed the longest step plus a checkpoint write and an evaluation.
    public var hangTimeout: Double = 600

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case steps, microBatch = "micro_batch", gradAccum = "grad_accum", seqLen = "seq_len", seed
        case logEvery = "log_every", evalEvery = "eval_every", evalBatches = "eval_batches", threads
        case lmHeadChunk = "lm_head_chunk", precision, hangTimeout = "hang_timeout"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        steps = try c.value(.steps, or: steps)
        microBatch = try c.value(.microBatch, or: microBatch)
        gradAccum = try c.value(.gradAccum, or: gradAccum)
        seqLen = try c.value(.seqLen, or: seqLen)
        seed = try c.value(.seed, or: seed)
        logEvery = try c.value(.logEvery, or: logEvery)
        evalEvery = try c.value(.evalEvery, or: evalEvery)
        evalBatches = try c.value(.evalBatches, or: evalBatches)
        threads = try c.value(.threads, or: threads)
        lmHeadChunk = try c.value(.lmHeadChunk, or: lmHeadChunk)
        precision = try c.value(.precision, or: precision)
        hangTimeout = try c.value(.hangTimeout, or: hangTimeout)
        try c.require(steps >= 1, .steps, expected: "an integer >= 1", found: steps)
        try c.require(microBatch >= 1, .microBatch, expected: "an integer >= 1", found: microBatch)
        try c.require(gradAccum >= 1, .gradAccum, expected: "an integer >= 1", found: gradAccum)
        try c.require(seqLen >= 2, .seqLen, expected: "an integer >= 2", found: seqLen)
        try c.require(logEvery >= 1, .logEvery, expected: "an integer >= 1", found: logEvery)
        try c.require(evalEvery >= 0, .evalEvery, expected: "an integer >= 0", found: evalEvery)
        try c.require(evalBatches >= 1, .evalBatches, expected: "an integer >= 1", found: evalBatches)
        try c.require(threads >= 0, .threads, expected: "an integer >= 0 (0 = all cores)", found: threads)
        try c.require(lmHeadChunk >= 1, .lmHeadChunk, expected: "an integer >= 1", found: lmHeadChunk)
        try c.require(hangTimeout == 0 || (hangTimeout >= 5 && hangTimeout <= 7 * 86400), .hangTimeout,
                      expected: "seconds in 5...604800, or 0 (no watchdog)", found: hangTimeout)
    }
}
