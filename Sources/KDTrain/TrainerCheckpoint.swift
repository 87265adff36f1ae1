// The trainer's checkpoints: every part hands rank 0 its state (the sharded ranges gathered), rank 0 writes one
// checkpoint layout (KDCheckpoint), and a resume sends every part its state back — at any world size and sharding.
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDData
import KDFormats
import KDModel
import KDLoss
import KDOps
import KDQuant

extension Trainer {
    /// Weights besides the student's that a checkpoint must carry: the EMA self-teacher.
    var emaWeights: [String: Slab] { placement?.checkpointWeights ?? [:] }

    public var checkpointStore: CheckpointStore { CheckpointStore(root: config.checkpoint.dir, keep: config.checkpoint.keep) }

    /// Rank 0 writes a checkpoint of the current step (every rank hands it its range of the sharded state); every
    /// rank waits until it is complete.
    @discardableResult
    public func saveCheckpoint() throws -> String? {
        var path: String?
        let start = monotonicSeconds()
        let shard = optimizer.shard
        let scales = try qat?.scalesFile(root: 0)
        if let qat {
            // the checkpoint holds the full-precision weights; QAT re-quantizes them from its config when read
            if shard.isSplit {
                try comm.gather(qat.masters.base, counts: shard.counts, into: comm.rank == 0 ? model.params.base : nil, root: 0)
            } else if comm.rank == 0 {
                model.params.base.update(from: qat.masters.base, count: model.layout.count)
            }
        }
        if comm.rank == 0 {
            var state = TrainingState(step: step, sampleCursor: sampleCursor, worldSize: comm.worldSize, lr: lastLR, config: try config.yaml(),
                                      teachers: teacherManifest)
            var files = extraCheckpointFiles
            if let scales { files[CheckpointFile.qatScales] = scales }
            if let p = hiddenProjection { files[CheckpointFile.hiddenProjection] = try p.checkpointFile() }
            if let distillm {
                state.onPolicy = distillm.checkpointState
                files[CheckpointFile.replay] = distillm.replay.serialized()
            }
            path = try checkpointStore.save(model: model, moments: optimizer.momentsToWrite(root: 0), state: state, extraFiles: files,
                                            extraWeights: emaWeights)
            KDLog.info(String(format: "checkpoint %@ written in %.2f s", path!, monotonicSeconds() - start))
        }
        try optimizer.sendMoments(root: 0)
        try comm.barrier()
        // rank 0's weights are the masters now: quantize again (and gather the ranges when split)
        if qat != nil, comm.rank == 0 || shard.isSplit { try refreshWeights() }
        lastCheckpointTime = monotonicSeconds()
        return path
    }

    /// Rank 0 loads the checkpoint in `dir` (verified) and sends weights, moments and position to every rank (each
    /// rank its range of sharded state), so ranks need no shared file system. A checkpoint resumes at any world size
    /// and sharding: the global sample cursor carries on, and checkpoints always hold the whole slab.
    public func resume(from dir: String) throws {
        var header = [0.0, 0.0, 0.0]
        let start = monotonicSeconds()
        var written = 0
        var onPolicy: OnPolicyCheckpoint?, replayData: Data?
        if comm.rank == 0 {
            let state = try CheckpointStore.verify(dir: dir)
            if state.teachers != teacherManifest, !allowTeacherChange {
                func show(_ m: [TeacherManifestEntry]) -> String { m.isEmpty ? "none" : m.map { "\($0.path) (\($0.bytes) bytes, \($0.checksum))" }.joined(separator: ", ") }
                throw CheckpointError.teacherMismatch(dir: dir, expected: show(teacherManifest), found: show(state.teachers))
            }
            // tensors are read by name, so a shallower model would silently take the first blocks of a deeper one
            if let saved = try? RunConfig.parse(yaml: state.config, source: (dir as NSString).appendingPathComponent(CheckpointFile.state)), saved.model != config.model {
                let a = saved.model, b = config.model
                let diff = [("layers", a.layers, b.layers), ("dim", a.dim, b.dim), ("heads", a.heads, b.heads), ("head_dim", a.headSize, b.headSize),
                            ("kv_heads", a.kvHeads, b.kvHeads),
                            ("ffn_dim", a.ffnDim, b.ffnDim), ("vocab_size", a.vocabSize, b.vocabSize), ("max_seq_len", a.maxSeqLen, b.maxSeqLen)]
                    .filter { $0.1 != $0.2 }.map { "\($0.0) \($0.1), this config \($0.2)" }
                throw CheckpointError.shapeMismatch(dir: dir, reason: "the checkpoint has another model shape (\(diff.isEmpty ? "rope or norm settings differ" : diff.joined(separator: ", "))); "
                    + "point checkpoint.dir at a new folder for this config, or resume with the checkpoint's model section")
            }
            // unsplit moments load in place; split ones go to their owners tensor by tensor as they are read
            try CheckpointStore.load(dir: dir, model: model, moments: optimizer.momentsToRead(root: 0), extraWeights: emaWeights)
            header = [Double(state.step), Double(state.sampleCursor), Double(state.lr)]
            written = state.worldSize
            if distillm != nil {
                guard let policy = state.onPolicy,
                      let data = try? Data(contentsOf: URL(fileURLWithPath: (dir as NSString).appendingPathComponent(CheckpointFile.replay))) else {
                    throw CheckpointError.shapeMismatch(dir: dir, reason: "no distillm state (its threshold and \(CheckpointFile.replay)) to resume policy.mode distillm")
                }
                (onPolicy, replayData) = (policy, data)
            }
        } else {
            try optimizer.receiveMoments(layout: model.layout, root: 0)
        }
        try comm.broadcast(&header, root: 0)
        try distillm?.restore(onPolicy, buffer: replayData, comm: comm)
        for slab in [model.params] + emaWeights.values { try broadcastFloats(comm, slab.base, count: slab.count) }
        try optimizer.broadcastMoments(root: 0)
        try qat?.restore(dir: comm.rank == 0 ? dir : nil)
        try hiddenProjection?.restore(dir: comm.rank == 0 ? dir : nil)
        KDLog.info(String(format: "resumed from %@: step %d, sample cursor %d (written by %d rank%@), verified and loaded in %.2f s",
                          dir, Int(header[0]), Int(header[1]), written, written == 1 ? "" : "s", monotonicSeconds() - start))
        step = Int(header[0])
        sampleCursor = Int(header[1])
        lastLR = Float(header[2])
        try refreshWeights()
    }
}
