// Token embedding lookup; port of llm.c encoder_forward/backward without positional embeddings (RoPE instead).
// Dims: n rows, c channels, v vocabulary.

/// out[r] = wte[tokens[r]].
/// - Shapes: out [n, c] · tokens [n] (each in 0..<v) · wte [v, c]
public func embeddingForward(
    out: UnsafeMutablePointer<Float>, tokens: UnsafePointer<Int32>, wte: UnsafePointer<Float>, n: Int, c: Int
) {
    for r in 0..<n {
        (out + r * c).update(from: wte + Int(tokens[r]) * c, count: c)
    }
}

/// Backward of ``embeddingForward``: dwte[tokens[r]] += dout[r]. Serial: rows sharing a token would race.
/// - Shapes: dwte [v, c] · dout [n, c] · tokens [n]
public func embeddingBackward(
    dwte: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, tokens: UnsafePointer<Int32>, n: Int, c: Int
) {
    for r in 0..<n {
        let d = dwte + Int(tokens[r]) * c, g = dout + r * c
        for i in 0..<c { d[i] += g[i] }
    }
}
