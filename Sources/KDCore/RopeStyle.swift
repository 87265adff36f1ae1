// Which channels RoPE rotates together: a word of the model config (`model.rope_style`) that the kernels switch over,
// kept here so the kernels (KDOps) and the config (KDConfig) share it without either importing the other.

/// `model.rope_style`: which channel pairs RoPE rotates.
public enum RopeStyle: String, CaseIterable, Codable, Sendable, Hashable {
    /// Hugging Face rotate_half: channel i with i + hs/2.
    case half
    /// GGUF (llama.cpp's original layout): channel 2i with 2i + 1.
    case adjacent
}
