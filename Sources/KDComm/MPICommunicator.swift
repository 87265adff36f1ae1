// Communicator over OpenMPI through the CMPI shim. Errors are returned, not fatal (MPI_ERRORS_RETURN), and every
// return code is turned into a CommError exactly once, in `check` (llm.c's mpiCheck, NIO's syscall wrapper).
import CMPI
import KDCore

#if canImport(Glibc)
import Glibc
#endif

public final class MPICommunicator: Communicator {
    let comm: MPI_Comm
    public let rank: Int
    public let worldSize: Int
    let ownsWorld: Bool

    /// Initializes MPI (funneled threading: only the main thread calls MPI) and wraps COMM_WORLD.
    public static func initialize() throws -> MPICommunicator {
        var provided: Int32 = 0
        var argc: Int32 = 0
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        let rc = MPI_Init_thread(&argc, &argv, kd_mpi_thread_funneled(), &provided)
        guard rc == kd_mpi_success() else { throw CommError(call: "MPI_Init_thread", rank: -1, code: rc, message: "MPI could not start") }
        MPI_Comm_set_errhandler(kd_mpi_comm_world(), kd_mpi_errors_return())
        return try MPICommunicator(comm: kd_mpi_comm_world(), owns: true)
    }

    /// True when this process was started by mpirun (OpenMPI sets these variables).
    public static var launchedByMPI: Bool {
        getenv("OMPI_COMM_WORLD_SIZE") != nil || getenv("PMIX_RANK") != nil
    }

    init(comm: MPI_Comm, owns: Bool) throws {
        self.comm = comm
        ownsWorld = owns
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r)
        worldSize = Int(s)
    }

    /// Ends MPI (world communicator only).
    public func finalize() {
        if ownsWorld { MPI_Finalize() }
    }

    /// Makes the MPI call `rc` (marked for the hang watchdog as waiting in `call`) and throws its error, if any.
    func check(_ rc: @autoclosure () -> Int32, _ call: StaticString) throws {
        let rc = Watchdog.waiting(in: call) { rc() }
        guard rc != kd_mpi_success() else { return }
        var buf = [CChar](repeating: 0, count: Int(MPI_MAX_ERROR_STRING) + 1)
        var len: Int32 = 0
        MPI_Error_string(rc, &buf, &len)
        throw CommError(call: "\(call)", rank: rank, code: rc, message: String(cString: buf))
    }

    public func allReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        // counts are Int32 in MPI: reduce in pieces of at most 2^30 elements
        var off = 0
        while off < count {
            let n = min(count - off, 1 << 30)
            try check(MPI_Allreduce(kd_mpi_in_place(), buffer + off, Int32(n), kd_mpi_float(), kd_mpi_sum(), comm), "MPI_Allreduce")
            off += n
        }
    }

    public func allReduceSum(_ values: inout [Double]) throws {
        let n = values.count
        try values.withUnsafeMutableBufferPointer {
            try check(MPI_Allreduce(kd_mpi_in_place(), $0.baseAddress, Int32(n), kd_mpi_double(), kd_mpi_sum(), comm), "MPI_Allreduce")
        }
    }

    final class Request: PendingReduce {
        var req: MPI_Request?
        let owner: MPICommunicator
        init(_ r: MPI_Request?, _ o: MPICommunicator) { req = r; owner = o }
        func test() throws -> Bool {
            var flag: Int32 = 0
            try owner.check(MPI_Test(&req, &flag, kd_mpi_status_ignore()), "MPI_Test")
            return flag != 0
        }
        func wait() throws { try owner.check(MPI_Wait(&req, kd_mpi_status_ignore()), "MPI_Wait") }
    }

    public func startAllReduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws -> any PendingReduce {
        precondition(count < 1 << 31, "startAllReduceSum: \(count) elements exceed one MPI request")
        var req: MPI_Request? = kd_mpi_request_null()
        try check(MPI_Iallreduce(kd_mpi_in_place(), buffer, Int32(count), kd_mpi_float(), kd_mpi_sum(), comm, &req), "MPI_Iallreduce")
        return Request(req, self)
    }

    /// Displacements and Int32 counts of a rank-ordered split; MPI counts are Int32, so a buffer is below 2^31 Floats.
    func pieces(_ counts: [Int]) -> (counts: [Int32], displs: [Int32]) {
        precondition(counts.count == worldSize, "expected \(worldSize) counts (one per rank), got \(counts.count)")
        precondition(counts.reduce(0, +) < 1 << 31, "\(counts.reduce(0, +)) Floats exceed one MPI collective")
        var displs: [Int32] = [], off: Int32 = 0
        for c in counts { displs.append(off); off += Int32(c) }
        return (counts.map { Int32($0) }, displs)
    }

    public func startReduceScatterSum(_ buffer: UnsafeMutablePointer<Float>, counts: [Int]) throws -> any PendingReduce {
        // one in-place reduce per rank that owns part of the buffer: the sum lands where that rank keeps it (an
        // MPI_Reduce_scatter would deliver it at the start of the buffer); ranks owning nothing here cost no call
        // Open MPI 4.1's libnbc progresses a large MPI_Ireduce round by round, recursively: ~16M Floats overflowed an
        // 8 MiB stack here (SIGSEGV in NBC_Progress, seen 1 run in 3 at 24M). Reduces of at most 2^20 Floats each stay
        // far below that; every rank cuts the same pieces.
        let (c, d) = pieces(counts), most = 1 << 20
        var parts: [any PendingReduce] = []
        for r in 0..<worldSize where c[r] > 0 {
            var off = 0
            while off < Int(c[r]) {
                let n = min(Int(c[r]) - off, most), piece = buffer + Int(d[r]) + off
                var req: MPI_Request? = kd_mpi_request_null()
                try check(MPI_Ireduce(r == rank ? UnsafeRawPointer(kd_mpi_in_place()) : UnsafeRawPointer(piece), piece, Int32(n), kd_mpi_float(),
                                      kd_mpi_sum(), Int32(r), comm, &req), "MPI_Ireduce")
                parts.append(Request(req, self))
                off += n
            }
        }
        return PendingGroup(parts)
    }

    public func allGather(_ buffer: UnsafeMutablePointer<Float>, counts: [Int]) throws {
        let (c, d) = pieces(counts)
        try check(MPI_Allgatherv(kd_mpi_in_place(), 0, kd_mpi_float(), buffer, c, d, kd_mpi_float(), comm), "MPI_Allgatherv")
    }

    public func gather(_ piece: UnsafePointer<Float>, counts: [Int], into full: UnsafeMutablePointer<Float>?, root: Int) throws {
        let (c, d) = pieces(counts)
        try check(MPI_Gatherv(piece, c[rank], kd_mpi_float(), full, c, d, kd_mpi_float(), Int32(root), comm), "MPI_Gatherv")
    }

    public func scatter(_ full: UnsafePointer<Float>?, counts: [Int], into piece: UnsafeMutablePointer<Float>, root: Int) throws {
        let (c, d) = pieces(counts)
        try check(MPI_Scatterv(full, c, d, kd_mpi_float(), piece, c[rank], kd_mpi_float(), Int32(root), comm), "MPI_Scatterv")
    }

    public func broadcast(_ buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws {
        try check(MPI_Bcast(buffer, Int32(bytes), kd_mpi_byte(), Int32(root), comm), "MPI_Bcast")
    }

    public func allGather(_ send: UnsafeRawPointer, bytes: Int, into recv: UnsafeMutableRawPointer) throws {
        try check(MPI_Allgather(send, Int32(bytes), kd_mpi_byte(), recv, Int32(bytes), kd_mpi_byte(), comm), "MPI_Allgather")
    }

    public func allGatherV(_ send: [UInt8]) throws -> [[UInt8]] {
        var mine = Int64(send.count)
        var counts = [Int64](repeating: 0, count: worldSize)
        try withUnsafeBytes(of: &mine) { m in
            try counts.withUnsafeMutableBytes { try allGather(m.baseAddress!, bytes: 8, into: $0.baseAddress!) }
        }
        let c32 = counts.map { Int32($0) }
        var displs = [Int32](repeating: 0, count: worldSize)
        for i in 1..<max(worldSize, 1) where worldSize > 1 { displs[i] = displs[i - 1] + c32[i - 1] }
        var all = [UInt8](repeating: 0, count: Int(counts.reduce(0, +)))
        try send.withUnsafeBytes { s in
            try all.withUnsafeMutableBytes { a in
                try check(MPI_Allgatherv(s.baseAddress, Int32(send.count), kd_mpi_byte(), a.baseAddress, c32, displs, kd_mpi_byte(), comm),
                          "MPI_Allgatherv")
            }
        }
        return (0..<worldSize).map { Array(all[Int(displs[$0])..<(Int(displs[$0]) + Int(c32[$0]))]) }
    }

    public func gather(_ send: UnsafeRawPointer, bytes: Int, into recv: UnsafeMutableRawPointer?, root: Int) throws {
        try check(MPI_Gather(send, Int32(bytes), kd_mpi_byte(), recv, Int32(bytes), kd_mpi_byte(), Int32(root), comm), "MPI_Gather")
    }

    public func send(_ buffer: UnsafeRawPointer, bytes: Int, to: Int, tag: Int) throws {
        try check(MPI_Send(buffer, Int32(bytes), kd_mpi_byte(), Int32(to), Int32(tag), comm), "MPI_Send")
    }

    public func receive(_ buffer: UnsafeMutableRawPointer, bytes: Int, from: Int, tag: Int) throws {
        try check(MPI_Recv(buffer, Int32(bytes), kd_mpi_byte(), Int32(from), Int32(tag), comm, kd_mpi_status_ignore()), "MPI_Recv")
    }

    public func barrier() throws { try check(MPI_Barrier(comm), "MPI_Barrier") }

    public func split(color: Int, key: Int) throws -> any Communicator {
        var sub: MPI_Comm? = kd_mpi_comm_null()
        try check(MPI_Comm_split(comm, Int32(color), Int32(key), &sub), "MPI_Comm_split")
        MPI_Comm_set_errhandler(sub, kd_mpi_errors_return())
        return try MPICommunicator(comm: sub!, owns: false)
    }

    public func abort(_ message: String, code: Int32) -> Never {
        KDLog.error(message)
        MPI_Abort(kd_mpi_comm_world(), code)
        exit(code)
    }
}
