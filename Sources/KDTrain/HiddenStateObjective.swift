// Hidden-state distillation (`distill.hidden_weight`): the student's block outputs pulled toward the teacher's, one
// term per (student block, teacher block) pair, w/pairs · ‖h − h_teacher‖² / ‖h_teacher‖² per loss token (FitNets,
// TinyBERT). The part owns the pairs, the teacher's captured block outputs of the current micro-batch, their narrowing
// to a student cut narrower, the learned projections for a student of another width, and the step's loss sum.
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDLoss
import KDModel

final class HiddenStateObjective: TrainerPart {
    /// (student block, teacher block) pairs whose outputs are matched.
    let pairs: [(student: Int, teacher: Int)]
    /// Weight of the term per pair (distill.hidden_weight / pairs), rows of a micro-batch, the student's width.
    let weight: Float, rows: Int, dim: Int
    /// For a student cut narrower: the teacher's residual channels it kept, the teacher's width, and the teacher's
    /// outputs on those channels, one [rows, dim] buffer per pair.
    let channels: [Int]?, teacherDim: Int
    let narrowed: [Slab]
    /// For a student of another width not cut from its teacher: the learned projections to the teacher's width.
    let projection: HiddenProjection?
    /// The teacher's block outputs for the current micro-batch, aligned with `pairs`.
    var teacherOutputs: [UnsafePointer<Float>] = []
    /// This step's loss so far (summed over loss tokens and pairs, unweighted).
    var sum = 0.0

    /// The part for `config`, or nil when the hidden-state loss is off. Asks the placement to capture the teacher's
    /// block outputs. `cutBlocks`/`channels`: what a student cut from its teacher kept.
    init?(config: RunConfig, cutBlocks: [Int], channels: [Int]?, teacher: Transformer?, placement: (any TeacherPlacement)?,
          comm: any Communicator) throws {
        let d = config.distill, t = config.train
        guard d.hiddenWeight > 0 else { return nil }
        guard let placement, let teacher else {
            throw KDError.invalidInput(what: "distill.hidden_weight", expected: "a teacher whose block outputs to match", found: "no teacher")
        }
        pairs = hiddenPairs(d.hiddenLayers, cutBlocks: cutBlocks, teacherLayers: teacher.config.layers)
        try placement.captureBlockOutputs(pairs.map(\.teacher))
        weight = d.hiddenWeight / Float(pairs.count)
        rows = t.microBatch * t.seqLen
        dim = config.model.dim
        teacherDim = teacher.config.dim
        self.channels = channels
        narrowed = channels == nil ? [] : pairs.map { _ in Slab(count: t.microBatch * t.seqLen * config.model.dim) }
        if channels == nil, teacherDim != dim {
            let p = HiddenProjection(pairs: pairs.count, studentDim: dim, teacherDim: teacherDim, rows: rows, comm: comm)
            KDLog.info(String(format: "  hidden-state loss through learned projections %d → %d, one per pair (%d pairs, %.2fM parameters, not exported)",
                              dim, teacherDim, pairs.count, Double(p.parameterCount) / 1e6))
            projection = p
        } else {
            projection = nil
        }
    }

    /// The teacher's block outputs of this micro-batch (`TeacherOutput.blockOutputs`); a student cut narrower matches
    /// the teacher's stream on the channels it kept.
    func capture(_ outputs: [UnsafePointer<Float>]) {
        guard let channels else { teacherOutputs = outputs; return }
        teacherOutputs = outputs.enumerated().map { k, src in
            let dst = narrowed[k].base
            for r in 0..<rows { for (j, c) in channels.enumerated() { dst[r * channels.count + j] = src[r * teacherDim + c] } }
            return UnsafePointer(dst)
        }
    }

    /// At student block l in backward: weight · lossScale · ∂/∂h of the pairs' terms into `dx` (dL/d(block l's output)),
    /// the loss into this step's sum.
    func addGradient(block l: Int, student: Transformer, into dx: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>, lossScale: Float) {
        for (k, pair) in pairs.enumerated() where pair.student == l {
            if let projection {
                sum += projection.loss(pair: k, student: student.blockOutput(l), teacher: teacherOutputs[k], rows: rows, targets: targets,
                                       dx: dx, scale: weight * lossScale)
            } else {
                sum += hiddenStateLoss(student: student.blockOutput(l), teacher: teacherOutputs[k], rows: rows, c: dim, targets: targets,
                                       grad: dx, scale: weight * lossScale)
            }
        }
    }

    /// This step's loss sum, which starts again from zero.
    func takeSum() -> Double {
        defer { sum = 0 }
        return sum
    }

    /// The projections' own update (collective).
    func afterUpdate(_ u: UpdateContext) throws {
        try StepProfile.phase(.optimizer) { try projection?.step(lr: u.lr, optimizer: u.optimizer, t: u.t) }
    }

    func save(into contents: inout CheckpointContents?) throws {
        if let projection, contents != nil { contents?.files[CheckpointFile.hiddenProjection] = try projection.checkpointFile() }
    }

    func restore(from source: CheckpointSource?) throws { try projection?.restore(dir: source?.dir) }
}

/// The (student block, teacher block) pairs of `layers` for a student that kept the teacher's blocks `cutBlocks`.
func hiddenPairs(_ layers: HiddenLayers, cutBlocks: [Int], teacherLayers: Int) -> [(student: Int, teacher: Int)] {
    switch layers {
    case .auto: return cutBlocks.enumerated().map { ($0, $1) }
    case .seams: return cutBlocks.indices.map { l in (l, l + 1 < cutBlocks.count ? cutBlocks[l + 1] - 1 : teacherLayers - 1) }
    case .pairs(let p): return p.map { ($0[0], $0[1]) }
    }
}
