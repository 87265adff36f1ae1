// Owned, 64-byte aligned Float memory: one slab per model for parameters, gradients and optimizer state (llm.c).

/// A contiguous block of `count` Floats, zero-initialized, freed on deinit.
/// Shared by reference; kernels receive its `base` pointer plus offsets.
public final class Slab: @unchecked Sendable {
    /// First element; valid for `count` Floats while the slab lives.
    public let base: UnsafeMutablePointer<Float>
    /// Number of Floats.
    public let count: Int

    public init(count: Int) {
        precondition(count >= 0, "Slab: count must be >= 0, got \(count)")
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        raw.initializeMemory(as: Float.self, repeating: 0, count: max(count, 1))
        base = raw.assumingMemoryBound(to: Float.self)
        self.count = count
    }

    deinit { UnsafeMutableRawPointer(base).deallocate() }

    /// Sets every element to zero (the once-per-step zero-grad).
    public func zero() { base.update(repeating: 0, count: count) }

    /// A buffer view over the whole slab.
    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: base, count: count) }

    /// Copies the contents into a Swift array (tests, small tensors).
    public func toArray() -> [Float] { Array(buffer) }

    /// Bytes held.
    public var byteCount: Int { count * MemoryLayout<Float>.stride }
}
