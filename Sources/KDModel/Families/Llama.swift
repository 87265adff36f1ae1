// Llama 1–3 (and SmolLM, Mistral-style dense models): RMSNorm → GQA attention with RoPE → RMSNorm → SwiGLU; no biases.
import KDConfig

extension ModelFamily {
    public static let llama = ModelFamily(
        name: .llama, ggufArchitecture: "llama", hfArchitecture: "LlamaForCausalLM", hfModelType: "llama",
        qkNorm: false, qkvBias: false, postNorms: false, scaledEmbedding: false, activation: .silu, hfNormOffset: 0,
        ggufPermutesQK: true, ffnNormName: "post_attention_layernorm", blockTensorNames: llamaNames,
        readExtras: { m, meta, gguf in
            // Llama 3.1+ frequency scaling changes RoPE; refuse rather than run it wrong
            let scaled = gguf ? meta.string("rope.scaling.type") : meta.string("rope_scaling.rope_type")
            if let s = scaled, s != "none", s != "default" {
                throw FamilyError(meta.source, "RoPE scaling '\(s)' is not supported (Llama 3.1-style rope_freqs are not implemented)")
            }
        },
        ggufExtras: { _ in [] },
        hfExtras: { _ in ["hidden_act": "silu"] })
}
