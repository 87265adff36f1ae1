// Row-parallel loops over a fixed thread count (the OpenMP analogue); f32 GEMMs split over them too (OpenBLAS runs
// on one thread).
import Dispatch
import Synchronization

/// The number of threads kernels may use. Set once at startup (`distill --threads`, bench); default 1.
public enum Parallel {
    @usableFromInline static let count = Atomic<Int>(1)

    /// Threads a parallel loop splits over.
    @inlinable public static var threads: Int {
        get { count.load(ordering: .relaxed) }
        set { count.store(max(1, newValue), ordering: .relaxed) }
    }

    /// Calls `body(lo, hi)` on contiguous ranges covering 0..<n, one range per thread (`threads`, unless `over` says).
    /// Runs inline when one thread is configured or the work is too small to split (`n < minPerThread * 2`).
    @inlinable
    public static func forRanges(_ n: Int, minPerThread: Int = 1, over: Int? = nil, _ body: (Int, Int) -> Void) {
        forIndexedRanges(n, over: min(over ?? threads, max(1, n / max(minPerThread, 1)))) { _, lo, hi in body(lo, hi) }
    }

    /// Calls `body(index, lo, hi)` on contiguous ranges covering 0..<n, over exactly `over` threads (fewer when n is
    /// smaller), range `index` of 0..<over being n·index/over ..< n·(index + 1)/over: for work that needs a per-thread
    /// slice of a shared scratch buffer. Runs inline when there is one range.
    @inlinable
    public static func forIndexedRanges(_ n: Int, over: Int, _ body: (_ index: Int, _ lo: Int, _ hi: Int) -> Void) {
        let t = min(max(1, over), max(1, n))
        if t == 1 {
            if n > 0 { body(0, 0, n) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let work = RangeWork(body)
            DispatchQueue.concurrentPerform(iterations: t) { i in
                let lo = n * i / t, hi = n * (i + 1) / t
                if hi > lo { work.body(i, lo, hi) }
            }
        }
    }
}

/// The one place the kernels' raw buffers cross threads, unchecked by the compiler: `concurrentPerform` runs every
/// iteration before it returns (so `body` never outlives the call), and each iteration gets a disjoint range of the
/// caller's buffers — the contract every `forRanges` caller keeps (the OpenMP `parallel for` contract).
@usableFromInline struct RangeWork: @unchecked Sendable {
    @usableFromInline let body: (Int, Int, Int) -> Void
    @usableFromInline init(_ body: @escaping (Int, Int, Int) -> Void) { self.body = body }
}
