// Llama 1–3 (and SmolLM, Mistral-style dense models): RMSNorm → GQA attention with RoPE → RMSNorm → SwiGLU; no biases.
// Llama 3.1+ scales RoPE's low frequencies (`rope_scaling: {rope_type: llama3}` in config.json; llama.cpp's converter
// stores the resulting per-frequency divisors as the tensor `rope_freqs.weight`).
import Foundation
import KDConfig

/// Llama 3.1's RoPE frequency scaling as per-frequency divisors (what llama.cpp's converter writes as rope_freqs.weight):
/// 1 for wavelengths under original/high, `factor` over original/low, interpolated between.
public func llama3RopeFactors(headSize hs: Int, theta: Double, factor: Double, lowFreqFactor: Double, highFreqFactor: Double,
                              originalContext: Double) -> [Double] {
    let lowWavelen = originalContext / lowFreqFactor, highWavelen = originalContext / highFreqFactor
    return (0..<(hs / 2)).map { i in
        let wavelen = 2 * Double.pi / Foundation.pow(theta, -2 * Double(i) / Double(hs))
        if wavelen < highWavelen { return 1 }
        if wavelen > lowWavelen { return factor }
        let smooth = (originalContext / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor)
        return 1 / ((1 - smooth) / factor + smooth)
    }
}

/// The rope_scaling parameters of Llama 3.x's release (low 1, high 4, original 8192) with the factor that reproduces
/// `factors`, or nil when no such parameters do (then only distill's own config key carries them).
func llama3Parameters(_ factors: [Double], headSize: Int, theta: Double) -> [String: Any]? {
    guard let factor = factors.max() else { return nil }
    let fit = llama3RopeFactors(headSize: headSize, theta: theta, factor: factor, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 8192)
    guard zip(fit, factors).allSatisfy({ abs($0 - $1) <= 1e-5 * $1 }) else { return nil }
    return ["rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192]
}

extension ModelFamily {
    public static let llama = ModelFamily(
        name: .llama, ggufArchitecture: "llama", hfArchitecture: "LlamaForCausalLM", hfModelType: "llama",
        qkNorm: false, qkvBias: false, postNorms: false, scaledEmbedding: false, activation: .silu, hfNormOffset: 0,
        ggufPermutesQK: true, ffnNormName: "post_attention_layernorm", blockTensorNames: llamaNames,
        readExtras: { m, meta, gguf in
            // GGUF: rope_freqs.weight is read by the loader. config.json: llama3 scaling becomes the same divisors
            // (other scaling types: refused by `configure`)
            if !gguf, meta.ropeScaling == "llama3" {
                guard let f = meta.number("rope_scaling.factor"), let lo = meta.number("rope_scaling.low_freq_factor"),
                      let hi = meta.number("rope_scaling.high_freq_factor"), let orig = meta.number("rope_scaling.original_max_position_embeddings") else {
                    throw FamilyError("rope_scaling llama3 needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings")
                }
                m.ropeFreqFactors = llama3RopeFactors(headSize: m.headSize, theta: m.ropeTheta, factor: f, lowFreqFactor: lo,
                                                      highFreqFactor: hi, originalContext: orig)
            }
        },
        ggufExtras: { _ in [] },
        hfExtras: { m in
            var extra: [String: Any] = ["hidden_act": "silu"]
            if let f = m.ropeFreqFactors, let p = llama3Parameters(f, headSize: m.headSize, theta: m.ropeTheta) { extra["rope_scaling"] = p }
            return extra
        })
}
