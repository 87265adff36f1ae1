// The one protocol a part of the trainer implements for its state (torchtitan's `state_dict` / `load_state_dict`,
// plus its after-update hook): the trainer saves a checkpoint and resumes one as a loop over its parts, and calls
// every part once after each optimizer update. The student's weights and AdamW moments are the checkpoint's core
// (KDCheckpoint writes them); a part adds typed state, files or weight slabs to the same one layout.
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDFormats
import KDModel

/// What rank 0 writes besides the student's weights and moments; the parts fill it in.
public struct CheckpointContents {
    /// state.json: step, cursor, config, teachers, and any part's typed state.
    public var state: TrainingState
    /// More files of the checkpoint, by ``CheckpointFile`` name.
    public var files: [String: Data] = [:]
    /// Slabs with the student's layout, each written as NAME.safetensors (an EMA teacher).
    public var weights: [String: Slab] = [:]
}

/// A verified checkpoint being resumed, on the rank that reads it.
public struct CheckpointSource {
    public let dir: String
    public let state: TrainingState

    /// The checkpoint's file `name`, nil when it has none.
    public func file(_ name: String) -> Data? {
        try? Data(contentsOf: URL(fileURLWithPath: path(name)))
    }

    public func path(_ name: String) -> String { (dir as NSString).appendingPathComponent(name) }

    /// Reads the slab saved as `name` (``CheckpointContents/weights``) with the student's `layout` into `slab`.
    public func readWeights(_ name: String, layout: ParameterLayout, into slab: Slab) throws {
        try CheckpointStore.loadWeights(dir: dir, name: name, layout: layout, into: slab)
    }
}

/// What a part sees after each optimizer update.
public struct UpdateContext {
    /// Learning rate of the step and the AdamW step number (1-based).
    public let lr: Float, t: Int
    /// The optimizer's config (a part with its own parameters trains them on the same schedule).
    public let optimizer: OptimizerConfig
    /// The updated full-precision weights of this rank's range (`shard.range`) of the student's slab.
    public let weights: UnsafePointer<Float>
    public let shard: SlabShard
}

/// A part of the trainer with state a checkpoint carries, or work after every update. Each call is collective: every
/// rank makes it, in the same order.
public protocol TrainerPart: AnyObject {
    /// Adds this part's state; `contents` is non-nil on rank 0 only (the writer), other ranks hand theirs over.
    func save(into contents: inout CheckpointContents?) throws
    /// Restores this part's state; `source` is non-nil on rank 0 only (the reader), which sends every rank its state.
    func restore(from source: CheckpointSource?) throws
    /// After each optimizer update.
    func afterUpdate(_ update: UpdateContext) throws
}

extension TrainerPart {
    public func save(into contents: inout CheckpointContents?) throws {}
    public func restore(from source: CheckpointSource?) throws {}
    public func afterUpdate(_ update: UpdateContext) throws {}
}

/// Refuses a checkpoint a run cannot continue from: other teacher files (unless allowed) or another student shape
/// (tensors are read by name, so a shallower model would silently take the first blocks of a deeper one).
func checkResumable(_ source: CheckpointSource, manifest: [TeacherManifestEntry], allowTeacherChange: Bool, model: ModelConfig) throws {
    let (dir, state) = (source.dir, source.state)
    if state.teachers != manifest, !allowTeacherChange {
        func show(_ m: [TeacherManifestEntry]) -> String { m.isEmpty ? "none" : m.map { "\($0.path) (\($0.bytes) bytes, \($0.checksum))" }.joined(separator: ", ") }
        throw CheckpointError.teacherMismatch(dir: dir, expected: show(manifest), found: show(state.teachers))
    }
    if let saved = try? RunConfig.parse(yaml: state.config, source: source.path(CheckpointFile.state)), saved.model != model {
        let a = saved.model, b = model
        let diff = [("layers", a.layers, b.layers), ("dim", a.dim, b.dim), ("heads", a.heads, b.heads), ("head_dim", a.headSize, b.headSize),
                    ("kv_heads", a.kvHeads, b.kvHeads),
                    ("ffn_dim", a.ffnDim, b.ffnDim), ("vocab_size", a.vocabSize, b.vocabSize), ("max_seq_len", a.maxSeqLen, b.maxSeqLen)]
            .filter { $0.1 != $0.2 }.map { "\($0.0) \($0.1), this config \($0.2)" }
        throw CheckpointError.shapeMismatch(dir: dir, reason: "the checkpoint has another model shape (\(diff.isEmpty ? "rope or norm settings differ" : diff.joined(separator: ", "))); "
            + "point checkpoint.dir at a new folder for this config, or resume with the checkpoint's model section")
    }
}
