// Owned, 64-byte aligned Float memory: one slab per model for parameters, gradients and optimizer state (llm.c).
// Zeroed by calloc, which maps fresh pages lazily: a region never written (the Float copy of a weight a packed
// teacher keeps in GGUF blocks) costs address space, not memory.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A contiguous block of `count` Floats, zero-initialized, freed on deinit.
/// Shared by reference; kernels receive its `base` pointer plus offsets.
public final class Slab: @unchecked Sendable {
    /// First element; valid for `count` Floats while the slab lives.
    public let base: UnsafeMutablePointer<Float>
    /// Number of Floats.
    public let count: Int
    let allocation: UnsafeMutableRawPointer

    public init(count: Int) {
        precondition(count >= 0, "Slab: count must be >= 0, got \(count)")
        guard let raw = calloc(max(count, 1) * MemoryLayout<Float>.stride + 64, 1) else {
            preconditionFailure("Slab: cannot allocate \(count) floats")
        }
        allocation = raw
        let aligned = (Int(bitPattern: raw) + 63) & ~63
        base = UnsafeMutablePointer(bitPattern: aligned)!
        self.count = count
        Slab.live.withLock { $0 += count * 4 }
        adviseHugePages(base, bytes: count * MemoryLayout<Float>.stride)
    }

    deinit {
        free(allocation)
        Slab.live.withLock { $0 -= count * 4 }
    }

    /// Bytes of every slab alive now: what the memory plan measures buffers with (calloc maps large slabs lazily, so
    /// these are address space, not yet memory).
    public static var liveBytes: Int { live.withLock { $0 } }
    static let live = Mutex(0)

    /// Sets every element to zero (the once-per-step zero-grad).
    public func zero() { base.update(repeating: 0, count: count) }

    /// A buffer view over the whole slab.
    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: base, count: count) }

    /// Copies the contents into a Swift array (tests, small tensors).
    public func toArray() -> [Float] { Array(buffer) }

    /// Bytes held.
    public var byteCount: Int { count * MemoryLayout<Float>.stride }

    /// Returns the whole pages inside elements offset ..< offset + count to the system (they read as zero after, and
    /// cost memory again only if written): for a region nothing will read again, such as the Float copy of a weight
    /// now held packed. Returns the bytes released.
    @discardableResult
    public func release(offset: Int, count n: Int) -> Int {
        precondition(offset >= 0 && n >= 0 && offset + n <= count, "Slab.release: \(offset)..<\(offset + n) outside \(count)")
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let lo = (Int(bitPattern: base + offset) + page - 1) / page * page, hi = Int(bitPattern: base + offset + n) / page * page
        guard hi > lo, madvise(UnsafeMutableRawPointer(bitPattern: lo), hi - lo, MADV_DONTNEED) == 0 else { return 0 }
        return hi - lo
    }
}

/// Asks the kernel to back the whole 2 MiB pages inside a large buffer with transparent huge pages (where
/// `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise`, as on Debian and Ubuntu, nothing else does): the
/// step's buffers are read in long sweeps (logits, packed panels, activations), and 4 KiB pages cost a TLB miss
/// every 1,024 Floats. Pages are still mapped lazily, on first write. `DISTILL_HUGEPAGES=0` leaves the default.
public func adviseHugePages(_ p: UnsafeMutableRawPointer, bytes: Int) {
    #if canImport(Glibc)
    let huge = 2 << 20
    guard bytes >= 2 * huge, hugePagesWanted else { return }
    let lo = (Int(bitPattern: p) + huge - 1) / huge * huge, hi = (Int(bitPattern: p) + bytes) / huge * huge
    if hi > lo { _ = madvise(UnsafeMutableRawPointer(bitPattern: lo), hi - lo, MADV_HUGEPAGE) }
    #endif
}

let hugePagesWanted = getenv("DISTILL_HUGEPAGES").map { String(cString: $0) != "0" } ?? true
