// AdamW with linear warmup and cosine decay over the range of the parameter slab this rank owns (the whole slab
// unless `optimizer.sharding` splits it): its moments exist for that range only, clipping uses the norm over all
// ranges (torchtitan's `optimizers.step()` with ZeRO-1's partitioned state).
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
        let c = config, g = grads + shard.range.lowerBound
        for p in pieces {
            adamWUpdate(param: params + p.local.lowerBound, grad: g + p.local.lowerBound, m: m.base + p.local.lowerBound,
                        v: v.base + p.local.lowerBound, count: p.local.count,
                        step: AdamWStep(lr: lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weightDecay: p.decay ? c.weightDecay : 0, t: t))
        }
    }

    // MARK: - Checkpoint state

    /// The whole slab's moments on `root` (gathered from every rank's range; nil elsewhere). Collective.
    public func gatheredMoments(root: Int = 0) throws -> (m: Slab, v: Slab)? {
        guard shard.isSplit else { return comm.rank == root ? (m, v) : nil }
        let total = shard.counts.reduce(0, +)
        let full = comm.rank == root ? (Slab(count: total), Slab(count: total)) : nil
        try comm.gather(m.base, counts: shard.counts, into: full?.0.base, root: root)
        try comm.gather(v.base, counts: shard.counts, into: full?.1.base, root: root)
        return full
    }

    /// Every rank takes its range of the whole slab's moments read on `root` (nil elsewhere). Collective.
    public func restoreMoments(m fullM: UnsafePointer<Float>?, v fullV: UnsafePointer<Float>?, root: Int = 0) throws {
        guard shard.isSplit else {
            if let fullM, let fullV {
                m.base.update(from: fullM, count: shard.range.count)
                v.base.update(from: fullV, count: shard.range.count)
            }
            try broadcastFloats(comm, m.base, count: shard.range.count, root: root)
            try broadcastFloats(comm, v.base, count: shard.range.count, root: root)
            return
        }
        try comm.scatter(fullM, counts: shard.counts, into: m.base, root: root)
        try comm.scatter(fullV, counts: shard.counts, into: v.base, root: root)
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
