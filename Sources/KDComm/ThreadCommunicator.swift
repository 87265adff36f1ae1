// A job of several ranks inside one process, one thread per rank: the in-memory Communicator beside MPI's (swift-nio's
// EmbeddedChannel beside its sockets), so the placements, the sharded state and the exact-at-any-world-size runs are
// tested under `swift test` without mpirun. Every collective is one exchange of byte blocks through a shared, locked
// table; sums run in rank order, so every rank gets the same bits. Point-to-point messages queue per (from, to, tag)
// and a send never blocks (MPI may buffer a send too; code that is correct under MPI stays correct here).
// A rank that fails marks the job failed, and every rank waiting on it throws instead of waiting forever.
import Foundation
import KDCore

/// The state the ranks of one in-process job (or one sub-communicator of it) share.
final class ThreadWorld: @unchecked Sendable {
    let size: Int
    let cond = NSCondition()
    // the collective in progress: contributions by rank; then the round's result until every rank has read it
    var slots: [[UInt8]?]
    var arrived = 0, generation = 0, readersLeft = 0
    var draining = false
    var result: [[UInt8]] = []
    var mailboxes: [[Int]: [[UInt8]]] = [:]
    var subWorlds: [String: ThreadWorld] = [:]
    var failed: String?
    /// The job's top world: a failure anywhere ends every sub-communicator's waits too.
    weak var parent: ThreadWorld?

    init(size: Int, parent: ThreadWorld? = nil) {
        self.size = size
        self.parent = parent
        slots = Array(repeating: nil, count: size)
    }

    var failure: String? { failed ?? parent?.failure }

    /// Marks the job failed and wakes every waiting rank.
    func fail(_ why: String) {
        let top = parent ?? self
        top.cond.lock()
        if top.failed == nil { top.failed = why }
        let subs = Array(top.subWorlds.values)
        top.cond.broadcast()
        top.cond.unlock()
        for s in subs {
            s.cond.lock()
            s.cond.broadcast()
            s.cond.unlock()
        }
    }

    /// Every rank's contribution, in rank order, once every rank has contributed. Collective.
    func exchange(rank: Int, _ data: [UInt8], call: String) throws -> [[UInt8]] {
        cond.lock()
        defer { cond.unlock() }
        func waitOrFail() throws {
            if let why = failure { throw CommError(call: call, rank: rank, code: -1, message: "another rank failed: \(why)") }
            _ = cond.wait(until: Date().addingTimeInterval(0.5))
        }
        while draining { try waitOrFail() }                   // the previous round's readers are not all out yet
        slots[rank] = data
        arrived += 1
        let round = generation
        if arrived == size {
            result = slots.map { $0! }
            generation += 1
            draining = true
            readersLeft = size
            cond.broadcast()
        } else {
            while generation == round { try waitOrFail() }
        }
        let out = result
        readersLeft -= 1
        if readersLeft == 0 {
            draining = false
            arrived = 0
            slots = Array(repeating: nil, count: size)
            cond.broadcast()
        }
        return out
    }

    func post(_ data: [UInt8], from: Int, to: Int, tag: Int) {
        cond.lock()
        mailboxes[[from, to, tag], default: []].append(data)
        cond.broadcast()
        cond.unlock()
    }

    func take(from: Int, to: Int, tag: Int, call: String) throws -> [UInt8] {
        cond.lock()
        defer { cond.unlock() }
        while mailboxes[[from, to, tag]]?.isEmpty ?? true {
            if let why = failure { throw CommError(call: call, rank: to, code: -1, message: "another rank failed: \(why)") }
            _ = cond.wait(until: Date().addingTimeInterval(0.5))
        }
        return mailboxes[[from, to, tag]]!.removeFirst()
    }

    /// The sub-communicator `id` of `size` ranks, made by whichever member asks first.
    func subWorld(_ id: String, size: Int) -> ThreadWorld {
        let top = parent ?? self
        top.cond.lock()
        defer { top.cond.unlock() }
        if let w = top.subWorlds[id] { return w }
        let w = ThreadWorld(size: size, parent: top)
        top.subWorlds[id] = w
        return w
    }
}

/// One rank of an in-process job.
public final class ThreadCommunicator: Communicator {
    let world: ThreadWorld
    public let rank: Int
    public var worldSize: Int { world.size }
    /// Splits made so far (the same on every rank: split is collective), naming sub-communicators.
    var splits = 0
    let path: String

    init(world: ThreadWorld, rank: Int, path: String = "world") {
        self.world = world
        self.rank = rank
        self.path = path
    }

    func exchange(_ p: UnsafeRawPointer?, bytes: Int, call: String = #function) throws -> [[UInt8]] {
        let mine = p.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: bytes)) } ?? []
        return try world.exchange(rank: rank, mine, call: call)
    }

    /// Rank-order sums of every rank's `count` Floats starting `offset` Floats into their contributions.
    func sum(_ all: [[UInt8]], offset: Int, count: Int, into out: UnsafeMutablePointer<Float>) {
        out.initialize(repeating: 0, count: count)
        for block in all {
            block.withUnsafeBytes { raw in
                let f = raw.bindMemory(to: Float.self).baseAddress! + offset
                for i in 0..<count { out[i] += f[i] }
            }
        }
    }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        let all = try exchange(buffer, bytes: count * 4)
        sum(all, offset: 0, count: count, into: buffer)
    }

    public func allReduceSum(_ values: inout [Double]) throws {
        let all = try values.withUnsafeBytes { try exchange($0.baseAddress, bytes: $0.count) }
        for i in values.indices {
            values[i] = all.reduce(0.0) { acc, block in acc + block.withUnsafeBytes { $0.bindMemory(to: Double.self)[i] } }
        }
    }

    public func startAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws -> any PendingReduce {
        try allReduceSum(buffer, count: count)
        return DonePending()
    }

    public func startReduceScatterSum(_ buffer: UnsafeMutablePointer<Float>, counts: [Int]) throws -> any PendingReduce {
        precondition(counts.count == worldSize, "reduce-scatter: expected \(worldSize) counts, got \(counts.count)")
        let all = try exchange(buffer, bytes: counts.reduce(0, +) * 4)
        let offset = counts[..<rank].reduce(0, +)
        sum(all, offset: offset, count: counts[rank], into: buffer + offset)
        return DonePending()
    }

    public func allGather(_ buffer: UnsafeMutablePointer<Float>, counts: [Int]) throws {
        precondition(counts.count == worldSize, "all-gather: expected \(worldSize) counts, got \(counts.count)")
        let offset = counts[..<rank].reduce(0, +)
        let all = try exchange(buffer + offset, bytes: counts[rank] * 4)
        var at = 0
        for (r, block) in all.enumerated() {
            block.withUnsafeBytes { UnsafeMutableRawPointer(buffer + at).copyMemory(from: $0.baseAddress!, byteCount: counts[r] * 4) }
            at += counts[r]
        }
    }

    public func gather(_ piece: UnsafePointer<Float>, counts: [Int], into full: UnsafeMutablePointer<Float>?, root: Int) throws {
        try gather(UnsafeRawPointer(piece), bytes: counts[rank] * 4, into: full.map(UnsafeMutableRawPointer.init), root: root)
    }

    public func scatter(_ full: UnsafePointer<Float>?, counts: [Int], into piece: UnsafeMutablePointer<Float>, root: Int) throws {
        let all = try exchange(rank == root ? full : nil, bytes: counts.reduce(0, +) * 4)
        let offset = counts[..<rank].reduce(0, +)
        all[root].withUnsafeBytes { UnsafeMutableRawPointer(piece).copyMemory(from: $0.baseAddress! + offset * 4, byteCount: counts[rank] * 4) }
    }

    public func broadcast(_ buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws {
        let all = try exchange(rank == root ? UnsafeRawPointer(buffer) : nil, bytes: bytes)
        if rank != root, bytes > 0 { all[root].withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: bytes) } }
    }

    public func allGather(_ send: UnsafeRawPointer, bytes: Int, into recv: UnsafeMutableRawPointer) throws {
        let all = try exchange(send, bytes: bytes)
        for (r, block) in all.enumerated() where bytes > 0 { block.withUnsafeBytes { (recv + r * bytes).copyMemory(from: $0.baseAddress!, byteCount: bytes) } }
    }

    public func allGatherV(_ send: [UInt8]) throws -> [[UInt8]] { try world.exchange(rank: rank, send, call: "allGatherV") }

    public func gather(_ send: UnsafeRawPointer, bytes: Int, into recv: UnsafeMutableRawPointer?, root: Int) throws {
        let all = try exchange(send, bytes: bytes)
        guard rank == root, let recv else { return }
        var at = 0
        for block in all {
            block.withUnsafeBytes { if !$0.isEmpty { (recv + at).copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
            at += block.count
        }
    }

    public func send(_ buffer: UnsafeRawPointer, bytes: Int, to: Int, tag: Int) throws {
        guard (0..<worldSize).contains(to) else { throw CommError(call: "send", rank: rank, code: -1, message: "no rank \(to) of \(worldSize)") }
        world.post([UInt8](UnsafeRawBufferPointer(start: buffer, count: bytes)), from: rank, to: to, tag: tag)
    }

    public func receive(_ buffer: UnsafeMutableRawPointer, bytes: Int, from: Int, tag: Int) throws {
        guard (0..<worldSize).contains(from) else { throw CommError(call: "receive", rank: rank, code: -1, message: "no rank \(from) of \(worldSize)") }
        let data = try world.take(from: from, to: rank, tag: tag, call: "receive")
        guard data.count == bytes else {
            throw CommError(call: "receive", rank: rank, code: -1, message: "expected \(bytes) bytes from rank \(from) (tag \(tag)), got \(data.count)")
        }
        data.withUnsafeBytes { if bytes > 0 { buffer.copyMemory(from: $0.baseAddress!, byteCount: bytes) } }
    }

    public func barrier() throws { _ = try exchange(nil, bytes: 0) }

    public func split(color: Int, key: Int) throws -> any Communicator {
        var mine = [Int64(color), Int64(key)]
        let all = try mine.withUnsafeMutableBytes { try exchange($0.baseAddress, bytes: 16) }
        let ck = all.map { b in b.withUnsafeBytes { (Int($0.bindMemory(to: Int64.self)[0]), Int($0.bindMemory(to: Int64.self)[1])) } }
        let members = (0..<worldSize).filter { ck[$0].0 == color }.sorted { (ck[$0].1, $0) < (ck[$1].1, $1) }
        let id = "\(path)/\(splits)/\(color)"
        splits += 1
        return ThreadCommunicator(world: world.subWorld(id, size: members.count), rank: members.firstIndex(of: rank)!, path: id)
    }

    public func finalize() {}

    public func abort(_ message: String, code: Int32) -> Never {
        KDLog.error(message)
        exit(code)
    }

    /// Runs `body` on `worldSize` threads, one rank each (its own communicator), and returns their results in rank
    /// order; if a rank throws, the others' waits end too and the first error is rethrown.
    public static func run<T>(worldSize: Int, _ body: @escaping @Sendable (ThreadCommunicator) throws -> T) throws -> [T] {
        let world = ThreadWorld(size: worldSize)
        let done = DispatchGroup()
        let outcome = Outcome<T>(worldSize)
        for r in 0..<worldSize {
            done.enter()
            let thread = Thread {
                defer { done.leave() }
                do {
                    outcome.set(r, .success(try body(ThreadCommunicator(world: world, rank: r))))
                } catch {
                    outcome.set(r, .failure(error))
                    world.fail("rank \(r): \(error)")
                }
            }
            thread.stackSize = 16 << 20
            thread.start()
        }
        done.wait()
        return try outcome.values()
    }
}

/// Every rank's result or error, written by the ranks' threads under a lock.
final class Outcome<T>: @unchecked Sendable {
    let lock = NSLock()
    var slots: [Result<T, any Error>?]
    init(_ n: Int) { slots = Array(repeating: nil, count: n) }

    func set(_ r: Int, _ v: Result<T, any Error>) {
        lock.lock()
        slots[r] = v
        lock.unlock()
    }

    /// The results in rank order, or the first rank's own error (not one that only reports another rank's failure).
    func values() throws -> [T] {
        let errors = slots.compactMap { if case .failure(let e)? = $0 { return e } else { return nil } }
        if let first = errors.first(where: { !($0 is CommError) }) ?? errors.first { throw first }
        return try slots.map { try $0!.get() }
    }
}
