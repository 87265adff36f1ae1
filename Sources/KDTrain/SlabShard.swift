// Which contiguous range of the parameter slab each rank owns under `optimizer.sharding` (ZeRO-1/2, Rajbhandari et
// al. 2020). Ranges cut through tensors, but only at row boundaries: every quantization group (a block of 32 or a
// row) then lies in one rank's range, so a rank fake-quantizes its own rows from its own masters.
import KDConfig
import KDModel

/// The split of a parameter slab among ranks: `counts[r]` Floats from `offsets[r]`, contiguous, in rank order.
public struct SlabShard: Sendable, Equatable {
    /// Floats owned by each rank (they sum to the slab's length; a share may be empty, never truncated).
    public let counts: [Int]
    /// Where each rank's range starts.
    public let offsets: [Int]
    /// This rank.
    public let rank: Int

    /// The whole slab on one owner (`sharding: none`: every rank owns everything).
    public init(whole count: Int) {
        counts = [count]
        offsets = [0]
        rank = 0
    }

    /// `layout` cut into `worldSize` near-equal ranges whose boundaries fall on row starts of 2-D tensors.
    public init(layout: ParameterLayout, worldSize: Int, rank: Int) {
        precondition(worldSize >= 1 && (0..<worldSize).contains(rank), "shard of rank \(rank) in a world of \(worldSize)")
        var bounds = [0]
        for r in 1..<max(worldSize, 1) where worldSize > 1 {
            let ideal = layout.count * r / worldSize
            var b = ideal
            if let e = layout.entries.first(where: { $0.offset <= ideal && ideal < $0.offset + $0.count }), e.isMatrix {
                let c = e.shape[1], row = ((ideal - e.offset) + c / 2) / c
                b = e.offset + min(row, e.shape[0]) * c
            }
            bounds.append(max(b, bounds.last!))
        }
        bounds.append(layout.count)
        offsets = Array(bounds.dropLast())
        counts = zip(bounds.dropFirst(), bounds).map { $0 - $1 }
        self.rank = rank
    }

    /// This rank's range of the slab.
    public var range: Range<Int> { offsets[rank]..<(offsets[rank] + counts[rank]) }
    /// Owners (1 when unsharded).
    public var parts: Int { counts.count }
    /// Whether more than one rank owns a part (collectives needed after the update).
    public var isSplit: Bool { counts.count > 1 }

    /// Each rank's Floats inside the slab range [lo, hi) (what a reduce-scatter of that bucket delivers where).
    public func counts(within lo: Int, _ hi: Int) -> [Int] {
        (0..<parts).map { r in max(0, min(hi, offsets[r] + counts[r]) - max(lo, offsets[r])) }
    }

    /// The pieces of the matrices `entries` inside this rank's range, as (entry index, rows).
    public func rows(of entries: [ParameterLayout.Entry]) -> [(index: Int, rows: Range<Int>)] {
        SlabShard.rows(of: entries, in: range)
    }

    /// The pieces of the matrices `entries` inside the slab range `r` (which ends on row boundaries).
    public static func rows(of entries: [ParameterLayout.Entry], in r: Range<Int>) -> [(index: Int, rows: Range<Int>)] {
        entries.indices.compactMap { i in
            let e = entries[i], c = e.shape[1]
            precondition(e.isMatrix, "rows of the 1-D tensor \(e.name)")
            let lo = max(r.lowerBound, e.offset), hi = min(r.upperBound, e.offset + e.count)
            guard hi > lo else { return nil }
            assert((lo - e.offset) % c == 0 && (hi - e.offset) % c == 0, "shard boundary inside a row of \(e.name)")
            return (i, (lo - e.offset) / c..<(hi - e.offset) / c)
        }
    }
}
