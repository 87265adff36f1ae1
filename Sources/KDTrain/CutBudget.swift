// Compress to a budget (`student.target: {bytes: …} | {params: …} | {speed: …}`): every depth from the teacher's down to
// half of it, each with the widest FFN (in steps of a quantization block) that meets the target, is cut as the run
// would cut it (blocks by `student.select`, FFN channels by importance on the calibration batches) and scored by its
// calibration KL(teacher ‖ cut); the lowest wins — or, with `heal_steps`, the cuts it shortlists are healed in a
// tournament (all of them `heal_steps` steps, the better half on to twice as many, … until one is left) and the lowest
// validation divergence wins. The scores are logged and saved beside the checkpoints (`budget.json`, also after the KL
// and after each heal, so a stopped selection resumes; the heals' own checkpoints under `heal/` until it ends), and a
// later run with the same target, calibration tokens and teacher output reuses the choice.
import Foundation
import KDComm
import KDConfig
import KDCore
import KDData
import KDFormats
import KDModel
import KDQuant

/// One cut the budget weighed.
struct BudgetCut: Codable, Equatable {
    var layers: Int, ffnDim: Int, bytes: Int, params: Int
    /// The teacher's ``generationCost`` over this cut's (budget.json files written before speed targets lack it).
    var speedup: Double?
    var kept: [Int] = []
    var kl = Double.nan
    /// Validation divergence after each round of the heal the cut reached (after ``healRounds``' steps; empty for a cut
    /// not healed).
    var heals: [Double] = []

    /// Shape, size, parameters and estimated speedup, as the log and errors print a cut.
    var summary: String {
        String(format: "%d blocks × FFN %d (%.1f MiB, %.2fM parameters, %.2f× the teacher's speed)", layers, ffnDim,
               Double(bytes) / 1048576, Double(params) / 1e6, speedup ?? .nan)
    }
}

/// What the budget chose, and every candidate's score — or, while a heal is under way, the scores so far (`chosen`
/// nil): a run stopped during the selection resumes it without repeating the KL or a finished round of a heal.
struct BudgetChoice: Codable {
    var key: String
    var target: String
    var candidates: [BudgetCut]
    var chosen: Int?
    static let fileName = "budget.json"

    /// Writes the choice (rank 0 only) to `path` through a temporary file and a rename.
    func save(to path: String, comm: any Communicator) throws { if comm.rank == 0 { try saveJSON(self, to: path) } }
}

/// The bytes of the GGUF a student of shape `m` exports to by default: block matrices in the QAT scheme's type (a
/// k-quant's fallback on rows its blocks do not divide; F16
/// without a GGUF scheme), the embedding and head as they trained (their scheme; F32 when QAT kept them full precision;
/// F16 without QAT), vectors F32, each tensor padded to 32 bytes, plus `overhead` (the metadata and tokenizer).
func exportBytes(_ m: ModelConfig, qat: QATConfig, overhead: Int) -> Int {
    let layout = ParameterLayout(config: m)
    let plan = qat.enabled ? QuantPlan(qat: qat, config: m, layout: layout) : nil
    return layout.entries.reduce(overhead) { total, e in
        // the plan's type (F16 for a per-channel scheme); F32 for vectors and for tables QAT kept full precision; else F16
        let table = e.offset == layout.embedding || e.offset == layout.lmHead
        let type: GGMLType = !e.isMatrix ? .f32 : plan?.scheme(at: e.offset).map { $0.ggmlType ?? .f16 } ?? (table && qat.enabled && !qat.embeddings ? .f32 : .f16)
        return total + (type.byteCount(elements: e.count) + 31) / 32 * 32
    }
}

/// What a model of shape `m` does per generated token, in multiply-adds: every block's projections and FFN, attention
/// over `context` earlier positions (QKᵀ and PV), the LM head (the embedding is a lookup), and ``perBlockCost`` per
/// block. A student's speedup over its teacher is the teacher's cost over its own, both at the student's `max_seq_len`.
func generationCost(_ m: ModelConfig, context: Int) -> Double {
    Double(m.matmulParameters) + Double(m.layers) * (2 * Double(context) * Double(m.qDim) + perBlockCost)
}

/// The fixed cost of a block in a batch-1 decoder, in multiply-adds: the work of its operations' dispatch and thread
/// synchronization, which does not shrink with its width. Fitted to llama.cpp 0.3.36 on 2 threads (Zen 5): SmolLM2-135M
/// requantized to Q4_0 generates 137 tokens/s and its 29-block student with the FFN cut to 1152, also Q4_0, 157. Checked
/// in a later sitting (docs/results.md, "A speed target"): estimates 1.15×, 1.21× and 2.01× for students measured at
/// 1.14×, 1.18× and 2.26× — close for width cuts, cautious for deep ones (multiply-adds alone: 1.19×, 1.19×, 2.23×).
let perBlockCost = 1.7e6

/// The cuts meeting `target`: for each depth from the teacher's down to half of it (the teacher's alone with `select:
/// every`), the widest FFN (a multiple of `multiple`, at least a quarter of the teacher's) that meets it; and the
/// smallest cut tried (for a target none meets). `multiple` is what ffn_down's rows (the FFN's width) need to keep its
/// format: 256 for a k-quant — `scheme`'s, or `tensor_types`' for ffn_down — else a block of 32.
func budgetCandidates(_ config: RunConfig, teacher t: ModelConfig, target: StudentTarget, overhead: Int) -> (fits: [BudgetCut], smallest: BudgetCut) {
    let down = config.qat.preset == nil ? config.qat.tensorTypes?[.ffnDown] ?? config.qat.scheme : config.qat.scheme
    let multiple = max(32, FakeQuantScheme(down)?.rowMultiple ?? 1)
    func shape(_ layers: Int, _ ffn: Int) -> ModelConfig {
        var m = config.model
        m.layers = layers; m.ffnDim = ffn
        return m
    }
    let context = config.model.maxSeqLen, teacherCost = generationCost(shape(t.layers, t.ffnDim), context: context)
    func cut(_ layers: Int, _ ffn: Int) -> BudgetCut {
        let m = shape(layers, ffn)
        return BudgetCut(layers: layers, ffnDim: ffn, bytes: exportBytes(m, qat: config.qat, overhead: overhead), params: ParameterLayout(config: m).count,
                         speedup: teacherCost / generationCost(m, context: context))
    }
    func fits(_ c: BudgetCut) -> Bool {
        if let bytes = target.bytes { return c.bytes <= bytes }
        if let params = target.params { return c.params <= params }
        return c.speedup! >= target.speed!
    }
    // `select: every` (every: 1) keeps every block: the FFN alone is narrowed
    let keepsAll = config.student.rule == .every
    let widest = t.ffnDim / multiple * multiple, narrowest = max(multiple, t.ffnDim / 4), shallowest = keepsAll ? t.layers : max(1, (t.layers + 1) / 2)
    var out: [BudgetCut] = []
    for layers in stride(from: t.layers, through: shallowest, by: -1) {
        var ffn = widest
        while ffn >= narrowest, !fits(cut(layers, ffn)) { ffn -= multiple }
        if ffn >= narrowest { out.append(cut(layers, ffn)) }
    }
    return (out, cut(shallowest, widest - (widest - narrowest) / multiple * multiple))
}

/// The index among `indices` with the lowest `score`, the first of equals (nil when there are none).
func lowest(_ indices: some Sequence<Int>, _ score: (Int) -> Double) -> Int? { indices.min { (score($0), $0) < (score($1), $1) } }

/// The cuts a heal compares (indices into `candidates`, deepest first): `count` spread evenly over those whose
/// calibration KL is within 1.5× the lowest, both ends included, and the lowest-KL cut if the spread missed it.
func healFinalists(_ candidates: [BudgetCut], count: Int) -> [Int] {
    guard let lowest = lowest(candidates.indices, { candidates[$0].kl }) else { return [] }
    let close = candidates.indices.filter { candidates[$0].kl <= 1.5 * candidates[lowest].kl }
    var picked = Set<Int>([lowest])
    if close.count <= count { picked.formUnion(close) } else {
        for i in 0..<count { picked.insert(close[Int((Double(i) * Double(close.count - 1) / Double(count - 1)).rounded())]) }
    }
    return picked.sorted()
}

/// The steps each round of a heal tournament among `n` cuts ends at: all `n` healed `steps` steps, the better half
/// (rounded up) on to twice as many, and so on until one is left — `[20, 40, 80]` for 8 cuts and 20 steps; none for one.
func healRounds(_ n: Int, steps: Int) -> [Int] {
    var out: [Int] = [], left = n
    while left > 1 { out.append(steps << out.count); left = (left + 1) / 2 }
    return out
}

/// Of a round's finished heals (score, cut), the cuts that cannot be among the `goingOn` best however the rest score:
/// those behind at least `goingOn` others (ties go to the lower cut, as the round's choice breaks them).
func outOfTheRunning(_ finished: [(score: Double, cut: Int)], goingOn: Int) -> [Int] {
    finished.filter { a in finished.filter { ($0.score, $0.cut) < (a.score, a.cut) }.count >= goingOn }.map(\.cut)
}

/// Where the heals keep their checkpoints between rounds: `heal/` in the run's checkpoint directory.
func healRoot(_ config: RunConfig) -> String { (config.checkpoint.dir as NSString).appendingPathComponent("heal") }

/// Where a cut's heal keeps its checkpoint between rounds: `heal/<layers>x<ffn>`.
func healDirectory(_ config: RunConfig, cut: BudgetCut) -> String {
    (healRoot(config) as NSString).appendingPathComponent("\(cut.layers)x\(cut.ffnDim)")
}

/// The run `config` with `cut`'s shape and kept blocks and no target: what the heal of one finalist trains — the run in
/// miniature, `steps` (the tournament's last round) long: its warmup scaled to that length, its checkpoint (one, written
/// by the heal between rounds) in ``healDirectory``.
func healConfig(_ config: RunConfig, cut: BudgetCut, teacherLayers: Int, steps: Int) -> RunConfig {
    var c = resolvedConfig(config, cut: cut, teacherLayers: teacherLayers)
    c.student.target = nil
    if cut.layers != teacherLayers { c.student.select = .layers; c.student.layers = cut.kept; c.student.every = 0 }
    c.train.steps = steps
    let w = config.optimizer.warmupSteps
    c.optimizer.warmupSteps = min(steps, w, w == 0 ? 0 : Int((Double(w) * Double(steps) / Double(config.train.steps)).rounded(.up)))
    c.checkpoint.dir = healDirectory(config, cut: cut)
    c.checkpoint.keep = 1; c.checkpoint.every = 0; c.checkpoint.everyMinutes = 0
    return c
}

/// `config` with `model.layers` and `model.ffn_dim` of the cut that meets `student.target` with the lowest calibration
/// KL — or, with `heal_steps`, the winner of a heal tournament among the finalists: `heal(c, until)` trains the cut's
/// ``healConfig`` `c` up to step `until` (from its checkpoint of the round before, if any; writing one when `until` is
/// not the last round's) and returns its validation divergence there — unchanged without a target; a cut that keeps
/// every block keeps them as listed (`every: 1`). Collective when the selection rule is (greedy shares its candidates)
/// and when healing.
func chooseBudgetCut(_ config: RunConfig, source: Transformer, overhead: Int, calibration sampler: WindowSampler,
                     comm: any Communicator, heal: ((RunConfig, Int) throws -> Double)? = nil) throws -> RunConfig {
    guard let target = config.student.target else { return config }
    let t = source.config, s = config.student, start = monotonicSeconds()
    let what = target.summary
    var (candidates, smallest) = budgetCandidates(config, teacher: t, target: target, overhead: overhead)
    guard !candidates.isEmpty else {
        throw KDError.invalidInput(what: "student.target", expected: "a target a cut of the teacher can meet (the smallest tried: \(smallest.summary))",
                                   found: what)
    }
    let cal = Calibration(teacher: source, sampler: sampler, batches: s.calibrationBatches, b: config.train.microBatch, t: config.train.seqLen)
    let key = "\(what), \(s.rule), qat \(config.qat.scheme.rawValue)/\(config.qat.tableScheme.rawValue)"
        + (config.qat.tensorTypes == nil ? "" : " {\(config.qat.tensorTypesSummary)}") + ", overhead \(overhead), "
        + "\(cal.batches)x\(cal.b)x\(cal.t) tokens, teacher output \(cal.fingerprint)"
        + (target.healSteps > 0 ? ", heal tournament from \(target.healSteps) steps among \(target.finalists) finalists, \(config.distill.objective.rawValue), "
           + "lr \(config.optimizer.lr), warmup \(config.optimizer.warmupSteps) of \(config.train.steps)" : "")
    let path = (config.checkpoint.dir as NSString).appendingPathComponent(BudgetChoice.fileName)
    // rank 0's file decides for every rank (a checkpoint directory need not be shared between nodes)
    let saved = try rootsFile(path, comm: comm).flatMap { try? JSONDecoder().decode(BudgetChoice.self, from: $0) }
        .flatMap { $0.key == key && $0.candidates.map(\.layers) == candidates.map(\.layers) ? $0 : nil }
    var choice: BudgetChoice
    if let saved, let chosen = saved.chosen {
        choice = saved
        KDLog.info("  target \(what): \(saved.candidates[chosen].layers) blocks, FFN \(saved.candidates[chosen].ffnDim), from \(path)")
    } else {
        if let saved {
            candidates = saved.candidates
            KDLog.info("  target \(what): the selection resumed from \(path) — the KL of \(candidates.count) cuts, "
                       + "\(candidates.filter { !$0.heals.isEmpty }.count) healed")
        } else {
            // a fresh selection: heals left by another (stopped) one are not this one's
            if comm.rank == 0 { try? FileManager.default.removeItem(atPath: healRoot(config)) }
            KDLog.info("  target \(what): \(candidates.count) cuts meet it; each scored by its calibration KL(teacher‖cut) on \(cal.batches * cal.rows) tokens")
            for i in candidates.indices {
                var c = config
                c.model.layers = candidates[i].layers; c.model.ffnDim = candidates[i].ffnDim
                let kept = c.model.layers == t.layers ? Array(0..<t.layers)
                    : try measureLayerSelection(s.rule, source: source, keep: c.model.layers, calibration: cal, comm: comm).kept
                let m = Transformer(config: try cutModelConfig(c.model, teacher: t, kept: kept), needsGrad: false)
                try cutStudent(m, from: source, config: c, kept: kept, calibration: sampler, comm: comm)
                candidates[i].kept = kept
                candidates[i].kl = cal.meanKL(m, blocks: Array(0..<c.model.layers))
                KDLog.info("    \(candidates[i].summary), KL \(String(format: "%.4f", candidates[i].kl))")
            }
        }
        var best = lowest(candidates.indices) { candidates[$0].kl }!
        if target.healSteps > 0 {
            guard let heal else { preconditionFailure("chooseBudgetCut: heal_steps without a way to heal") }
            var alive = healFinalists(candidates, count: target.finalists)
            let rounds = healRounds(alive.count, steps: target.healSteps)
            KDLog.info("  target \(what): \(alive.count) of them healed in a tournament on the same batches, scored by their validation "
                       + "divergence: all \(rounds.first ?? 0) steps, the better half on to twice as many, … (rounds ending at steps \(rounds.map(String.init).joined(separator: ", ")))")
            // the scores so far are saved after the KL and after each heal
            let progress = { try BudgetChoice(key: key, target: what, candidates: candidates, chosen: nil).save(to: path, comm: comm) }
            try progress()
            for (r, until) in rounds.enumerated() {
                for i in alive where candidates[i].heals.count <= r {
                    let s0 = monotonicSeconds()
                    candidates[i].heals.append(try heal(healConfig(config, cut: candidates[i], teacherLayers: t.layers, steps: rounds.last!), until))
                    KDLog.info("    round \(r + 1), step \(until): \(candidates[i].summary), KL \(String(format: "%.4f", candidates[i].kl)) → "
                               + "\(candidates[i].heals.map { String(format: "%.4f", $0) }.joined(separator: " → ")) (\(String(format: "%.0f", monotonicSeconds() - s0)) s)")
                    try progress()
                    // a cut behind as many finished ones as go on cannot go on: its checkpoint goes now, not after the
                    // round (at most half the cuts and one more keep a checkpoint at once)
                    if comm.rank == 0 {
                        let done = alive.filter { candidates[$0].heals.count > r }
                        for j in outOfTheRunning(done.map { (candidates[$0].heals[r], $0) }, goingOn: (alive.count + 1) / 2) {
                            try? FileManager.default.removeItem(atPath: healDirectory(config, cut: candidates[j]))
                        }
                    }
                }
                let next = alive.sorted { (candidates[$0].heals[r], $0) < (candidates[$1].heals[r], $1) }.prefix((alive.count + 1) / 2).sorted()
                // rank 0 keeps the checkpoints of the cuts that go on
                if comm.rank == 0 { for i in alive where !next.contains(i) { try? FileManager.default.removeItem(atPath: healDirectory(config, cut: candidates[i])) } }
                alive = Array(next)
            }
            if comm.rank == 0 { try? FileManager.default.removeItem(atPath: healRoot(config)) }
            best = alive[0]
        }
        choice = BudgetChoice(key: key, target: what, candidates: candidates, chosen: best)
        try choice.save(to: path, comm: comm)
    }
    let c = choice.candidates[choice.chosen!]
    let why = c.heals.last.map { String(format: "validation divergence %.4f after %d rounds of healing, from %d cuts healed", $0, c.heals.count,
                                               choice.candidates.filter { !$0.heals.isEmpty }.count) }
        ?? String(format: "calibration KL %.4f, the lowest of %d", c.kl, choice.candidates.count)
    KDLog.info("  target \(what): chose \(c.summary), \(why), in \(String(format: "%.1f", monotonicSeconds() - start)) s")
    return resolvedConfig(config, cut: c, teacherLayers: t.layers)
}

/// `config` with the shape of the chosen `cut`; a cut that keeps every block keeps them as listed (`every: 1`, which
/// beside the target reads as "keep every block, narrow the FFN": the same choice again on resume, and a config that
/// checkpoints record and eval and export read back).
func resolvedConfig(_ config: RunConfig, cut c: BudgetCut, teacherLayers: Int) -> RunConfig {
    var out = config
    out.model.layers = c.layers
    out.model.ffnDim = c.ffnDim
    if c.layers == teacherLayers { out.student.select = .every; out.student.every = 1 }
    return out
}

/// Bytes of a GGUF teacher's header (metadata with its tokenizer, tensor infos): what an exported student copies.
func ggufHeaderBytes(_ path: String) -> Int {
    guard path.hasSuffix(".gguf"), let f = try? GGUFFile(path: path, mapAll: false) else { return 0 }
    return f.dataOffset
}
