// Row-parallel loops over a fixed thread count (the OpenMP analogue); BLAS threads are set alongside.
import Dispatch

/// The number of threads kernels may use. Set once at startup (`distill --threads`, bench); default 1.
public enum Parallel {
    nonisolated(unsafe) public static var threads: Int = 1

    /// Calls `body(lo, hi)` on contiguous ranges covering 0..<n, one range per thread (`threads`, unless `over` says).
    /// Runs inline when one thread is configured or the work is too small to split (`n < minPerThread * 2`).
    @inlinable
    public static func forRanges(_ n: Int, minPerThread: Int = 1, over: Int? = nil, _ body: (Int, Int) -> Void) {
        let t = min(over ?? threads, max(1, n / max(minPerThread, 1)))
        if t <= 1 {
            if n > 0 { body(0, n) }
            return
        }
        DispatchQueue.concurrentPerform(iterations: t) { i in
            let lo = n * i / t, hi = n * (i + 1) / t
            if hi > lo { body(lo, hi) }
        }
    }
}
