// Learned linear projections for the hidden-state loss between a student and a teacher of different widths (FitNets'
// regressors): one matrix P_k [teacher dim, student dim] per block pair, the loss ‖P_k·s − t‖² / ‖t‖² on each token.
// One per pair rather than one shared (TinyBERT): the stream's scale and basis change with depth, and a pair costs
// d_t·d_s floats (576 × 256: 0.6 MB). The projections train with the student (AdamW on the optimizer's schedule, no
// weight decay, their own clipping norm), are replicated on every rank (their gradient is all-reduced once per step),
// ride in every checkpoint (`hidden_projection.safetensors`, weights and moments) and are never exported: they are
// part of the objective, not of the student.
// They start at zero: the first steps fit the map before any gradient reaches the student (a random start would pull
// the student toward a random image of the teacher's stream).
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDFormats
import KDLoss
import KDOps

/// The pairs' projection matrices, their gradient, AdamW moments and per-micro-batch work buffers.
final class HiddenProjection {
    let pairs: Int, studentDim: Int, teacherDim: Int
    /// [pairs, teacherDim, studentDim] each.
    let weights: Slab, grads: Slab, m: Slab, v: Slab
    /// P·s and the loss's gradient with respect to it, [rows, teacherDim].
    let projected: Slab, residual: Slab
    let comm: any Communicator

    init(pairs: Int, studentDim: Int, teacherDim: Int, rows: Int, comm: any Communicator) {
        (self.pairs, self.studentDim, self.teacherDim, self.comm) = (pairs, studentDim, teacherDim, comm)
        let n = pairs * teacherDim * studentDim
        (weights, grads, m, v) = (Slab(count: n), Slab(count: n), Slab(count: n), Slab(count: n))
        (projected, residual) = (Slab(count: rows * teacherDim), Slab(count: rows * teacherDim))
    }

    var parameterCount: Int { weights.count }
    func matrix(_ k: Int) -> Int { k * teacherDim * studentDim }

    /// Σ over loss rows of ‖P_k·s_r − t_r‖² / (‖t_r‖² + ε); when `dx` is given, scale · its gradient with respect to s is
    /// added into dx and with respect to P_k into the projection's gradient.
    /// - Shapes: student, dx [rows, studentDim] · teacher [rows, teacherDim] · targets [rows]
    func loss(pair k: Int, student s: UnsafePointer<Float>, teacher t: UnsafePointer<Float>, rows: Int, targets: UnsafePointer<Int32>,
              dx: UnsafeMutablePointer<Float>?, scale: Float) -> Double {
        let p = weights.base + matrix(k)
        matmulForward(out: projected.base, inp: s, weight: p, n: rows, c: studentDim, oc: teacherDim)
        guard let dx else {
            return hiddenStateLoss(student: projected.base, teacher: t, rows: rows, c: teacherDim, targets: targets, grad: nil, scale: 0)
        }
        residual.base.initialize(repeating: 0, count: rows * teacherDim)
        let total = hiddenStateLoss(student: projected.base, teacher: t, rows: rows, c: teacherDim, targets: targets, grad: residual.base, scale: scale)
        matmulBackward(dinp: dx, dweight: grads.base + matrix(k), dout: residual.base, inp: s, weight: p, n: rows, c: studentDim, oc: teacherDim)
        return total
    }

    /// The step's update (collective): the gradient summed over ranks, clipped to `grad_clip` on its own norm, AdamW
    /// at the student's learning rate without weight decay; the gradient is zeroed for the next step.
    func step(lr: Float, optimizer c: OptimizerConfig, t: Int) throws {
        try comm.allReduceSum(grads.base, count: grads.count)
        let norm = c.gradClip > 0 ? clipGradNorm(grads.base, count: grads.count, maxNorm: c.gradClip) : globalNorm(grads.base, count: grads.count)
        guard norm.isFinite else { throw KDError.nonFinite(what: "hidden-state projection gradient norm", step: t) }
        adamWUpdate(param: weights.base, grad: grads.base, m: m.base, v: v.base, count: weights.count,
                    step: AdamWStep(lr: lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weightDecay: 0, t: t))
        grads.zero()
    }

    static let names = ["hidden_projection", CheckpointFile.firstMoment + "hidden_projection", CheckpointFile.secondMoment + "hidden_projection"]
    var shape: [Int] { [pairs, teacherDim, studentDim] }

    /// The checkpoint file: weights and moments (every rank holds the same).
    func checkpointFile() throws -> Data {
        try safetensorsData(tensors: zip(Self.names, [weights, m, v]).map { SafetensorsEntry(name: $0, shape: shape, data: $1.base) })
    }

    /// Root reads the checkpoint's file in `dir` and every rank receives it (collective).
    func restore(dir: String?, root: Int = 0) throws {
        if comm.rank == root, let dir {
            let path = (dir as NSString).appendingPathComponent(CheckpointFile.hiddenProjection)
            guard FileManager.default.fileExists(atPath: path) else {
                throw CheckpointError.shapeMismatch(dir: dir, reason: "\(CheckpointFile.hiddenProjection) is missing (this run's hidden-state loss learns a projection)")
            }
            let file = try SafetensorsFile(path: path)
            for (name, slab) in zip(Self.names, [weights, m, v]) {
                guard let t = file.tensor(name), t.shape == shape, t.dtype == .f32 else {
                    let found = file.tensor(name).map { "\($0.dtype) \($0.shape)" } ?? "none"
                    throw CheckpointError.shapeMismatch(dir: dir, reason: "\(CheckpointFile.hiddenProjection): tensor '\(name)': expected F32 \(shape), found \(found)")
                }
                try file.read(t, into: slab.base)
            }
        }
        for slab in [weights, m, v] { try broadcastFloats(comm, slab.base, count: slab.count, root: root) }
        grads.zero()
    }
}
