// The only surface ranks talk through; LocalCommunicator is the one-rank implementation used by tests
// and single-process runs. MPICommunicator (the next issue) implements the same protocol over OpenMPI.
import KDCore

/// Collective operations between the ranks of one job.
public protocol Communicator: AnyObject {
    /// This process's rank in 0..<worldSize.
    var rank: Int { get }
    /// Number of ranks in the job.
    var worldSize: Int { get }
    /// In-place sum over all ranks of `count` Floats at `buffer`.
    func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// In-place sum over all ranks of Doubles (loss sums, token counts).
    func allReduceSum(_ values: inout [Double]) throws
    /// Waits until every rank has arrived.
    func barrier() throws
}

/// One rank: every collective is the identity.
public final class LocalCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var worldSize: Int { 1 }
    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {}
    public func allReduceSum(_ values: inout [Double]) throws {}
    public func barrier() throws {}
}
