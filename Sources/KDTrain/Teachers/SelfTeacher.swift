// Self-distillation (`teacher.self: initial | ema`): the teacher is a second copy of the student's shape, never
// trained by gradients — frozen at the student's initial weights, or an exponential moving average of them updated
// after every step (θ_T ← d·θ_T + (1 − d)·θ) and carried by checkpoints. `self: checkpoint` is an ordinary teacher
// (the checkpoint folder is a Hugging Face model) and runs replicated.
import KDCheckpoint
import KDComm
import KDCore
import KDModel

final class SelfTeacherPlacement: TeacherPlacement {
    /// The teacher copy.
    let model: Transformer
    /// EMA decay d; nil = frozen.
    let decay: Float?
    let replicated: ReplicatedTeachers
    let comm: any Communicator

    init(student: Transformer, ema decay: Float?, topK: (k: Int, temperature: Float)?, lmHeadChunk: Int, comm: any Communicator) {
        self.comm = comm
        model = Transformer(config: student.config, needsGrad: false, lmHeadChunk: lmHeadChunk)
        model.params.base.update(from: student.params.base, count: student.layout.count)
        self.decay = decay
        replicated = ReplicatedTeachers(teachers: [model], weights: [1], combine: .mixture, topK: topK, vocabSize: student.config.vocabSize)
    }

    func output(for batch: TeacherBatch) throws -> TeacherOutput { try replicated.output(for: batch) }
    var bytesPerToken: Int { replicated.bytesPerToken }
    var localTeachers: [(model: Transformer, weight: Float)] { replicated.localTeachers }

    /// EMA: this rank's range of the teacher moves toward the student's, then every rank's range is gathered.
    func afterUpdate(_ u: UpdateContext) throws {
        try StepProfile.phase(.optimizer) { try moveAverage(u) }
    }

    func moveAverage(_ u: UpdateContext) throws {
        guard let d = decay else { return }
        let r = u.shard.range, q = model.params.base + r.lowerBound, p = u.weights
        Parallel.forRanges(r.count, minPerThread: 1 << 16) { lo, hi in
            for i in lo..<hi { q[i] = d * q[i] + (1 - d) * p[i] }
        }
        if u.shard.isSplit { try comm.allGather(model.params.base, counts: u.shard.counts) }
    }

    /// An EMA teacher's weights ride in every checkpoint (a frozen one is the initial student, rebuilt from the seed).
    func save(into contents: inout CheckpointContents?) throws {
        if decay != nil { contents?.weights[CheckpointFile.emaTeacher] = model.params }
    }

    func restore(from source: CheckpointSource?) throws {
        guard decay != nil else { return }
        if let source { try source.readWeights(CheckpointFile.emaTeacher, layout: model.layout, into: model.params) }
        try broadcastFloats(comm, model.params.base, count: model.params.count)
    }

    var summary: String { decay.map { "the student itself (self: ema, decay \($0))" } ?? "the student itself (self: initial, frozen)" }
}
