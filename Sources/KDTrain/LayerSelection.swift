// Measured layer selection for a student cut from its teacher (`student.select: greedy | angular`). Which blocks a
// model can lose is a property of the model, not of a rule of thumb: on SmolLM2 single blocks differ by more than two
// nats in how much their removal costs, and "keep the first and last, drop a deep run" is its worst cut.
// - greedy: remove blocks one at a time; each round every remaining block is a candidate, scored by the calibration
//   KL(teacher ‖ teacher without the removed blocks and the candidate); the cheapest goes. Candidates are dealt
//   round-robin to the ranks and the scores all-reduced, so every rank takes the same decision. A candidate's forward
//   starts from the residual stream entering it (the blocks before it are unchanged), which halves the search.
// - angular (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers"): drop the contiguous run of
//   n blocks whose input x^ℓ and output x^(ℓ+n) are closest in angle, arccos(cos(x^ℓ, x^(ℓ+n)))/π. The paper reads the
//   last token of each prompt; here the mean over every calibration token, which is less noisy on short windows.
// The result (kept blocks, every candidate's score) goes to the log and to checkpoint.dir/selection.json; a later run
// whose measurement key matches (rule, target depth, calibration tokens, the teacher's output on them) reuses it.
import Foundation
import KDComm
import KDConfig
import KDCore
import KDData
import KDLoss
import KDModel
import KDOps

/// What a measured selection chose, and every candidate's score.
public struct LayerSelection: Codable, Equatable, Sendable {
    /// One candidate: a block (greedy) or the first block of a run (angular), and its score.
    public struct Candidate: Codable, Equatable, Sendable {
        public var block: Int
        public var score: Double
    }
    /// One greedy round: the blocks kept before it, every candidate's KL, and the block removed.
    public struct Round: Codable, Equatable, Sendable {
        public var kept: [Int]
        public var candidates: [Candidate]
        public var removed: Int
    }
    public var rule: String
    /// `kl_teacher_cut` (nats per token) or `angular_distance` (in [0, 1]).
    public var metric: String
    public var teacherLayers: Int
    public var kept: [Int]
    public var calibrationTokens: Int
    /// Greedy rounds, in order.
    public var rounds: [Round] = []
    /// Angular: every run start ℓ and the distance between x^ℓ and x^(ℓ+n).
    public var runs: [Candidate] = []
    /// KL(teacher ‖ cut) of the blocks kept, on the calibration tokens (both rules).
    public var finalKL: Double = 0
    /// What the measurement depends on; a run with the same key reuses the file.
    public var key: String
    public var seconds: Double = 0
}

/// Calibration windows: `batches` micro-batches of b sequences of t tokens (the first training windows, the same on
/// every rank), with the teacher's probabilities on each (computed once: a candidate then pays for its own head only).
final class Calibration {
    let b: Int, t: Int, batches: Int, rows: Int, v: Int
    let tokens: UnsafeMutablePointer<Int32>, targets: UnsafeMutablePointer<Int32>
    /// Per batch, the teacher's probabilities p [b·t, v] and per row Σ p·log p.
    let teacherProbs: [Slab]
    let teacherNegEntropy: [[Double]]
    /// The LM head as floats (a packed head is dequantized once), and a chunk of logits.
    let head: Slab
    let chunkRows = 32
    let logits: Slab

    init(teacher: Transformer, sampler: WindowSampler, batches: Int, b: Int, t: Int) {
        self.b = b; self.t = t; self.batches = batches
        let rows = b * t
        self.rows = rows
        let v = teacher.config.vocabSize
        self.v = v
        let toks = UnsafeMutablePointer<Int32>.allocate(capacity: batches * rows)
        tokens = toks
        targets = .allocate(capacity: batches * rows)
        sampler.fillSequential(inputs: tokens, targets: targets, first: 0, count: batches * b)
        let c = teacher.config.dim
        head = Slab(count: v * c)
        teacher.denseTensor(teacher.layout.entries.first { $0.offset == teacher.layout.lmHead }!, into: head.base)
        logits = Slab(count: chunkRows * v)
        var probs: [Slab] = [], negEntropy: [[Double]] = []
        for i in 0..<batches {
            let out = Slab(count: rows * v)
            var ne = [Double](repeating: 0, count: rows)
            let hidden = teacher.forwardStage(0..<teacher.config.layers, tokens: toks + i * rows, hidden: nil, b: b, t: t, finalNorm: true)
            matmulForward(out: out.base, inp: hidden, weight: head.base, n: rows, c: c, oc: v)
            ne.withUnsafeMutableBufferPointer { nep in
                let ne = nep.baseAddress!
                Parallel.forRanges(rows, minPerThread: 8) { lo, hi in
                    for r in lo..<hi {
                        let x = out.base + r * v, lse = logSumExp(x, count: v)
                        var h = 0.0
                        for j in 0..<v {
                            let lp = Double(x[j]) - lse, p = Foundation.exp(lp)
                            x[j] = Float(p)
                            h += p * lp
                        }
                        ne[r] = h
                    }
                }
            }
            probs.append(out)
            negEntropy.append(ne)
        }
        teacherProbs = probs
        teacherNegEntropy = negEntropy
    }
    deinit { tokens.deallocate(); targets.deallocate() }

    func tokens(_ i: Int) -> UnsafePointer<Int32> { UnsafePointer(tokens + i * rows) }

    /// A fingerprint of the windows and of the teacher's output on them.
    var fingerprint: String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ x: UInt64) { h = (h ^ x) &* 0x100_0000_01b3 }
        for i in 0..<(batches * rows) { mix(UInt64(UInt32(bitPattern: tokens[i]))) }
        for s in teacherProbs { for i in stride(from: 0, to: s.count, by: 4099) { mix(UInt64(s.base[i].bitPattern)) } }
        return String(h, radix: 16)
    }

    /// Σ over batch i's loss rows of KL(teacher ‖ model) for `source` run through `blocks` (its own final norm and head),
    /// and the number of rows. `hidden` starts the forward from a saved residual stream instead of the embedding.
    func kl(_ source: Transformer, blocks: [Int], batch i: Int, from hidden: UnsafePointer<Float>? = nil) -> (sum: Double, count: Int) {
        let x = source.forwardStage(blocks, tokens: hidden == nil ? tokens(i) : nil, hidden: hidden, b: b, t: t, finalNorm: true)
        let c = source.config.dim, tg = targets + i * rows, teacher = teacherProbs[i].base, negEntropy = teacherNegEntropy[i]
        var sum = 0.0, count = 0
        for r0 in stride(from: 0, to: rows, by: chunkRows) {
            let nr = min(chunkRows, rows - r0)
            matmulForward(out: logits.base, inp: x + r0 * c, weight: head.base, n: nr, c: c, oc: v)
            var part = [Double](repeating: 0, count: nr)
            part.withUnsafeMutableBufferPointer { pp in
                let out = pp.baseAddress!
                Parallel.forRanges(nr, minPerThread: 4) { lo, hi in
                    for r in lo..<hi where tg[r0 + r] >= 0 {
                        // KL(p‖q) = Σ p·log p − Σ p·z + logΣexp z, with z the model's logits
                        let z = self.logits.base + r * self.v, p = teacher + (r0 + r) * self.v
                        var pz: Float = 0
                        for j in 0..<self.v { pz += p[j] * z[j] }
                        out[r] = negEntropy[r0 + r] - Double(pz) + logSumExp(z, count: self.v)
                    }
                }
            }
            for r in 0..<nr where tg[r0 + r] >= 0 { sum += part[r]; count += 1 }
        }
        return (sum, count)
    }

    /// KL(teacher ‖ model) per token over every batch, for `blocks` from the embedding.
    func meanKL(_ source: Transformer, blocks: [Int]) -> Double {
        var sum = 0.0, count = 0
        for i in 0..<batches { let (s, n) = kl(source, blocks: blocks, batch: i); sum += s; count += n }
        return count > 0 ? sum / Double(count) : 0
    }
}

/// log Σ exp x, in Float with a Double sum.
func logSumExp(_ x: UnsafePointer<Float>, count: Int) -> Double {
    var m = -Float.infinity
    for j in 0..<count { m = max(m, x[j]) }
    var s: Float = 0, total = 0.0
    for j in 0..<count {
        s += Foundation.exp(x[j] - m)
        if j & 1023 == 1023 { total += Double(s); s = 0 }
    }
    return Double(m) + Foundation.log(total + Double(s))
}

/// The teacher blocks a measured rule keeps (`student.select: greedy | angular`), `keep` of `source`'s.
func measureLayerSelection(_ rule: LayerSelect, source: Transformer, keep: Int, calibration cal: Calibration,
                           comm: any Communicator) throws -> LayerSelection {
    let L = source.config.layers, start = monotonicSeconds()
    var sel = LayerSelection(rule: rule.rawValue, metric: rule == .greedy ? "kl_teacher_cut" : "angular_distance", teacherLayers: L,
                             kept: [], calibrationTokens: cal.batches * cal.rows,
                             key: try measureLayerSelectionKey(rule, source: source, keep: keep, calibration: cal))
    let c = source.config.dim, n = cal.rows
    switch rule {
    case .greedy:
        var kept = Array(0..<L)
        // the residual stream entering each kept block of the current cut, per batch: [batch][position in kept]
        var entering: [[Slab]] = []
        while kept.count > keep {
            entering = (0..<cal.batches).map { i in
                var out: [Slab] = []
                for p in kept.indices {
                    let h = Slab(count: n * c)
                    let x = p == 0 ? source.forwardStage(0..<0, tokens: cal.tokens(i), hidden: nil, b: cal.b, t: cal.t, finalNorm: false)
                        : source.forwardStage([kept[p - 1]], tokens: nil, hidden: UnsafePointer(out[p - 1].base), b: cal.b, t: cal.t, finalNorm: false)
                    h.base.update(from: x, count: n * c)
                    out.append(h)
                }
                return out
            }
            var scores = [Double](repeating: 0, count: kept.count)
            for (p, _) in kept.enumerated() where p % comm.worldSize == comm.rank {
                let rest = Array(kept[(p + 1)...])
                var sum = 0.0, count = 0
                for i in 0..<cal.batches {
                    let (s, n) = cal.kl(source, blocks: rest, batch: i, from: UnsafePointer(entering[i][p].base))
                    sum += s; count += n
                }
                scores[p] = count > 0 ? sum / Double(count) : 0
            }
            try comm.allReduceSum(&scores)
            let best = scores.indices.min { scores[$0] < scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }!
            sel.rounds.append(.init(kept: kept, candidates: zip(kept, scores).map { .init(block: $0, score: $1) }, removed: kept[best]))
            KDLog.info(String(format: "  select greedy: %d blocks → %d, remove block %d (KL %.4f; next cheapest ", kept.count, kept.count - 1, kept[best], scores[best])
                       + scores.indices.filter { $0 != best }.sorted { scores[$0] < scores[$1] }.prefix(3)
                           .map { String(format: "%d: %.4f", kept[$0], scores[$0]) }.joined(separator: ", ") + ")")
            kept.remove(at: best)
        }
        sel.kept = kept
    case .angular:
        let drop = L - keep
        // x^ℓ for ℓ = 0…L per batch, compared as they are produced: distance[ℓ] accumulates over every token
        var distance = [Double](repeating: 0, count: keep + 1)
        for i in 0..<cal.batches {
            var streams: [Slab] = []
            for l in 0...L {
                let h = Slab(count: n * c)
                if l == 0 {
                    h.base.update(from: source.forwardStage(0..<0, tokens: cal.tokens(i), hidden: nil, b: cal.b, t: cal.t, finalNorm: false), count: n * c)
                } else {
                    h.base.update(from: source.forwardStage([l - 1], tokens: nil, hidden: UnsafePointer(streams[l - 1].base), b: cal.b, t: cal.t,
                                                            finalNorm: false), count: n * c)
                }
                streams.append(h)
            }
            for s in 0...keep { distance[s] += meanAngularDistance(streams[s].base, streams[s + drop].base, rows: n, c: c) }
        }
        distance = distance.map { $0 / Double(cal.batches) }
        let best = distance.indices.min { distance[$0] < distance[$1] || (distance[$0] == distance[$1] && $0 < $1) }!
        sel.runs = distance.enumerated().map { .init(block: $0, score: $1) }
        sel.kept = Array(0..<best) + Array((best + drop)..<L)
        KDLog.info(String(format: "  select angular: drop blocks %d–%d (angular distance %.4f; next closest ", best, best + drop - 1, distance[best])
                   + distance.indices.filter { $0 != best }.sorted { distance[$0] < distance[$1] }.prefix(3)
                       .map { String(format: "%d–%d: %.4f", $0, $0 + drop - 1, distance[$0]) }.joined(separator: ", ") + ")")
    case .every, .layers:
        preconditionFailure("measureLayerSelection: \(rule) is not measured")
    }
    sel.finalKL = cal.meanKL(source, blocks: sel.kept)
    sel.seconds = monotonicSeconds() - start
    return sel
}

/// What a measured selection depends on: the rule, the depth, the calibration windows and the teacher's output on them.
func measureLayerSelectionKey(_ rule: LayerSelect, source: Transformer, keep: Int, calibration cal: Calibration) throws -> String {
    "\(rule) keep \(keep) of \(source.config.layers), \(cal.batches)x\(cal.b)x\(cal.t) tokens, teacher output \(cal.fingerprint)"
}

/// Mean over rows of arccos(cos(a_r, b_r))/π. - Shapes: a, b [rows, c]
func meanAngularDistance(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, rows: Int, c: Int) -> Double {
    var sum = 0.0
    for r in 0..<rows {
        var dot = 0.0, na = 0.0, nb = 0.0
        for j in 0..<c {
            let x = Double(a[r * c + j]), y = Double(b[r * c + j])
            dot += x * y; na += x * x; nb += y * y
        }
        let cos = max(-1, min(1, dot / max((na * nb).squareRoot(), 1e-30)))
        sum += Foundation.acos(cos) / Double.pi
    }
    return sum / Double(rows)
}

/// The bytes of the file at `path` as rank 0 reads it, on every rank (nil where rank 0 has none): a result rank 0
/// saved decides for all, as a checkpoint does, whether or not the other nodes see its directory. Collective.
func rootsFile(_ path: String, comm: any Communicator) throws -> Data? {
    var bytes = comm.rank == 0 ? FileManager.default.contents(atPath: path).map { [UInt8]($0) } ?? [] : []
    try comm.broadcast(&bytes, root: 0)
    return bytes.isEmpty ? nil : Data(bytes)
}

/// Writes `value` as sorted, indented JSON to `path` (its directory created if missing) through `path.partial` and a
/// rename: a reader sees the old file or the new one, never half of one.
func saveJSON(_ value: some Encodable, to path: String) throws {
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    try enc.encode(value).write(to: URL(fileURLWithPath: path + ".partial"))
    _ = rename(path + ".partial", path)
}

extension LayerSelection {
    static let fileName = "selection.json"

    /// The selection rank 0 saved in `dir`, when its key is `key`, on every rank. Collective.
    static func saved(in dir: String, key: String, comm: any Communicator) throws -> LayerSelection? {
        guard let data = try rootsFile((dir as NSString).appendingPathComponent(fileName), comm: comm),
              let sel = try? JSONDecoder().decode(LayerSelection.self, from: data), sel.key == key else { return nil }
        return sel
    }

    /// Writes the selection to `dir` (created if missing) through a temporary file and a rename.
    func save(in dir: String) throws { try saveJSON(self, to: (dir as NSString).appendingPathComponent(Self.fileName)) }
}
