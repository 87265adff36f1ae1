// Each family's optional pieces trained and decoded: the whole-model gradient against central differences (biases,
// q/k head norms, post-norms, GeGLU, the scaled embedding, a sliding window that masks), and KV-cache decoding against
// the full forward (the window and the per-block RoPE base must hold for cached keys too).
import KDConfig
import KDModel
import KDTestSupport
import Testing

@Test(arguments: ModelFamilyName.allCases)
func aFamilysWholeModelGradientMatchesFiniteDifferences(family: ModelFamilyName) {
    // 7 tokens: Gemma's window of 3 masks
    let model = checkWholeModelGradient(tinyFamilyConfig(family), t: 7)
    // every optional tensor of the family gets a gradient that is not zero
    for e in model.layout.entries where e.name.contains("norm") || e.name.hasSuffix(".bias") {
        let g = (0..<e.count).map { abs(model.grads!.base[e.offset + $0]) }.max()!
        #expect(g > 1e-6, "\(e.name) has no gradient")
    }
}

@Test(arguments: ModelFamilyName.allCases)
func aFamilysKVCacheDecodingMatchesItsFullForward(family: ModelFamilyName) {
    let m = tinyFamilyConfig(family)
    let (train, toks, full) = checkKVCacheDecoding(m)
    // a window that masks changes the answer: the same weights without it do not give these logits
    if family == .gemma3 {
        var wide = m
        wide.slidingWindow = 0
        let other = Transformer(config: wide, needsGrad: false)
        other.params.base.update(from: train.params.base, count: train.layout.count)
        toks.withUnsafeBufferPointer { other.forward(tokens: $0.baseAddress!, b: 1, t: toks.count) }
        var o = [Float](repeating: 0, count: full.count)
        o.withUnsafeMutableBufferPointer { other.logits(into: $0.baseAddress!) }
        #expect(maxRelError(o, full) > 1e-3)
    }
}
