// Summing the student's gradient over the ranks while backward still runs (llm.c's per-layer all-reduce, PyTorch DDP's
// buckets): every region is issued as soon as backward has finished it — the embedding table and the tail right after
// the LM head, each block after its own backward — and polled between pieces of work, since MPI progresses only inside
// MPI calls. `sharding: gradients` reduce-scatters the same buckets, so each rank receives only its range's sum. The
// embedding lookup's gradient is sparse: every rank's rows are all-gathered afterwards and applied by everyone.
import Foundation
import KDComm
import KDConfig
import KDCore
import KDModel

/// The gradient exchange of one student.
public final class GradientSync {
    let comm: any Communicator
    let model: Transformer
    /// Who owns which range: with `scatter`, a bucket's sum reaches only its owners.
    let shard: SlabShard
    let scatter: Bool
    var pending: [any PendingReduce] = []
    var failure: (any Error)?
    /// This rank's embedding-lookup gradient, handed over by the last micro-batch's backward.
    var embedding: EmbeddingGradient?
    /// Every rank's embedding-output gradient and tokens, kept between steps.
    var gathered = Slab(count: 0)
    /// Seconds the last ``finish()`` waited (the exchange not hidden behind backward).
    public private(set) var exposedSeconds = 0.0

    /// `shard` is the optimizer's; `scatter` reduce-scatters instead of all-reducing (ZeRO-2).
    public init(comm: any Communicator, model: Transformer, shard: SlabShard, scatter: Bool) {
        precondition(!scatter || shard.parts == comm.worldSize, "reduce-scatter needs one range per rank")
        self.comm = comm
        self.model = model
        self.shard = shard
        self.scatter = scatter
    }

    /// Whether there is anything to exchange.
    public var active: Bool { comm.worldSize > 1 }

    /// After the LM head and final norm: the embedding table's region and the tail (final norm, untied head).
    public func issueHead() {
        let layout = model.layout
        issue(0, layout.blockRange(0).lowerBound)
        issue(layout.blockRange(model.config.layers - 1).upperBound, layout.count)
    }

    /// After block l's backward: its region of the slab.
    public func issueBlock(_ l: Int) {
        let r = model.layout.blockRange(l)
        issue(r.lowerBound, r.upperBound)
    }

    /// Lets the sums in flight progress (MPI moves non-blocking reduces forward only inside its calls).
    public func poll() { issue(0, 0) }

    /// Issues the sum of the gradient slab's range [lo, hi) and lets the ones in flight progress.
    func issue(_ lo: Int, _ hi: Int) {
        guard active else { return }
        do {
            if hi > lo {
                let g = model.grads!.base + lo
                pending.append(scatter ? try comm.startReduceScatterSum(g, counts: shard.counts(within: lo, hi))
                                       : try comm.startAllReduceSum(g, count: hi - lo))
            }
            for p in pending { _ = try p.test() }
        } catch { failure = failure ?? error }
    }

    /// This rank's embedding-lookup gradient of the last micro-batch: ``finish()`` adds every rank's into the table
    /// (the table's region may be in flight meanwhile). It must stay valid until then.
    public func exchangeEmbedding(_ g: EmbeddingGradient) { embedding = g }

    /// Waits for every bucket and adds every rank's embedding-lookup gradient; the gradient (this rank's range, or
    /// all of it without `scatter`) is then the sum over ranks.
    public func finish() throws {
        try StepProfile.phase(.exchange) { try complete() }
    }

    func complete() throws {
        defer { pending.removeAll(); embedding = nil }
        if let failure {
            self.failure = nil
            throw failure
        }
        let start = monotonicSeconds()
        defer { exposedSeconds = monotonicSeconds() - start }
        guard active else { return }
        for p in pending { try p.wait() }
        guard let mine = embedding else { preconditionFailure("GradientSync.finish: no embedding gradient handed over (exchangeEmbedding)") }
        let c = model.config.dim, ws = comm.worldSize, n = mine.n
        if gathered.count < ws * n * (c + 1) { gathered = Slab(count: ws * n * (c + 1)) }
        let allD = gathered.base, allT = UnsafeMutableRawPointer(gathered.base + ws * n * c).assumingMemoryBound(to: Int32.self)
        try comm.allGather(UnsafeRawPointer(mine.dout), bytes: n * c * 4, into: UnsafeMutableRawPointer(allD))
        try comm.allGather(UnsafeRawPointer(mine.tokens), bytes: n * 4, into: UnsafeMutableRawPointer(allT))
        for r in 0..<ws { model.applyEmbeddingGradient(EmbeddingGradient(dout: allD + r * n * c, tokens: allT + r * n, n: n)) }
    }

    /// Median seconds of a blocking all-reduce of the whole gradient slab (what overlapping hides), over `repeats`.
    public func measureBlockingAllReduce(repeats: Int = 3) throws -> Double {
        guard active, let g = model.grads else { return 0 }
        let copy = Slab(count: g.count)
        var times: [Double] = []
        for _ in 0..<repeats {
            copy.base.update(from: g.base, count: g.count)
            try comm.barrier()
            let t0 = monotonicSeconds()
            if scatter { try comm.reduceScatterSum(copy.base, counts: shard.counts) } else { try comm.allReduceSum(copy.base, count: copy.count) }
            times.append(monotonicSeconds() - t0)
        }
        return median(times)
    }
}
