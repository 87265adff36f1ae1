// A weight matrix a forward pass can multiply by, whatever its storage: dense Float here, packed GGUF blocks in
// KDQuant. Only dense weights are trained; packed ones serve teachers and inference.
// Dims: n rows, c input channels, oc output channels.

/// A [oc, c] matrix used as out = inp · Wᵀ.
public protocol LinearWeight: AnyObject {
    /// Output channels (rows of W).
    var oc: Int { get }
    /// Input channels (columns of W).
    var c: Int { get }
    /// out = inp · Wᵀ, or out += inp · Wᵀ when `accumulate`.
    /// - Shapes: out [n, oc] · inp [n, c]
    func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int, accumulate: Bool)
    /// Row i of W as Floats (an embedding lookup).
    /// - Shapes: out [c]
    func row(_ i: Int, into out: UnsafeMutablePointer<Float>)
}

/// A dense Float matrix inside some slab.
public final class DenseWeight: LinearWeight {
    public let base: UnsafePointer<Float>
    public let oc: Int, c: Int
    public init(_ base: UnsafePointer<Float>, oc: Int, c: Int) {
        self.base = base
        self.oc = oc
        self.c = c
    }
    public func forward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int, accumulate: Bool) {
        matmulForward(out: out, inp: inp, weight: base, n: n, c: c, oc: oc, accumulate: accumulate)
    }
    public func row(_ i: Int, into out: UnsafeMutablePointer<Float>) { out.update(from: base + i * c, count: c) }
}
