// Qwen2 / Qwen2.5: Llama's block with biases on the q, k and v projections; rotate-half RoPE in GGUF too.
import KDConfig

extension ModelFamily {
    public static let qwen2 = ModelFamily(
        name: .qwen2, ggufArchitecture: "qwen2", hfArchitecture: "Qwen2ForCausalLM", hfModelType: "qwen2",
        qkNorm: false, qkvBias: true, postNorms: false, scaledEmbedding: false, activation: .silu, hfNormOffset: 0,
        ggufPermutesQK: false, ffnNormName: "post_attention_layernorm", blockTensorNames: llamaNames,
        readExtras: { m, meta, gguf in
            if !gguf, meta.number("use_sliding_window") == 1 {
                throw FamilyError("use_sliding_window = true is not supported for qwen2")
            }
        },
        ggufExtras: { _ in [] },
        hfExtras: { _ in ["hidden_act": "silu", "use_sliding_window": false] })
}
