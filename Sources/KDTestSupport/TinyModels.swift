// Tiny configurations shared by tests.
import KDConfig

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
