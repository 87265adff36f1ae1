// Several ranks in one process (ThreadCommunicator, one thread per rank): the collectives against a naive reference,
// and the trainer's distributed parts — placements, sharded state, data parallelism, resume at another world size —
// under `swift test`, without mpirun. The real launcher keeps its own end-to-end suite (KDCLITests/MPITests).
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDData
import KDModel
@testable import KDTrain
import Testing

/// Every rank trains `config` with `teachers` (built per rank: each rank of a job holds its own copy) and returns its
/// step stats and final weights; `prepare` runs on each trainer before `run` (resume, stop).
func trainRanks(_ worldSize: Int, _ config: RunConfig, teachers: @escaping @Sendable () -> [Transformer] = { [] },
                stopAfter: Int? = nil, checkpoints: Bool = false,
                prepare: @escaping @Sendable (Trainer) throws -> Void = { _ in }) throws -> [Ranked] {
    let corpus = try TokenCorpus.load(config.data, seed: config.train.seed)
    return try ThreadCommunicator.run(worldSize: worldSize) { comm in
        let tr = try Trainer(config: config, corpus: corpus, comm: comm, teachers: teachers())
        try prepare(tr)
        let stats = try tr.run(checkpoints: checkpoints, stopAfter: stopAfter)
        return Ranked(stats: stats, weights: Array(UnsafeBufferPointer(start: tr.model.params.base, count: tr.model.layout.count)),
                      placement: tr.placement.map { "\(type(of: $0)): \($0.summary), \($0.bytesPerToken) B/token" } ?? "")
    }
}

/// One rank's run: its step stats, final weights, and its teacher placement (type, summary, bytes per token).
struct Ranked {
    let stats: [StepStats], weights: [Float], placement: String
}

func maxRelativeDifference(_ a: [Float], _ b: [Float]) -> Double {
    let d = zip(a, b).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }, n = b.reduce(0.0) { $0 + Double($1) * Double($1) }
    return (d / max(n, 1e-30)).squareRoot()
}

@Test(arguments: [2, 3, 4])
func threadCollectivesMatchANaiveReference(worldSize: Int) throws {
    let n = 7
    @Sendable func values(_ r: Int) -> [Float] { (0..<n).map { Float(r * 10 + $0) + 0.25 } }
    let counts = (0..<worldSize).map { n * ($0 + 1) / worldSize - n * $0 / worldSize }
    let results = try ThreadCommunicator.run(worldSize: worldSize) { comm -> [String: [Float]] in
        let r = comm.rank
        var out: [String: [Float]] = [:]
        var a = values(r)
        try comm.allReduceSum(&a, count: n)
        out["allReduce"] = a
        var d = [Double(r), 1]
        try comm.allReduceSum(&d)
        out["doubles"] = d.map(Float.init)
        var s = values(r)
        try comm.reduceScatterSum(&s, counts: counts)
        let lo = counts[..<r].reduce(0, +)
        out["reduceScatter"] = Array(s[lo..<(lo + counts[r])])
        var g = [Float](repeating: -1, count: n)
        for i in lo..<(lo + counts[r]) { g[i] = values(r)[i] }
        try comm.allGather(&g, counts: counts)
        out["allGather"] = g
        var b = r == 1 ? values(1) : [Float](repeating: 0, count: n)
        try b.withUnsafeMutableBytes { try comm.broadcast($0.baseAddress!, bytes: $0.count, root: 1) }
        out["broadcast"] = b
        let v = try comm.allGatherV([UInt8](repeating: UInt8(r), count: r + 1))
        out["allGatherV"] = v.flatMap { $0.map(Float.init) }
        // a ring of point-to-point messages, then a sub-communicator of the even ranks
        var msg = [Float(r)], got = [Float(-1)]
        try comm.send(&msg, bytes: 4, to: (r + 1) % worldSize, tag: 9)
        try comm.receive(&got, bytes: 4, from: (r + worldSize - 1) % worldSize, tag: 9)
        out["ring"] = got
        let sub = try comm.split(color: r % 2, key: -r)
        var one = [Float(r)]
        try sub.allReduceSum(&one, count: 1)
        out["split"] = [Float(sub.rank), Float(sub.worldSize), one[0]]
        try comm.barrier()
        return out
    }
    let sum = (0..<n).map { i in (0..<worldSize).reduce(Float(0)) { $0 + values($1)[i] } }
    for (r, out) in results.enumerated() {
        #expect(out["allReduce"] == sum)
        #expect(out["doubles"] == [Float((0..<worldSize).reduce(0, +)), Float(worldSize)])
        let lo = counts[..<r].reduce(0, +)
        #expect(out["reduceScatter"] == Array(sum[lo..<(lo + counts[r])]))
        var gathered: [Float] = []
        for q in 0..<worldSize { gathered += Array(values(q)[counts[..<q].reduce(0, +)..<counts[...q].reduce(0, +)]) }
        #expect(out["allGather"] == gathered)
        #expect(out["broadcast"] == values(1))
        let variable: [Float] = (0..<worldSize).flatMap { q in [Float](repeating: Float(q), count: q + 1) }
        #expect(out["allGatherV"] == variable)
        #expect(out["ring"] == [Float((r + worldSize - 1) % worldSize)])
        let same = (0..<worldSize).filter { $0 % 2 == r % 2 }
        // key −rank orders the sub-communicator by descending world rank
        let split: [Float] = [Float(same.reversed().firstIndex(of: r)!), Float(same.count), Float(same.reduce(0, +))]
        #expect(out["split"] == split)
    }
}

@Test func aRankThatFailsEndsTheOthersWaitsInsteadOfHanging() throws {
    #expect(throws: KDError.self) {
        _ = try ThreadCommunicator.run(worldSize: 2) { comm in
            if comm.rank == 1 { throw KDError.invalidInput(what: "rank 1", expected: "to fail", found: "failed") }
            try comm.barrier()
        }
    }
}

@Test func twoRanksEqualOneRankWithTwiceTheBatchInProcess() throws {
    var two = try tinyConfig(), one = two
    two.train.steps = 4; one.train.steps = 4
    two.train.microBatch = 2
    let a = try trainRanks(2, two), b = try trainRanks(1, one)
    // summation order differs (micro-batches of 2 vs 4 rows, the all-reduce), nothing else
    #expect(a[0].weights == a[1].weights)
    #expect(maxRelativeDifference(a[0].weights, b[0].weights) < 1e-5)
    for (x, y) in zip(a[0].stats, b[0].stats) { #expect(abs(x.loss - y.loss) < 1e-5 * y.loss, "\(x.loss) vs \(y.loss)") }
}

/// Tiny config with a teacher section naming in-memory teachers.
func placementConfig(_ placement: Placement, members: Int, steps: Int = 3) throws -> RunConfig {
    var c = try tinyConfig()
    c.train.steps = steps
    c.teacher = TeacherConfig()
    if members == 1 { c.teacher!.path = "in-memory" } else {
        c.teacher!.members = (0..<members).map { TeacherMember(path: "in-memory-\($0)", weight: Float($0 + 1)) }
    }
    c.teacher!.placement = placement
    c.distill.objective = .skewRKL
    c.distill.kdRatio = 0.7
    return c
}

func tinyTeacher(_ c: RunConfig, layers: Int, seed: UInt64) -> Transformer {
    var m = c.model
    m.layers = layers
    let t = Transformer(config: m, needsGrad: false)
    t.initialize(seed: seed)
    return t
}

@Test func pipelinedAndGroupedTeachersTrainAsReplicatedToTheBit() throws {
    // a 3-block teacher: uneven stages on 2 ranks; full hidden states and the top-k exchange
    for topK in [false, true] {
        var runs: [[Ranked]] = []
        for placement in [Placement.pipelined, .replicated] {
            var c = try placementConfig(placement, members: 1)
            if topK { c.teacher!.exchange = .topk; c.teacher!.topK = 16 }
            let config = c
            runs.append(try trainRanks(2, config, teachers: { [tinyTeacher(config, layers: 3, seed: 77)] }))
        }
        // the placement asked for is the one that ran: 3 blocks as stages 0..<1 and 1..<3; top-k rows are 8·16 + 4 B
        #expect(runs[0][0].placement.hasPrefix("TeacherPipeline: pipelined: blocks 0..<1 of 3") && runs[0][1].placement.contains("blocks 1..<3 of 3"),
                "\(runs[0][0].placement)")
        #expect(runs[1][0].placement.hasPrefix("ReplicatedTeachers"))
        if topK { #expect(runs[0][0].placement.hasSuffix(", 132 B/token")) }
        #expect(runs[0][0].weights == runs[1][0].weights, "pipelined vs replicated, top-k \(topK)")
        #expect(runs[0][0].stats.map(\.loss) == runs[1][0].stats.map(\.loss))
    }
    // two teachers, one per rank group, against both on every rank
    var runs: [[Ranked]] = []
    for placement in [Placement.groups, .replicated] {
        let c = try placementConfig(placement, members: 2)
        runs.append(try trainRanks(2, c, teachers: { [tinyTeacher(c, layers: 2, seed: 31), tinyTeacher(c, layers: 2, seed: 32)] }))
    }
    #expect(runs[0][0].placement.hasPrefix("TeacherGroups: groups: 2 groups of 1 rank"), "\(runs[0][0].placement)")
    #expect(runs[0][0].weights == runs[1][0].weights && runs[0][0].stats.map(\.loss) == runs[1][0].stats.map(\.loss))
    // a teacher count that does not divide the world size is refused with both numbers
    let c = try placementConfig(.groups, members: 2)
    do {
        _ = try trainRanks(3, c, teachers: { [tinyTeacher(c, layers: 2, seed: 31), tinyTeacher(c, layers: 2, seed: 32)] })
        Issue.record("groups of 2 teachers on 3 ranks accepted")
    } catch {
        #expect("\(error)".contains("divisible") && "\(error)".contains("3 ranks"), "\(error)")
    }
}

@Test func theHiddenStateLossIsTheSameWithEveryLivePlacementInProcess() throws {
    // a 2-block student cut from a 3-block teacher (blocks 0 and 2): pipelined on 2 ranks, the two outputs come from
    // both stages to one owner
    func config(_ placement: Placement, members: Int) throws -> RunConfig {
        var c = try placementConfig(placement, members: members)
        c.student.initFrom = .fromTeacher
        c.student.layers = [0, 2]
        c.distill.objective = .fkl
        c.distill.hiddenWeight = 1
        return c
    }
    func run(_ placement: Placement, members: Int) throws -> Ranked {
        let c = try config(placement, members: members)
        return try trainRanks(2, c, teachers: { (0..<members).map { tinyTeacher(c, layers: 3, seed: 51 + UInt64($0)) } })[0]
    }
    let pipe = try run(.pipelined, members: 1), repl = try run(.replicated, members: 1)
    #expect(pipe.stats.allSatisfy { $0.hidden > 0 })
    // two blocks of 64 floats per token come back to the owner, reported beside the pipeline's own traffic
    #expect(pipe.placement.contains("512 B/token of block outputs to the owner"), "\(pipe.placement)")
    #expect(pipe.weights == repl.weights && pipe.stats.map(\.loss) == repl.stats.map(\.loss))
    let groups = try run(.groups, members: 2), repl2 = try run(.replicated, members: 2)
    #expect(groups.weights == repl2.weights && groups.stats.map(\.loss) == repl2.stats.map(\.loss))
    #expect(groups.stats.map(\.loss) != pipe.stats.map(\.loss))
}

/// Tiny config with QAT (Q4_0, learned scales) and a sharding.
func shardedConfig(_ sharding: Sharding, accum: Int = 2) throws -> RunConfig {
    var c = try tinyConfig()
    c.model.ffnDim = 192
    c.optimizer.sharding = sharding
    c.train.gradAccum = accum
    c.qat.scheme = .q4_0
    c.qat.scales = .learned
    c.qat.startStep = 1
    return c
}

@Test func shardedStatesAndGradientsTrainAsUnshardedInProcess() throws {
    let none = try trainRanks(2, try shardedConfig(.none))[0]
    #expect(none.stats.count == 10)
    // with 2 ranks a sum of two gradients is the same in any order; only the clipping norm is summed otherwise
    // (partial sums of squares per range), which moves the weights by float rounding
    for mode in [Sharding.states, .gradients] {
        let r = try trainRanks(2, try shardedConfig(mode))
        #expect(r[0].weights == r[1].weights, "\(mode): ranks disagree")
        for (x, y) in zip(r[0].stats, none.stats) { #expect(abs(x.loss - y.loss) < 2e-4, "\(mode) step \(x.step): \(x.loss) vs \(y.loss)") }
        #expect(maxRelativeDifference(r[0].weights, none.weights) < 1e-5, "\(mode)")
    }
}

@Test func aShardedCheckpointResumesAtAnotherWorldSizeAndSharding() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("inproc-resume-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: dir) }
    let full = try trainRanks(2, try shardedConfig(.none))[0]
    var zero2 = try shardedConfig(.gradients)
    zero2.checkpoint.dir = dir.appendingPathComponent("zero2").path
    let first = try trainRanks(2, zero2, stopAfter: 3, checkpoints: true)
    #expect(first[0].stats.count == 3)
    let ckpt = dir.appendingPathComponent("zero2/step_00000003").path
    // 1 rank, unsharded, 4 micro-batches (the same global batch); 2 ranks with sharded states
    for (ranks, config) in [(1, try shardedConfig(.none, accum: 4)), (2, try shardedConfig(.states))] {
        var c = config
        c.checkpoint.dir = dir.appendingPathComponent("resumed-\(ranks)").path
        let r = try trainRanks(ranks, c, prepare: { try $0.resume(from: ckpt) })[0]
        #expect(r.stats.map(\.step) == Array(4...10))
        for s in r.stats { #expect(abs(s.loss - full.stats[s.step - 1].loss) < 2e-4, "\(ranks) ranks step \(s.step): \(s.loss)") }
        #expect(maxRelativeDifference(r.weights, full.weights) < 1e-5, "\(ranks) ranks")
    }
}

/// The kernels' thread count (`Parallel.threads`) changes no bit of a run: every reduction sums in an order fixed by
/// the shapes (RMSNorm's weight gradient per channel in row order, the gradient norm over fixed blocks). Tests set it
/// while others run in the same process, so a dependence would also break the bitwise tests above at random.
/// OpenBLAS's own thread count does change its sgemm's bits and is left at 1 here.
@Test func theKernelsThreadCountChangesNoBitOfARun() throws {
    var c = try placementConfig(.replicated, members: 1)
    c.model.dim = 128; c.model.ffnDim = 344  // channels enough for a split over threads
    let config = c
    let saved = Parallel.threads
    defer { Parallel.threads = saved }
    var runs: [Ranked] = []
    for threads in [1, 3] {
        Parallel.threads = threads
        runs.append(try trainRanks(1, config, teachers: { [tinyTeacher(config, layers: 2, seed: 5)] })[0])
    }
    let weights = runs[0].weights == runs[1].weights, losses = runs[0].stats.map(\.loss) == runs[1].stats.map(\.loss)
    let norms = runs[0].stats.map(\.gradNorm) == runs[1].stats.map(\.gradNorm)
    #expect(weights && losses && norms, "weights equal: \(weights), losses: \(losses), gradient norms: \(norms)")
}

/// qat.importance across ranks: the windows are dealt round the ranks and the sums all-reduced, so 1, 2 and 3 ranks
/// measure one importance matrix (to the rounding of the sums' order), every rank holding the same.
@Test func importanceIsOneMatrixAtAnyWorldSize() throws {
    var c = try qatConfig("iq4_nl")
    c.qat.embeddings = true
    c.qat.importance = .activations
    c.qat.importanceWindows = 12  // three micro-batches of 4
    let config = c, corpus = try TokenCorpus.load(c.data, seed: c.train.seed)
    func measured(_ world: Int) throws -> [[Float]] {
        try ThreadCommunicator.run(worldSize: world) { comm in
            let tr = try Trainer(config: config, corpus: corpus, comm: comm)
            let imp = try #require(tr.qat?.importance)
            return Array(UnsafeBufferPointer(start: imp.values.base, count: imp.values.count))
        }
    }
    let one = try measured(1)[0]
    for world in [2, 3] {
        let ranks = try measured(world)
        #expect(ranks.allSatisfy { $0 == ranks[0] }, "\(world) ranks hold different matrices")
        #expect(maxRelativeDifference(ranks[0], one) < 1e-6, "\(world) ranks: \(maxRelativeDifference(ranks[0], one))")
    }
}
