// AdamW with linear warmup and cosine decay over the range of the parameter slab this rank owns (the whole slab
// unless `optimizer.sharding` splits it): its moments exist for that range only, clipping uses the norm over all
// ranges (torchtitan's `optimizers.step()` with ZeRO-1's partitioned state).
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDModel
import KDOps

/// AdamW over this rank's range of the student's parameter slab.
public final class Optimizer {
    public let config: OptimizerConfig
    /// The slab's split; this rank updates `shard.range`.
    public let shard: SlabShard
    /// First and second moments of this rank's range (index 0 = the range's first Float).
    public let m: Slab, v: Slab
    /// This rank's range cut at tensor boundaries (local offsets) and whether each piece takes weight decay.
    let pieces: [(local: Range<Int>, decay: Bool)]
    let comm: any Communicator
    let totalSteps: Int

    public init(config: OptimizerConfig, layout: ParameterLayout, shard: SlabShard, comm: any Communicator, totalSteps: Int) {
        self.config = config
        self.shard = shard
        self.comm = comm
        self.totalSteps = totalSteps
        let r = shard.range
        m = Slab(count: max(r.count, 1))
        v = Slab(count: max(r.count, 1))
        pieces = layout.entries.compactMap { e in
            let lo = max(r.lowerBound, e.offset), hi = min(r.upperBound, e.offset + e.count)
            return hi > lo ? ((lo - r.lowerBound)..<(hi - r.lowerBound), e.isMatrix) : nil
        }
    }

    /// Learning rate of 0-based `step`.
    public func learningRate(step: Int) -> Float { config.learningRate(step: step, total: totalSteps) }

    /// The global norm of the gradient (every rank's range; `grads` is the slab-sized gradient, this rank's range
    /// final), and this range scaled so that norm is at most grad_clip. Collective when the slab is split.
    public func clip(grads: UnsafeMutablePointer<Float>) throws -> Double {
        try StepProfile.phase(.optimizer) { try clipRange(grads) }
    }

    func clipRange(_ grads: UnsafeMutablePointer<Float>) throws -> Double {
        guard shard.isSplit else { return clipGradNorm(grads, count: shard.range.count, maxNorm: config.gradClip) }
        let r = shard.range, local = globalNorm(grads + r.lowerBound, count: r.count)
        var squares = [local * local]
        try comm.allReduceSum(&squares)
        let norm = squares[0].squareRoot()
        if config.gradClip > 0, norm > Double(config.gradClip), norm.isFinite {
            scaleRow(grads + r.lowerBound, r.count, Float(Double(config.gradClip) / (norm + 1e-6)))
        }
        return norm
    }

    /// One AdamW update at 1-based step `t`: `params` points at this range's first weight, `grads` at the slab's
    /// gradient.
    public func step(params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>, lr: Float, t: Int) {
        StepProfile.phase(.optimizer) { update(params: params, grads: grads, lr: lr, t: t) }
    }

    func update(params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>, lr: Float, t: Int) {
        let c = config, g = grads + shard.range.lowerBound
        for p in pieces {
            adamWUpdate(param: params + p.local.lowerBound, grad: g + p.local.lowerBound, m: m.base + p.local.lowerBound,
                        v: v.base + p.local.lowerBound, count: p.local.count,
                        step: AdamWStep(lr: lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weightDecay: p.decay ? c.weightDecay : 0, t: t))
        }
    }

    // MARK: - Checkpoint state

    /// The whole slab's moments for rank 0's checkpoint writer: the slabs themselves when unsplit; split, a stream
    /// that gathers them piece by piece (16 MiB at a time), so no rank ever holds more than its range plus one piece.
    /// Every other rank must call ``sendMoments(root:)`` while rank 0 writes.
    public func momentsToWrite(root: Int = 0) -> MomentsToWrite {
        guard shard.isSplit else { return .slabs(m: m, v: v) }
        return .stream { emit in try withoutActuallyEscaping(emit) { try self.streamMoments(root: root, emit: $0) } }
    }

    /// A non-root rank's part of ``momentsToWrite(root:)`` (nothing on the root or when unsplit). Collective.
    public func sendMoments(root: Int = 0) throws {
        if shard.isSplit, comm.rank != root { try streamMoments(root: root, emit: nil) }
    }

    func streamMoments(root: Int, emit: ((UnsafeRawBufferPointer) throws -> Void)?) throws {
        let total = shard.counts.reduce(0, +), piece = min(total, 1 << 22), r = shard.range
        let buffer = comm.rank == root ? Slab(count: max(piece, 1)) : nil
        for slab in [m, v] {
            var c0 = 0
            while c0 < total {
                let c1 = min(total, c0 + piece)
                // this rank's part of [c0, c1), from its local slab (nothing when they do not meet)
                let mine = min(max(c0, r.lowerBound), r.upperBound) - r.lowerBound
                try comm.gather(slab.base + mine, counts: shard.counts(within: c0, c1), into: buffer?.base, root: root)
                if let emit, let buffer { try emit(UnsafeRawBufferPointer(start: buffer.base, count: (c1 - c0) * 4)) }
                c0 = c1
            }
        }
    }

    /// Where a resume on `root` puts the moments it reads: this rank's slabs when unsplit (``broadcastMoments(root:)``
    /// sends them on), else every tensor's range sent to its owner as it is read, while every other rank calls
    /// ``receiveMoments(layout:root:)``.
    public func momentsToRead(root: Int = 0) -> MomentsToRead {
        guard shard.isSplit else { return .slabs(m: m, v: v) }
        return .visit { second, e, data in try self.scatter(second: second, entry: e, data: data, root: root) }
    }

    /// A non-root rank's part of ``momentsToRead(root:)``, in step with rank 0's reading (nothing when unsplit).
    public func receiveMoments(layout: ParameterLayout, root: Int = 0) throws {
        guard shard.isSplit, comm.rank != root else { return }
        for e in layout.entries {
            for second in [false, true] { try scatter(second: second, entry: e, data: nil, root: root) }
        }
    }

    /// Unsplit: the moments read on `root` to every rank. Collective.
    public func broadcastMoments(root: Int = 0) throws {
        guard !shard.isSplit else { return }
        try broadcastFloats(comm, m.base, count: shard.range.count, root: root)
        try broadcastFloats(comm, v.base, count: shard.range.count, root: root)
    }

    /// One tensor's moment (`data` on root) cut by the ranks' ranges into each owner's slab.
    func scatter(second: Bool, entry e: ParameterLayout.Entry, data: UnsafePointer<Float>?, root: Int) throws {
        let r = shard.range, dst = (second ? v : m).base
        let mine = min(max(e.offset, r.lowerBound), r.upperBound) - r.lowerBound
        try comm.scatter(data, counts: shard.counts(within: e.offset, e.offset + e.count), into: dst + mine, root: root)
    }
}

/// `count` Floats from `root` to every rank, in pieces of at most 2^26 (MPI counts are Int32 bytes).
func broadcastFloats(_ comm: any Communicator, _ p: UnsafeMutablePointer<Float>, count: Int, root: Int = 0) throws {
    guard comm.worldSize > 1 else { return }
    var off = 0
    while off < count {
        let n = min(count - off, 1 << 26)
        try comm.broadcast(UnsafeMutableRawPointer(p + off), bytes: n * 4, root: root)
        off += n
    }
}
