// `distill comm-check` (hidden): the Float collectives that sharding uses, on this job's real communicator, against a
// naive reference every rank computes alone. Each rank's data is a function of (rank, element), so any rank knows
// every other rank's contribution. Run under mpirun by the tests with 2 and 3 ranks and counts that do not divide.
import ArgumentParser
import Foundation
import KDComm
import KDCore

struct CommCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "comm-check", abstract: "Check reduce-scatter, all-gather, gather and scatter against a naive reference.",
        shouldDisplay: false)

    @Option(help: "Floats in the test buffer (split unevenly among the ranks).") var count = 1001

    /// Rank r's value at element i: small integers and halves, so sums are exact in any order.
    static func value(rank r: Int, _ i: Int) -> Float { Float((i * 7 + r * 13) % 29) * 0.5 - 3 }

    /// Uneven pieces that sum to `n`: rank r gets about (r + 1) shares, the last rank the rest (possibly empty ones first).
    static func pieces(_ n: Int, ranks: Int) -> [Int] {
        let shares = ranks * (ranks + 1) / 2
        var counts = (0..<ranks).map { n * ($0 + 1) / shares }
        if ranks > 2 { counts[0] = 0 }  // an empty piece, as a tiny tensor split among many ranks has
        counts[ranks - 1] += n - counts.reduce(0, +)
        return counts
    }

    func run() throws {
        try Job.run(threads: 1) { comm in
            let (r, w) = (comm.rank, comm.worldSize)
            let counts = CommCheck.pieces(count, ranks: w)
            var offsets = [0]
            for c in counts.dropLast() { offsets.append(offsets.last! + c) }
            let mine = offsets[r]..<(offsets[r] + counts[r])
            var failures: [String] = []
            func expectEqual(_ what: String, _ got: [Float], _ want: [Float]) {
                if got != want {
                    let i = got.indices.first { !want.indices.contains($0) || got[$0] != want[$0] } ?? 0
                    failures.append("\(what): element \(i) is \(got.indices.contains(i) ? got[i] : .nan), expected \(want.indices.contains(i) ? want[i] : .nan)")
                }
            }
            // reduce-scatter, whole buffer and a bucket across a boundary
            var buf = (0..<count).map { CommCheck.value(rank: r, $0) }
            let sum = (0..<count).map { i in (0..<w).reduce(Float(0)) { $0 + CommCheck.value(rank: $1, i) } }
            try buf.withUnsafeMutableBufferPointer { try comm.reduceScatterSum($0.baseAddress!, counts: counts) }
            expectEqual("reduceScatterSum", Array(buf[mine]), Array(sum[mine]))
            buf = (0..<count).map { CommCheck.value(rank: r, $0) }
            let lo = count / 3, hi = 2 * count / 3
            let within = (0..<w).map { k in max(0, min(hi, offsets[k] + counts[k]) - max(lo, offsets[k])) }
            try buf.withUnsafeMutableBufferPointer { p in
                let req = try comm.startReduceScatterSum(p.baseAddress! + lo, counts: within)
                while try !req.test() {}
                try req.wait()
            }
            let (a, b) = (max(lo, mine.lowerBound), min(hi, mine.upperBound))
            if a < b, case let part = a..<b { expectEqual("startReduceScatterSum of [\(lo), \(hi))", Array(buf[part]), Array(sum[part])) }
            // all-gather: each rank fills only its piece
            var all = [Float](repeating: .nan, count: count)
            for i in mine { all[i] = CommCheck.value(rank: r, i) }
            try all.withUnsafeMutableBufferPointer { try comm.allGather($0.baseAddress!, counts: counts) }
            let owner = { (i: Int) in counts.indices.last { offsets[$0] <= i && counts[$0] > 0 }! }
            expectEqual("allGather", all, (0..<count).map { CommCheck.value(rank: owner($0), $0) })
            // gather to the last rank, scatter back from it
            let root = w - 1
            let piece = mine.map { CommCheck.value(rank: r, $0) } + (mine.isEmpty ? [0] : [])
            var full = [Float](repeating: .nan, count: r == root ? count : 0)
            try piece.withUnsafeBufferPointer { p in
                try full.withUnsafeMutableBufferPointer { f in
                    try comm.gather(p.baseAddress!, counts: counts, into: r == root ? f.baseAddress : nil, root: root)
                }
            }
            if r == root { expectEqual("gather", full, all) }
            var back = [Float](repeating: .nan, count: max(counts[r], 1))
            try full.withUnsafeBufferPointer { f in
                try back.withUnsafeMutableBufferPointer { try comm.scatter(r == root ? f.baseAddress : nil, counts: counts, into: $0.baseAddress!, root: root) }
            }
            expectEqual("scatter", Array(back.prefix(counts[r])), Array(piece.prefix(counts[r])))
            var bad = [Double(failures.count)]
            try comm.allReduceSum(&bad)
            for f in failures { KDLog.error("[rank \(r)/\(w)] comm-check: \(f)") }
            if comm.rank == 0 {
                print(bad[0] == 0 ? "comm-check ok: \(w) rank\(w == 1 ? "" : "s"), \(count) floats split \(counts)" : "comm-check FAILED")
            }
            if bad[0] > 0 { throw ExitCode.failure }
        }
    }
}
