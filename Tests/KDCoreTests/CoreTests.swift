// KDCore: counter-based RNG properties, slabs, parallel ranges.
import Glibc
import KDCore
import Testing

@Test func counterRNGIsAPureFunctionOfItsCounters() {
    let a = CounterRNG(seed: 1, purpose: .dataSample), b = CounterRNG(seed: 1, purpose: .dataSample)
    #expect(a.bits(3, 4) == b.bits(3, 4))
    #expect(a.bits(3, 4) != a.bits(4, 3))
    #expect(a.bits(3, 4) != CounterRNG(seed: 2, purpose: .dataSample).bits(3, 4))
    #expect(a.bits(3, 4) != CounterRNG(seed: 1, purpose: .sampling).bits(3, 4))
    // moments of the uniform and normal streams
    let n = 200_000
    var su = 0.0, sn = 0.0, sn2 = 0.0
    for i in 0..<n {
        su += Double(a.uniform(UInt64(i)))
        let z = Double(a.normal(UInt64(i), 1))
        sn += z; sn2 += z * z
    }
    #expect(abs(su / Double(n) - 0.5) < 0.005)
    #expect(abs(sn / Double(n)) < 0.01)
    #expect(abs(sn2 / Double(n) - 1) < 0.02)
    #expect((0..<1000).allSatisfy { (0..<7).contains(a.index(7, UInt64($0))) })
}

@Test func parallelRangesCoverEveryIndexOnce() {
    // an explicit thread count: the global one belongs to the tests running alongside
    for t in [1, 2, 3] {
        let slab = Slab(count: 1001)
        Parallel.forRanges(1001, over: t) { lo, hi in for i in lo..<hi { slab.base[i] += 1 } }
        #expect(slab.toArray().allSatisfy { $0 == 1 })
    }
}

@Test func slabIsZeroedAndAligned() {
    let s = Slab(count: 37)
    #expect(s.toArray().allSatisfy { $0 == 0 })
    #expect(Int(bitPattern: s.base) % 64 == 0)
    s.base[3] = 2
    s.zero()
    #expect(s.toArray().allSatisfy { $0 == 0 })
    #expect(ProcessMemory.peakRSSBytes() > 0)
}

/// Slab.release returns only whole pages inside the range: they read as zero after, everything around keeps its values.
@Test func slabReleaseDropsWholePagesInsideTheRangeOnly() {
    let page = Int(sysconf(Int32(_SC_PAGESIZE))) / 4, slab = Slab(count: 10 * page)
    slab.base.update(repeating: 1, count: slab.count)
    let lo = 2 * page + 5, n = 4 * page
    let released = slab.release(offset: lo, count: n)
    #expect(released == 3 * page * 4, "released \(released) bytes")
    let a = slab.toArray()
    let firstZero = a.firstIndex(of: 0)!, lastZero = a.lastIndex(of: 0)!
    #expect(firstZero >= lo && lastZero < lo + n && lastZero - firstZero + 1 == 3 * page)
    #expect(a.filter { $0 == 0 }.count == 3 * page)
    #expect(slab.release(offset: 0, count: page / 2) == 0)
}
