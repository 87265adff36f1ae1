// Qwen3 (dense): Llama's block with an RMSNorm over each query and key head before RoPE, no biases, and a head size
// given on its own (head_dim 128 with hidden 1024 and 16 heads in Qwen3-0.6B).
import KDConfig

extension ModelFamily {
    public static let qwen3 = ModelFamily(
        name: .qwen3, ggufArchitecture: "qwen3", hfArchitecture: "Qwen3ForCausalLM", hfModelType: "qwen3",
        qkNorm: true, qkvBias: false, postNorms: false, scaledEmbedding: false, activation: .silu, hfNormOffset: 0,
        ggufPermutesQK: false, ffnNormName: "post_attention_layernorm",
        blockTensorNames: llamaNames.merging(qkNormNames) { a, _ in a },
        readExtras: { m, meta, gguf in
            if !gguf, meta.number("attention_bias") == 1 { throw FamilyError("attention_bias = true is not supported for qwen3") }
        },
        ggufExtras: { _ in [] },
        hfExtras: { _ in ["hidden_act": "silu", "attention_bias": false] })
}
