// Tiny configurations shared by tests.
import KDConfig
import KDCore

/// 2 layers, dim 32, 4 heads over 2 kv heads, ffn 48, vocab 64, sequences up to 16.
public func tinyModelConfig(tied: Bool = true, ropeStyle: RopeStyle = .half) -> ModelConfig {
    var m = ModelConfig()
    m.layers = 2
    m.dim = 32
    m.heads = 4
    m.kvHeads = 2
    m.ffnDim = 48
    m.vocabSize = 64
    m.maxSeqLen = 16
    m.ropeTheta = 10000
    m.ropeStyle = ropeStyle
    m.tiedEmbeddings = tied
    m.initStd = 0.2
    return m
}

/// tinyModelConfig shaped as `family`: Qwen3 and Gemma 3 with head size 6 (≠ 32/4) and q/k norms, Qwen2 with biases
/// and an untied head, Gemma 3 with a window of 3 on its first block (the second attends globally, RoPE base 10⁶).
public func tinyFamilyConfig(_ family: ModelFamilyName) -> ModelConfig {
    var m = tinyModelConfig(tied: family != .qwen2)
    m.family = family
    if family == .qwen3 || family == .gemma3 { m.headDim = 6 }
    if family == .gemma3 {
        m.slidingWindow = 3
        m.slidingPattern = 2
        m.ropeTheta = 1e6
        m.ropeThetaLocal = 10000
    }
    return m
}
