// The only surface ranks talk through (swift-nio style: a protocol in the core, a real implementation and an
// in-memory one side by side). MPICommunicator wraps OpenMPI; LocalCommunicator is one rank, for tests and
// single-process runs.
import KDCore

/// An all-reduce in flight; `wait()` completes it, `test()` lets MPI make progress and says whether it is done.
public protocol PendingReduce: AnyObject {
    func test() throws -> Bool
    func wait() throws
}

/// Collective and point-to-point operations between the ranks of one job.
public protocol Communicator: AnyObject {
    /// This process's rank in 0..<worldSize.
    var rank: Int { get }
    /// Number of ranks.
    var worldSize: Int { get }
    /// In-place sum over all ranks of `count` Floats.
    func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// In-place sum over all ranks of Doubles (loss sums, token counts).
    func allReduceSum(_ values: inout [Double]) throws
    /// Starts an in-place Float sum; the buffer must stay untouched until the returned request completes.
    func startAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws -> any PendingReduce
    /// Starts an in-place sum scattered over the ranks: `counts` (one per rank, in rank order, summing to the
    /// buffer's length) cut the buffer into contiguous pieces; when the request completes, rank r's piece holds the
    /// sum over all ranks of that piece. The rest of this rank's buffer is left unspecified (it is sent, not summed).
    func startReduceScatterSum(_ buffer: UnsafeMutablePointer<Float>, counts: [Int]) throws -> any PendingReduce
    /// In-place all-gather: rank r contributes its piece of the buffer (pieces cut by `counts` as above) and every
    /// rank receives every piece.
    func allGather(_ buffer: UnsafeMutablePointer<Float>, counts: [Int]) throws
    /// Rank r's piece (`counts[r]` Floats at `piece`) lands at its offset in `full` on `root` (other ranks pass nil).
    func gather(_ piece: UnsafePointer<Float>, counts: [Int], into full: UnsafeMutablePointer<Float>?, root: Int) throws
    /// The reverse of ``gather(_:counts:into:root:)``: `root`'s `full` (nil elsewhere) is cut by `counts`, rank r
    /// receives its piece into `piece`.
    func scatter(_ full: UnsafePointer<Float>?, counts: [Int], into piece: UnsafeMutablePointer<Float>, root: Int) throws
    /// Copies `count` bytes from `root` to every rank.
    func broadcast(_ buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws
    /// Every rank contributes `bytes`; everyone receives all contributions in rank order.
    func allGather(_ send: UnsafeRawPointer, bytes: Int, into recv: UnsafeMutableRawPointer) throws
    /// Contributions of different sizes, in rank order; returns each rank's byte count.
    func allGatherV(_ send: [UInt8]) throws -> [[UInt8]]
    /// Every rank's `bytes` to `root` (rank order); other ranks' `recv` is ignored.
    func gather(_ send: UnsafeRawPointer, bytes: Int, into recv: UnsafeMutableRawPointer?, root: Int) throws
    /// Point-to-point, blocking.
    func send(_ buffer: UnsafeRawPointer, bytes: Int, to: Int, tag: Int) throws
    func receive(_ buffer: UnsafeMutableRawPointer, bytes: Int, from: Int, tag: Int) throws
    /// Waits until every rank has arrived.
    func barrier() throws
    /// Ranks with the same color form a sub-communicator, ordered by `key`.
    func split(color: Int, key: Int) throws -> any Communicator
    /// Ends this rank's part in the job (MPI_Finalize for the world communicator; nothing for a local one).
    func finalize()
    /// Ends the whole job with a message naming this rank and the cause (never returns).
    func abort(_ message: String, code: Int32) -> Never
}

extension Communicator {
    /// Blocking ``startReduceScatterSum(_:counts:)``.
    public func reduceScatterSum(_ buffer: UnsafeMutablePointer<Float>, counts: [Int]) throws {
        try startReduceScatterSum(buffer, counts: counts).wait()
    }
    /// Every rank's `value`, in rank order.
    public func allGather(_ value: Double) throws -> [Double] {
        var mine = value
        var all = [Double](repeating: 0, count: worldSize)
        try withUnsafeBytes(of: &mine) { m in try all.withUnsafeMutableBytes { try allGather(m.baseAddress!, bytes: 8, into: $0.baseAddress!) } }
        return all
    }
    public func broadcast(_ values: inout [Double], root: Int) throws {
        try values.withUnsafeMutableBytes { try broadcast($0.baseAddress!, bytes: $0.count, root: root) }
    }
    public func broadcast(_ bytes: inout [UInt8], root: Int) throws {
        var n = [Double(bytes.count)]
        try broadcast(&n, root: root)
        if bytes.count != Int(n[0]) { bytes = [UInt8](repeating: 0, count: Int(n[0])) }
        if !bytes.isEmpty { try bytes.withUnsafeMutableBytes { try broadcast($0.baseAddress!, bytes: $0.count, root: root) } }
    }
}

final class DonePending: PendingReduce {
    func test() throws -> Bool { true }
    func wait() throws {}
}

/// Several requests completed together (a reduce-scatter issued as one reduce per owning rank).
final class PendingGroup: PendingReduce {
    let parts: [any PendingReduce]
    init(_ parts: [any PendingReduce]) { self.parts = parts }
    func test() throws -> Bool {
        var done = true
        for p in parts where try !p.test() { done = false }
        return done
    }
    func wait() throws { for p in parts { try p.wait() } }
}

/// One rank: every collective is the identity.
public final class LocalCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var worldSize: Int { 1 }
    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {}
    public func allReduceSum(_ values: inout [Double]) throws {}
    public func startAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws -> any PendingReduce { DonePending() }
    public func startReduceScatterSum(_ buffer: UnsafeMutablePointer<Float>, counts: [Int]) throws -> any PendingReduce {
        precondition(counts.count == 1, "reduce-scatter on one rank: expected 1 count, got \(counts.count)")
        return DonePending()
    }
    public func allGather(_ buffer: UnsafeMutablePointer<Float>, counts: [Int]) throws {
        precondition(counts.count == 1, "all-gather on one rank: expected 1 count, got \(counts.count)")
    }
    public func gather(_ piece: UnsafePointer<Float>, counts: [Int], into full: UnsafeMutablePointer<Float>?, root: Int) throws {
        full?.update(from: piece, count: counts[0])
    }
    public func scatter(_ full: UnsafePointer<Float>?, counts: [Int], into piece: UnsafeMutablePointer<Float>, root: Int) throws {
        if let full { piece.update(from: full, count: counts[0]) }
    }
    public func broadcast(_ buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws {}
    public func allGather(_ send: UnsafeRawPointer, bytes: Int, into recv: UnsafeMutableRawPointer) throws {
        recv.copyMemory(from: send, byteCount: bytes)
    }
    public func allGatherV(_ send: [UInt8]) throws -> [[UInt8]] { [send] }
    public func gather(_ send: UnsafeRawPointer, bytes: Int, into recv: UnsafeMutableRawPointer?, root: Int) throws {
        recv?.copyMemory(from: send, byteCount: bytes)
    }
    public func send(_ buffer: UnsafeRawPointer, bytes: Int, to: Int, tag: Int) throws {
        throw CommError(call: "send", rank: 0, code: -1, message: "a single rank has no peer \(to)")
    }
    public func receive(_ buffer: UnsafeMutableRawPointer, bytes: Int, from: Int, tag: Int) throws {
        throw CommError(call: "receive", rank: 0, code: -1, message: "a single rank has no peer \(from)")
    }
    public func barrier() throws {}
    public func finalize() {}
    public func split(color: Int, key: Int) throws -> any Communicator { LocalCommunicator() }
    public func abort(_ message: String, code: Int32) -> Never {
        KDLog.error(message)
        exit(code)
    }
}

/// A failed MPI call: which call, on which rank, with MPI's own message.
public struct CommError: Error, CustomStringConvertible, Equatable {
    public let call: String, rank: Int, code: Int32, message: String
    public init(call: String, rank: Int, code: Int32, message: String) {
        self.call = call; self.rank = rank; self.code = code; self.message = message
    }
    public var description: String { "[rank \(rank)] \(call) failed (code \(code)): \(message)" }
}

#if canImport(Glibc)
import Glibc
#endif
