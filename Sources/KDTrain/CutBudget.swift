// Compress to a budget (`student.target: {bytes: …} | {params: …} | {speed: …}`): every depth from the teacher's down to
// half of it, each with the widest FFN (in steps of a quantization block) that meets the target, is cut as the run
// would cut it (blocks by `student.select`, FFN channels by importance on the calibration batches) and scored by its
// calibration KL(teacher ‖ cut); the lowest wins — or, with `heal_steps`, a few cuts shortlisted by it are each healed
// that many steps and the lowest validation divergence wins. The scores are logged and saved beside the checkpoints
// (`budget.json`, also after the KL and after each heal, so a stopped selection resumes), and a later run with the same
// target, calibration tokens and teacher output reuses the choice.
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
    /// Validation divergence after the heal (`heal_steps`; nil for a cut not healed).
    var healed: Double?

    /// Shape, size, parameters and estimated speedup, as the log and errors print a cut.
    var summary: String {
        String(format: "%d blocks × FFN %d (%.1f MiB, %.2fM parameters, %.2f× the teacher's speed)", layers, ffnDim,
               Double(bytes) / 1048576, Double(params) / 1e6, speedup ?? .nan)
    }
}

/// What the budget chose, and every candidate's score — or, while a heal is under way, the scores so far (`chosen`
/// nil): a run stopped during the selection resumes it without repeating the KL or a finished heal.
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

/// The run `config` with `cut`'s shape and kept blocks and no target: what the heal of one finalist trains, `steps`
/// steps long.
func healConfig(_ config: RunConfig, cut: BudgetCut, teacherLayers: Int, steps: Int) -> RunConfig {
    var c = resolvedConfig(config, cut: cut, teacherLayers: teacherLayers)
    c.student.target = nil
    if cut.layers != teacherLayers { c.student.select = .layers; c.student.layers = cut.kept; c.student.every = 0 }
    c.train.steps = steps
    c.optimizer.warmupSteps = min(c.optimizer.warmupSteps, steps)  // a heal shorter than the run's warmup is warmup alone
    return c
}

/// `config` with `model.layers` and `model.ffn_dim` of the cut that meets `student.target` with the lowest calibration
/// KL — or, with `heal_steps`, the lowest validation divergence of the finalists after `heal` (which trains a config
/// for its `train.steps` and returns that divergence) — unchanged without a target; a cut that keeps every block keeps
/// them as listed (`every: 1`). Collective when the selection rule is (greedy shares its candidates) and when healing.
func chooseBudgetCut(_ config: RunConfig, source: Transformer, overhead: Int, calibration sampler: WindowSampler,
                     comm: any Communicator, heal: ((RunConfig) throws -> Double)? = nil) throws -> RunConfig {
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
        + (target.healSteps > 0 ? ", heal \(target.healSteps) steps × \(target.finalists) finalists, \(config.distill.objective.rawValue), lr \(config.optimizer.lr)" : "")
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
                       + "\(candidates.filter { $0.healed != nil }.count) healed")
        } else {
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
            let finalists = healFinalists(candidates, count: target.finalists)
            KDLog.info("  target \(what): \(finalists.count) of them healed \(target.healSteps) steps each (the same batches), scored by "
                       + "their validation divergence")
            // the scores so far are saved after the KL and after each heal
            let progress = { try BudgetChoice(key: key, target: what, candidates: candidates, chosen: nil).save(to: path, comm: comm) }
            try progress()
            for i in finalists where candidates[i].healed == nil {
                let s0 = monotonicSeconds()
                candidates[i].healed = try heal(healConfig(config, cut: candidates[i], teacherLayers: t.layers, steps: target.healSteps))
                KDLog.info("    \(candidates[i].summary), KL \(String(format: "%.4f", candidates[i].kl)) → after the heal "
                           + "\(String(format: "%.4f", candidates[i].healed!)) (\(String(format: "%.0f", monotonicSeconds() - s0)) s)")
                try progress()
            }
            best = lowest(finalists) { candidates[$0].healed! }!
        }
        choice = BudgetChoice(key: key, target: what, candidates: candidates, chosen: best)
        try choice.save(to: path, comm: comm)
    }
    let c = choice.candidates[choice.chosen!]
    let why = c.healed.map { String(format: "validation divergence %.4f after the heal, the lowest of %d healed", $0, choice.candidates.filter { $0.healed != nil }.count) }
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
