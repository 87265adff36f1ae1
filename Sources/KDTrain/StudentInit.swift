// A student cut from its teacher (`student.init: from_teacher`): the embedding, final norm, head and the kept blocks
// are copied (depth pruning); a narrower residual stream (model.dim), a narrower FFN or fewer query heads keep the
// teacher's channels and heads with the largest mean |activation| on calibration batches from the first training
// windows (width pruning; residual channels by their normalized value summed over the kept blocks, as Minitron). The kept blocks are
// listed (`every`, `layers`) or measured on the same calibration batches (`select: greedy | angular`, LayerSelection).
import KDComm
import KDConfig
import KDCore
import KDData
import KDModel

/// Refuses a cut that cannot be made from `source`, before the student is allocated.
func checkCut(_ config: RunConfig, source: Transformer) throws {
    let s = config.student, L = source.config.layers
    if s.measuresSelection, config.model.layers >= L || config.model.layers < 1 {
        throw KDError.invalidInput(what: "student.select: \(s.rule)", expected: "model.layers from 1 to \(L - 1) (the teacher has \(L) blocks)",
                                   found: "\(config.model.layers)")
    }
    if let bad = s.layers.first(where: { $0 >= L }) {
        throw KDError.invalidInput(what: "student.layers", expected: "teacher block indices below \(L)", found: "\(bad)")
    }
    let m = config.model, t = source.config
    if m.dim > t.dim {
        throw KDError.invalidInput(what: "model.dim", expected: "at most the teacher's \(t.dim) for a student cut from it (hidden-dim pruning keeps a subset of its channels)",
                                   found: "\(m.dim)")
    }
    if m.headSize != t.headSize {
        throw KDError.invalidInput(what: "model.head_dim", expected: "the teacher's head size \(t.headSize)\(m.dim != t.dim && m.headDim == 0 ? " (a narrower dim needs head_dim set)" : "")",
                                   found: "\(m.headSize)")
    }
}

/// Refuses hidden-state pairs that cannot be matched, before the student is allocated.
func checkHiddenLayers(_ config: RunConfig, teacher: Transformer?) throws {
    let d = config.distill
    guard d.hiddenWeight > 0 else { return }
    guard let teacher else {
        throw KDError.invalidInput(what: "distill.hidden_weight", expected: "a teacher file (teacher.path) whose block outputs to match", found: "none")
    }
    // a student cut narrower is compared on the channels it kept, other widths through learned projections
    switch d.hiddenLayers {
    case .auto, .seams:
        guard config.student.initFrom == .fromTeacher else {
            throw KDError.invalidInput(what: "distill.hidden_layers: \(d.hiddenLayers)", expected: "a student cut from its teacher (student.init: from_teacher), or [[student, teacher], ...] pairs",
                                       found: "student.init: \(config.student.initFrom)")
        }
    case .pairs(let pairs):
        for p in pairs where p[0] >= config.model.layers || p[1] >= teacher.config.layers {
            throw KDError.invalidInput(what: "distill.hidden_layers pair [\(p[0]), \(p[1])]",
                                       expected: "student blocks below \(config.model.layers) and teacher blocks below \(teacher.config.layers)", found: "[\(p[0]), \(p[1])]")
        }
        guard !pairs.isEmpty else {
            throw KDError.invalidInput(what: "distill.hidden_layers", expected: "auto or at least one [student, teacher] pair", found: "[]")
        }
    }
}

/// The teacher blocks the student keeps: listed, or measured (and logged, and saved to the run directory by rank 0).
func studentBlocks(from source: Transformer, config: RunConfig, calibration sampler: WindowSampler, comm: any Communicator) throws -> [Int] {
    let s = config.student
    guard s.measuresSelection else { return s.keptLayers(teacherLayers: source.config.layers) }
    let cal = Calibration(teacher: source, sampler: sampler, batches: s.calibrationBatches, b: config.train.microBatch, t: config.train.seqLen)
    let dir = config.checkpoint.dir
    let probe = try measureLayerSelectionKey(s.rule, source: source, keep: config.model.layers, calibration: cal)
    if let saved = try LayerSelection.saved(in: dir, key: probe, comm: comm) {
        KDLog.info("  select \(s.rule): blocks \(saved.kept) from \(dir)/\(LayerSelection.fileName) (same teacher output on the same calibration tokens)")
        return saved.kept
    }
    let sel = try measureLayerSelection(s.rule, source: source, keep: config.model.layers, calibration: cal, comm: comm)
    KDLog.info(String(format: "  select %@: keeps %@ of %d blocks, calibration KL(teacher‖cut) %.4f on %d tokens, %.1f s on %d rank%@ (every score: %@/%@)",
                      "\(s.rule)", "\(sel.kept)", sel.teacherLayers, sel.finalKL, sel.calibrationTokens, sel.seconds, comm.worldSize,
                      comm.worldSize == 1 ? "" : "s", dir, LayerSelection.fileName))
    if comm.rank == 0 { try sel.save(in: dir) }
    return sel.kept
}

/// The student's shape with its family's per-block settings taken from the teacher blocks it keeps: the family, RoPE
/// frequency scaling, the sliding window and local RoPE base, and which kept blocks attend globally (Gemma 3's pattern
/// does not survive a cut).
func cutModelConfig(_ m: ModelConfig, teacher t: ModelConfig, kept: [Int]) throws -> ModelConfig {
    guard m.family == t.family else {
        throw KDError.invalidInput(what: "model.family", expected: "\(t.family.rawValue) (the teacher's, for a student cut from it)", found: m.family.rawValue)
    }
    var m = m
    m.ropeFreqFactors = t.ropeFreqFactors  // Llama 3.1+ RoPE scaling comes with the blocks
    if t.slidingWindow > 0 {
        m.slidingWindow = t.slidingWindow
        m.ropeThetaLocal = t.ropeThetaLocal
        m.globalLayers = kept.indices.filter { !t.isSliding(kept[$0]) }
        KDLog.info("  student blocks attend as the teacher blocks they come from: window \(t.slidingWindow), global blocks \(m.globalLayers!)")
    }
    return m
}

/// What a student cut from its teacher kept (`student.init: from_teacher`); empty for a student not cut.
public struct StudentCut: Sendable {
    /// The teacher blocks, in student order.
    public var blocks: [Int] = []
    /// The teacher's residual-stream channels, ascending (nil: all of them).
    public var channels: [Int]?
}

/// Copies the parts of `source` that `config.student` keeps into `model` (same width, unless pruned).
@discardableResult
func cutStudent(_ model: Transformer, from source: Transformer, config: RunConfig, kept: [Int]? = nil, calibration sampler: WindowSampler,
                comm: any Communicator = LocalCommunicator()) throws -> StudentCut {
    let t = config.train
    let kept = try kept ?? studentBlocks(from: source, config: config, calibration: sampler, comm: comm)
    let cb = max(1, config.student.calibrationBatches), b = t.microBatch, seqLen = t.seqLen
    // the calibration windows: `cb` micro-batches of [b, seqLen] from the sampler's start, for every measure below and
    // the bridge
    let toks = UnsafeMutablePointer<Int32>.allocate(capacity: cb * b * seqLen), tg = UnsafeMutablePointer<Int32>.allocate(capacity: cb * b * seqLen)
    defer { toks.deallocate(); tg.deallocate() }
    sampler.fillSequential(inputs: toks, targets: tg, first: 0, count: cb * b)
    /// A per-block importance summed over the calibration batches.
    func calibrated(_ measure: (UnsafePointer<Int32>) -> [[Double]]) -> [[Double]] {
        var sum: [[Double]] = []
        for i in 0..<cb {
            let imp = measure(toks + i * b * seqLen)
            sum = sum.isEmpty ? imp : zip(sum, imp).map { zip($0, $1).map(+) }
        }
        return sum
    }
    var residual: [Int]?
    if config.model.dim < source.config.dim {
        // one set for the whole stream: every block reads and writes it
        let importance = calibrated { source.residualChannelImportance(tokens: $0, b: b, t: seqLen) }
        let total = (0..<source.config.dim).map { j in kept.reduce(0.0) { $0 + importance[$1][j] } }
        residual = total.indices.sorted { total[$0] > total[$1] }.prefix(config.model.dim).sorted()
    }
    var channels: [[Int]]?
    if config.model.ffnDim < source.config.ffnDim {
        let importance = calibrated { source.ffnChannelImportance(tokens: $0, b: b, t: seqLen) }
        channels = kept.map { l in
            importance[l].indices.sorted { importance[l][$0] > importance[l][$1] }.prefix(config.model.ffnDim).sorted()
        }
    }
    var heads: [[Int]]?
    if config.model.heads < source.config.heads {
        // in every key/value group, the query heads with the largest mean |output|
        let importance = calibrated { source.attentionHeadImportance(tokens: $0, b: b, t: seqLen) }
        let perGroup = source.config.heads / source.config.kvHeads, keep = config.model.heads / max(config.model.kvHeads, 1)
        heads = kept.map { l in
            (0..<source.config.kvHeads).flatMap { g in
                Array(g * perGroup..<(g + 1) * perGroup).sorted { importance[l][$0] > importance[l][$1] }.prefix(keep).sorted()
            }
        }
    }
    try model.copyPruned(from: source, layers: kept, ffnChannels: channels, queryHeads: heads, residualChannels: residual)
    if config.student.bridge == .linear {
        guard residual == nil else {
            throw KDError.invalidInput(what: "student.bridge: linear", expected: "the teacher's model.dim (\(source.config.dim); the map acts on the whole stream)",
                                       found: "model.dim \(config.model.dim)")
        }
        guard !source.config.familySpec.postNorms else {
            throw KDError.invalidInput(what: "student.bridge: linear", expected: "a family whose FFN output adds to the stream as it is (llama, qwen2, qwen3)",
                                       found: "\(source.config.family.rawValue), which norms it first")
        }
        let runs = LinearBridge.runs(kept: kept, teacherLayers: source.config.layers)
        let started = monotonicSeconds()
        for r in try LinearBridge.apply(to: model, from: source, kept: kept, runs: runs, tokens: toks, batches: cb, b: b, t: seqLen) {
            KDLog.info(String(format: "  bridge: blocks %d–%d as a linear map merged into the down projection of block %d (student %d): seam error %.1f → %.1f per token on %d tokens",
                              r.run.first, r.run.last, r.run.before, kept.firstIndex(of: r.run.before) ?? -1, r.before, r.after, r.rows))
        }
        if runs.isEmpty { KDLog.info("  bridge: no dropped run has a kept block before it; nothing to bridge") }
        KDLog.info(String(format: "  bridge: %.1f s", monotonicSeconds() - started))
    }
    return StudentCut(blocks: kept, channels: residual)
}
