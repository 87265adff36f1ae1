// Gemma 3 (text): the embedding scaled by √dim; RMSNorm on each query and key head before RoPE; a norm after attention
// and after the MLP, before each residual add; GeGLU (tanh GELU); five sliding-window blocks (RoPE base 10,000) to one
// global block (RoPE base `rope.freq_base`); tied head. Attention scale 1/√head_dim (query_pre_attn_scalar = head_dim,
// as in every size but 27B). GGUF norms hold 1 + w (llama.cpp's converter adds the 1); Hugging Face stores w.
import KDConfig

extension ModelFamily {
    public static let gemma3 = ModelFamily(
        name: .gemma3, ggufArchitecture: "gemma3", hfArchitecture: "Gemma3ForCausalLM", hfModelType: "gemma3_text",
        qkNorm: true, qkvBias: false, postNorms: true, scaledEmbedding: true, activation: .geluTanh, hfNormOffset: 1,
        ggufPermutesQK: false, ffnNormName: "pre_feedforward_layernorm",
        blockTensorNames: [
            "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
            "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "post_attention_norm",
            "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
            "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
        ].merging(qkNormNames) { a, _ in a },
        readExtras: { m, meta, gguf in
            // llama.cpp fixes the pattern (every 6th block global) and the local base (10,000) for gemma3
            m.slidingWindow = (gguf ? meta.int("attention.sliding_window") : meta.int("sliding_window")) ?? 0
            m.slidingPattern = gguf ? 6 : (meta.int("sliding_window_pattern") ?? 6)
            m.ropeThetaLocal = gguf ? 10000 : (meta.number("rope_local_base_freq") ?? 10000)
            if !gguf, let s = meta.number("query_pre_attn_scalar"), Int(s) != m.headSize {
                throw FamilyError("query_pre_attn_scalar \(Int(s)) ≠ head_dim \(m.headSize) is not supported")
            }
            if !gguf, let cap = meta.number("final_logit_softcapping"), cap > 0 {
                throw FamilyError("final_logit_softcapping is not supported")
            }
        },
        ggufExtras: { m in [("attention.sliding_window", m.slidingWindow)] },
        hfExtras: { m in
            ["hidden_activation": "gelu_pytorch_tanh", "sliding_window": m.slidingWindow, "sliding_window_pattern": m.slidingPattern,
             "rope_local_base_freq": m.ropeThetaLocal, "query_pre_attn_scalar": m.headSize, "attention_bias": false,
             "layer_types": (0..<m.layers).map { m.isSliding($0) ? "sliding_attention" : "full_attention" }]
        })
}
