// The split of the parameter slab among ranks (optimizer.sharding): complete, contiguous, row-aligned, near-equal;
// and the optimizer's ranges together update exactly what one unsplit optimizer updates.
import KDComm
import KDConfig
import KDCore
import KDModel
import Testing

@testable import KDTrain

@Test(arguments: [1, 2, 3, 4, 7])
func shardsCoverTheSlabOnRowBoundaries(worldSize: Int) {
    var m = ModelConfig()
    m.layers = 3; m.dim = 48; m.heads = 4; m.kvHeads = 2; m.ffnDim = 96; m.vocabSize = 300
    let layout = ParameterLayout(config: m)
    let shards = (0..<worldSize).map { SlabShard(layout: layout, worldSize: worldSize, rank: $0) }
    #expect(shards.allSatisfy { $0.counts == shards[0].counts })
    let s = shards[0]
    #expect(s.counts.reduce(0, +) == layout.count, "every Float owned once, none dropped")
    for r in 0..<worldSize {
        #expect(shards[r].range.lowerBound == (r == 0 ? 0 : shards[r - 1].range.upperBound))
        // within one row (the longest is ffn_dim) of the ideal 1/N
        #expect(abs(shards[r].range.upperBound - layout.count * (r + 1) / worldSize) <= 96)
        // a boundary inside a matrix falls on a row start
        let b = shards[r].range.upperBound
        if let e = layout.entries.first(where: { $0.isMatrix && $0.offset < b && b < $0.offset + $0.count }) {
            #expect((b - e.offset) % e.shape[1] == 0, "rank \(r) ends inside a row of \(e.name)")
        }
    }
    // the rows pieces of the matrices, over all ranks, are every row once
    let matrices = layout.entries.filter(\.isMatrix)
    var rows = [Int](repeating: 0, count: matrices.count)
    for sh in shards { for (i, rg) in sh.rows(of: matrices) { rows[i] += rg.count } }
    #expect(rows == matrices.map { $0.shape[0] })
    // a bucket's counts per owner add up to the bucket
    let bucket = layout.blockRange(1)
    #expect(s.counts(within: bucket.lowerBound, bucket.upperBound).reduce(0, +) == bucket.count)
}

@Test func shardedOptimizersUpdateWhatOneOptimizerUpdates() {
    var m = ModelConfig()
    m.layers = 2; m.dim = 32; m.heads = 4; m.kvHeads = 2; m.ffnDim = 64; m.vocabSize = 100
    let layout = ParameterLayout(config: m)
    let n = layout.count
    var o = OptimizerConfig()
    o.weightDecay = 0.3
    let rng = CounterRNG(seed: 5, purpose: .test)
    let p0 = (0..<n).map { rng.normal(UInt64($0)) }, g = (0..<n).map { rng.normal(UInt64($0), 1) }
    // one optimizer over everything, two steps
    var whole = p0
    let one = Optimizer(config: o, layout: layout, shard: SlabShard(whole: n), comm: LocalCommunicator(), totalSteps: 10)
    for t in 1...2 { whole.withUnsafeMutableBufferPointer { one.step(params: $0.baseAddress!, grads: g, lr: 1e-2, t: t) } }
    // three optimizers over three ranges of a copy (weight decay applies per element, by tensor)
    var split = p0
    for r in 0..<3 {
        let sh = SlabShard(layout: layout, worldSize: 3, rank: r)
        let opt = Optimizer(config: o, layout: layout, shard: sh, comm: LocalCommunicator(), totalSteps: 10)
        for t in 1...2 { split.withUnsafeMutableBufferPointer { opt.step(params: $0.baseAddress! + sh.range.lowerBound, grads: g, lr: 1e-2, t: t) } }
        #expect(opt.m.count == max(sh.range.count, 1))
    }
    #expect(whole == split)
    #expect(whole != p0)
}
