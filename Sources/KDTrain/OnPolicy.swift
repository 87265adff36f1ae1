// On-policy distillation: sequences the student writes itself.
//   gkd       a fixed fraction λ of steps trains on fresh student continuations (GKD, Agarwal et al. 2024)
//   distillm  a step is student-generated with an adaptive probability that rises when the validation loss rises;
//             such a step is fresh with a share that decays over training, otherwise replayed from a FIFO buffer
//             (DistiLLM, Ko et al. 2024)
//   minillm   rollouts drawn token by token from α·p + (1 − α)·q; per-token reward r_t = log p(y_t) − log q(y_t);
//             long-term return R_{t+1} = Σ_{s>t} γ^{s−t−1} r_s / (number of terms), whitened over the global batch;
//             clipped surrogate min(w·A, clip(w)·A) with w = q(y_t)/p̃(y_t), whose gradient is a per-token weighted
//             cross-entropy; plus the single-step term, the exact reverse KL at every generated position (MiniLLM,
//             Gu et al. 2024)
// Prompts are the first prompt_tokens of this step's corpus windows; continuations fill the window to seq_len + 1
// tokens and only generated tokens carry loss. Every random draw is counter-based (step, global sample, position),
// so the choice of source is the same on every rank and a run is reproducible at any world size.
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDLoss
import KDModel
import KDOps

/// Where a step's sequences came from.
public enum StepSource: String, Sendable {
    case corpus, fresh, replay, rollout
}

/// Student-generated sequences kept for replay, oldest first; identical on every rank.
public final class ReplayBuffer {
    public let capacity: Int, length: Int
    public private(set) var items: [[Int32]] = []

    public init(capacity: Int, length: Int) {
        self.capacity = capacity
        self.length = length
    }

    public func push(_ seq: [Int32]) {
        precondition(seq.count == length, "ReplayBuffer: sequences have \(length) tokens, got \(seq.count)")
        items.append(seq)
        if items.count > capacity { items.removeFirst(items.count - capacity) }
    }

    /// Little-endian: count (Int32), then count × length Int32 tokens.
    public func serialized() -> Data {
        var out = [Int32(items.count)]
        for s in items { out += s }
        return out.withUnsafeBufferPointer { Data(buffer: $0) }
    }

    public func restore(_ data: Data) throws {
        let words = data.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
        guard let n = words.first, n >= 0, words.count == 1 + Int(n) * length else {
            throw KDError.invalidInput(what: "replay buffer", expected: "a count and that many \(length)-token sequences", found: "\(data.count) bytes")
        }
        items = (0..<Int(n)).map { Array(words[(1 + $0 * length)..<(1 + ($0 + 1) * length)]) }
    }
}

/// distillm's adaptive state: the probability of a student-generated step, the replay buffer and the validation
/// loss of the last evaluation; identical on every rank, carried by checkpoints (typed state plus the buffer's file).
public final class DistiLLMState {
    let policy: PolicyConfig
    /// Probability that a step trains on student-generated sequences.
    public internal(set) var threshold: Float
    public let replay: ReplayBuffer
    var lastValidationLoss: Double?

    init(policy: PolicyConfig, seqLen: Int) {
        self.policy = policy
        threshold = policy.thresholdInit
        replay = ReplayBuffer(capacity: policy.replayCapacity, length: seqLen + 1)
    }

    /// A validation loss that rose by more than the margin since the last evaluation raises the probability of
    /// student-generated steps by threshold_step.
    func adapt(validationLoss: Double) {
        if let last = lastValidationLoss, validationLoss > last + Double(policy.margin) {
            threshold = min(1, threshold + policy.thresholdStep)
            KDLog.info(String(format: "distillm: validation loss rose %.4f → %.4f; student-generated share now %.2f", last, validationLoss, threshold))
        }
        lastValidationLoss = validationLoss
    }

    /// The checkpoint records the threshold and last validation loss in state.json and the buffer in its own file.
    func save(into contents: inout CheckpointContents?) throws {
        contents?.state.onPolicy = OnPolicyCheckpoint(threshold: threshold, lastValidationLoss: lastValidationLoss)
        contents?.files[CheckpointFile.replay] = replay.serialized()
    }

    /// Rank 0 reads the state and buffer a checkpoint recorded; every rank receives them. Collective.
    func restore(from source: CheckpointSource?, comm: any Communicator) throws {
        var state: OnPolicyCheckpoint?, buffer: Data?
        if let source {
            guard let s = source.state.onPolicy, let data = source.file(CheckpointFile.replay) else {
                throw CheckpointError.shapeMismatch(dir: source.dir, reason: "no distillm state (its threshold and \(CheckpointFile.replay)) to resume policy.mode distillm")
            }
            (state, buffer) = (s, data)
        }
        var header = [Double(state?.threshold ?? 0), state?.lastValidationLoss ?? .nan]
        var bytes = buffer.map { [UInt8]($0) } ?? []
        try comm.broadcast(&header, root: 0)
        try comm.broadcast(&bytes, root: 0)
        try replay.restore(Data(bytes))
        threshold = Float(header[0])
        lastValidationLoss = header[1].isNaN ? nil : header[1]
    }
}

/// Per generated token of a rollout: log q and log p of the drawn token and log of the proposal it was drawn from.
struct RolloutScores {
    var logQ: [Float], logP: [Float], logProposal: [Float]
}

/// Draws an index from probabilities exp(logProbs) with u in [0, 1) (inverse CDF in index order).
func drawIndex(logProbs: [Float], u: Float) -> Int {
    var acc: Float = 0
    for (j, lp) in logProbs.enumerated() {
        acc += expf(lp)
        if u < acc { return j }
    }
    return logProbs.lastIndex { $0 > -.infinity } ?? 0
}


extension BatchSource {
    /// The source of step `step` (0-based), the same on every rank.
    func stepSource(_ step: Int) -> StepSource {
        let p = policy
        let rng = CounterRNG(seed: train.seed, purpose: .policyChoice)
        let u = rng.uniform(UInt64(step))
        switch p.mode {
        case .gkd: return u < p.fraction ? .fresh : .corpus
        case .minillm: return u < p.fraction ? .rollout : .corpus
        case .distillm:
            guard let distillm, u < distillm.threshold else { return .corpus }
            let freshShare = 1 - Float(step) / Float(max(train.steps, 1))
            return distillm.replay.items.isEmpty || rng.uniform(UInt64(step), 1) < freshShare ? .fresh : .replay
        case .off: return .corpus
        }
    }

    /// Turns full sequences (seq_len + 1 tokens, the first P a prompt) into inputs and targets; prompt targets are −1.
    func writeSequences(_ seqs: [[Int32]], at row: Int) {
        let t = train.seqLen, P = policy.promptTokens
        for (i, s) in seqs.enumerated() {
            let base = (row + i) * t
            for j in 0..<t {
                inputs[base + j] = s[j]
                targets[base + j] = j + 1 >= P ? s[j + 1] : -1
            }
        }
    }

    /// Fills this rank's inputs/targets (already holding its corpus windows) for a non-corpus step; returns the
    /// mean per-token reward of rollouts (0 otherwise). Collective for distillm (the buffer is global) and minillm
    /// (the returns are whitened over the global batch).
    func prepareOnPolicyBatch(_ source: StepSource, step: Int, rankFirst: Int, student: Transformer,
                              teachers: [(model: Transformer, weight: Float)], combine: TeacherCombine) throws -> Double {
        let tr = train, p = policy, b = tr.microBatch, P = p.promptTokens, L = tr.seqLen + 1
        let count = b * tr.gradAccum
        switch source {
        case .corpus:
            return 0
        case .replay:
            let rng = CounterRNG(seed: tr.seed, purpose: .replay), items = distillm!.replay.items
            let picks = (0..<count).map { items[rng.index(items.count, UInt64(step), UInt64(rankFirst + $0))] }
            writeSequences(picks, at: 0)
            return 0
        case .fresh:
            var mine: [[Int32]] = []
            for micro in 0..<tr.gradAccum {
                let (seqs, _) = generate(promptsAt: micro * b, b: b, firstSample: rankFirst + micro * b, teacherMix: 0, student: student,
                                         teachers: [], combine: combine)
                writeSequences(seqs, at: micro * b)
                mine += seqs
            }
            if let replay = distillm?.replay {
                // every rank keeps the same buffer: all generations of the step, in rank order
                let all = try comm.allGatherV(mine.flatMap { $0 }.withUnsafeBufferPointer { Array(UnsafeRawBufferPointer($0)) })
                for bytes in all {
                    let words = bytes.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
                    for i in 0..<(words.count / L) { replay.push(Array(words[(i * L)..<((i + 1) * L)])) }
                }
            }
            return 0
        case .rollout:
            // returns for every generated token of every micro-batch, whitened with global statistics
            var returns: [[Float]] = [], scores: [RolloutScores] = []
            var sums = [0.0, 0.0, 0.0, 0.0]  // Σ R, Σ R², count, Σ r
            for micro in 0..<tr.gradAccum {
                let (seqs, sc) = generate(promptsAt: micro * b, b: b, firstSample: rankFirst + micro * b, teacherMix: p.teacherMix,
                                          student: student, teachers: teachers, combine: combine)
                writeSequences(seqs, at: micro * b)
                for s in sc {
                    let r = zip(s.logP, s.logQ).map { $0 - $1 }, G = r.count
                    var R = [Float](repeating: 0, count: G), acc: Float = 0
                    // R[t] = Σ_{s>t} γ^{s−t−1} r_s / (G − 1 − t)
                    for t in stride(from: G - 1, through: 0, by: -1) {
                        R[t] = t == G - 1 ? 0 : acc / Float(G - 1 - t)
                        acc = r[t] + p.gamma * acc
                    }
                    for x in R { sums[0] += Double(x); sums[1] += Double(x * x) }
                    sums[2] += Double(G)
                    sums[3] += r.reduce(0.0) { $0 + Double($1) }
                    returns.append(R)
                    scores.append(s)
                }
            }
            try comm.allReduceSum(&sums)
            let mean = sums[0] / max(sums[2], 1), variance = max(0, sums[1] / max(sums[2], 1) - mean * mean)
            let sd = Float((variance + 1e-8).squareRoot())
            let G = L - P
            for (i, R) in returns.enumerated() {
                let s = scores[i]
                for t in 0..<G {
                    let A = (R[t] - Float(mean)) / sd, w = expf(s.logQ[t] - s.logProposal[t])
                    let clipped = (A >= 0 && w > 1 + p.clip) || (A < 0 && w < 1 - p.clip)
                    // the row predicting generated token t is at position P − 1 + t of sequence i
                    ceWeights[i * tr.seqLen + P - 1 + t] = clipped ? 0 : A * w
                }
            }
            return sums[3] / max(sums[2], 1)
        }
    }

    /// Continues the prompts (first P tokens of b windows at row `row` of `inputs`) to seq_len + 1 tokens with the
    /// student, or with α·p + (1 − α)·q when teacherMix > 0; returns the sequences and, with a mix, their scores.
    func generate(promptsAt row: Int, b: Int, firstSample: Int, teacherMix alpha: Float, student model: Transformer,
                  teachers: [(model: Transformer, weight: Float)], combine: TeacherCombine) -> ([[Int32]], [RolloutScores]) {
        let tr = train, p = policy, P = p.promptTokens, L = tr.seqLen + 1, v = model.config.vocabSize
        let scoring = p.mode == .minillm
        let rng = CounterRNG(seed: tr.seed, purpose: .rollout)
        var seqs = (0..<b).map { Array(UnsafeBufferPointer(start: inputs + (row + $0) * tr.seqLen, count: P)) }
        var scores = (0..<b).map { _ in RolloutScores(logQ: [], logP: [], logProposal: []) }
        let studentCache = BatchKVCache(config: model.config, b: b, capacity: L)
        let teachersUsed = scoring ? teachers.map(\.model) : []
        let teacherCaches = teachersUsed.map { BatchKVCache(config: $0.config, b: b, capacity: L) }
        var feed = seqs.flatMap { $0 }, tq = P
        let T = scoring ? 1 : p.sampleTemperature
        while seqs[0].count < L {
            let q = feed.withUnsafeBufferPointer { model.decodeBatch(tokens: $0.baseAddress!, tq: tq, cache: studentCache) }
            let pt = teachersUsed.enumerated().map { k, t in feed.withUnsafeBufferPointer { t.decodeBatch(tokens: $0.baseAddress!, tq: tq, cache: teacherCaches[k]) } }
            let pos = seqs[0].count - P
            for i in 0..<b {
                var lq = Array(q[(i * v)..<((i + 1) * v)])
                logSoftmaxRow(&lq, temperature: T)
                let u = rng.uniform(UInt64(firstSample + i), UInt64(pos))
                guard scoring else {
                    seqs[i].append(Int32(drawIndex(logProbs: lq, u: u)))
                    continue
                }
                let lp = teacherLogProbs(pt.map { Array($0[(i * v)..<((i + 1) * v)]) }, weights: teachers.map(\.weight), combine: combine)
                let proposal = alpha == 0 ? lq : zip(lp, lq).map { a, c in logf(alpha * expf(a) + (1 - alpha) * expf(c)) }
                let y = drawIndex(logProbs: proposal, u: u)
                seqs[i].append(Int32(y))
                scores[i].logQ.append(lq[y]); scores[i].logP.append(lp[y]); scores[i].logProposal.append(proposal[y])
            }
            feed = seqs.map { $0.last! }
            tq = 1
        }
        return (seqs, scoring ? scores : [])
    }

    /// The teachers' combined next-token log-probabilities (at T = 1) from each one's logits.
    func teacherLogProbs(_ logits: [[Float]], weights: [Float], combine: TeacherCombine) -> [Float] {
        var rows = logits
        if rows.count == 1 { logSoftmaxRow(&rows[0], temperature: 1); return rows[0] }
        let total = weights.reduce(0, +), w = weights.map { $0 / total }
        if combine == .logits {
            var z = [Float](repeating: 0, count: rows[0].count)
            for (k, r) in rows.enumerated() { for j in z.indices { z[j] += w[k] * r[j] } }
            logSoftmaxRow(&z, temperature: 1)
            return z
        }
        for k in rows.indices { logSoftmaxRow(&rows[k], temperature: 1) }
        return rows[0].indices.map { j in
            let terms = rows.indices.map { logf(w[$0]) + rows[$0][j] }, m = terms.max()!
            return m == -.infinity ? m : m + logf(terms.reduce(0) { $0 + expf($1 - m) })
        }
    }

    /// Log-probabilities of a vocabulary-wide row of logits at temperature T, in place (KDLoss's log-softmax, on
    /// this source's scratch).
    func logSoftmaxRow(_ x: inout [Float], temperature: Float) {
        x.withUnsafeMutableBufferPointer { xp in rowScratch.withUnsafeMutableBufferPointer {
            logSoftmaxInPlace(xp.baseAddress!, xp.count, temperature: temperature, scratch: $0.baseAddress!)
        } }
    }
}
