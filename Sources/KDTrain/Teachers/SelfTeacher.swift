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

    init(student: Transformer, ema decay: Float?, topK: (k: Int, temperature: Float)?, lmHeadChunk: Int) {
        model = Transformer(config: student.config, needsGrad: false, lmHeadChunk: lmHeadChunk)
        model.params.base.update(from: student.params.base, count: student.layout.count)
        self.decay = decay
        replicated = ReplicatedTeachers(teachers: [model], weights: [1], combine: .mixture, topK: topK, vocabSize: student.config.vocabSize)
    }

    func output(for batch: TeacherBatch) throws -> TeacherOutput { try replicated.output(for: batch) }
    var bytesPerToken: Int { replicated.bytesPerToken }
    var localTeachers: [(model: Transformer, weight: Float)] { replicated.localTeachers }

    /// EMA: this rank's range of the teacher moves toward the student's, then every rank's range is gathered.
    func afterUpdate(weights p: UnsafePointer<Float>, shard: SlabShard, comm: any Communicator) throws {
        guard let d = decay else { return }
        let r = shard.range, q = model.params.base + r.lowerBound
        Parallel.forRanges(r.count, minPerThread: 1 << 16) { lo, hi in
            for i in lo..<hi { q[i] = d * q[i] + (1 - d) * p[i] }
        }
        if shard.isSplit { try comm.allGather(model.params.base, counts: shard.counts) }
    }

    var checkpointWeights: [String: Slab] { decay == nil ? [:] : [CheckpointFile.emaTeacher: model.params] }
    var summary: String { decay.map { "the student itself (self: ema, decay \($0))" } ?? "the student itself (self: initial, frozen)" }
}
