// Where every parameter tensor lives inside the one parameter slab (llm.c fill_in_parameter_sizes), named as in
// Hugging Face LlamaForCausalLM checkpoints so weights load and export without a renaming table.
import KDConfig

/// The fixed order, shapes and offsets of a Llama model's tensors in one slab.
public struct ParameterLayout: Sendable {
    public struct Entry: Sendable, Equatable {
        /// Hugging Face tensor name, e.g. `model.layers.3.self_attn.q_proj.weight`.
        public let name: String
        /// Row-major shape; matrices are [out, in].
        public let shape: [Int]
        /// Offset in Floats from the slab start.
        public let offset: Int
        public var count: Int { shape.reduce(1, *) }
        /// Matrices get weight decay; norm vectors do not.
        public var isMatrix: Bool { shape.count == 2 }
    }

    /// Offsets of one block's tensors.
    public struct Block: Sendable {
        public let ln1, wq, wk, wv, wo, ln2, wgate, wup, wdown: Int
    }

    public let entries: [Entry]
    public let blocks: [Block]
    /// Offsets of the embedding, the final norm and the LM head (== embedding when tied).
    public let embedding: Int, finalNorm: Int, lmHead: Int
    /// Total Floats.
    public let count: Int

    public init(config m: ModelConfig) {
        var entries: [Entry] = []
        var offset = 0
        func add(_ name: String, _ shape: [Int]) -> Int {
            entries.append(Entry(name: name, shape: shape, offset: offset))
            defer { offset += shape.reduce(1, *) }
            return offset
        }
        let c = m.dim, kv = m.kvDim, f = m.ffnDim, qd = m.qDim
        embedding = add("model.embed_tokens.weight", [m.vocabSize, c])
        var blocks: [Block] = []
        for l in 0..<m.layers {
            let p = "model.layers.\(l)."
            blocks.append(Block(
                ln1: add(p + "input_layernorm.weight", [c]),
                wq: add(p + "self_attn.q_proj.weight", [qd, c]),
                wk: add(p + "self_attn.k_proj.weight", [kv, c]),
                wv: add(p + "self_attn.v_proj.weight", [kv, c]),
                wo: add(p + "self_attn.o_proj.weight", [c, qd]),
                ln2: add(p + "post_attention_layernorm.weight", [c]),
                wgate: add(p + "mlp.gate_proj.weight", [f, c]),
                wup: add(p + "mlp.up_proj.weight", [f, c]),
                wdown: add(p + "mlp.down_proj.weight", [c, f])))
        }
        finalNorm = add("model.norm.weight", [c])
        lmHead = m.tiedEmbeddings ? embedding : add("lm_head.weight", [m.vocabSize, c])
        self.entries = entries
        self.blocks = blocks
        count = offset
    }

    /// Slab range of block l's tensors (contiguous: the block's tensors are laid out together).
    public func blockRange(_ l: Int) -> Range<Int> {
        let start = blocks[l].ln1
        let end = l + 1 < blocks.count ? blocks[l + 1].ln1 : finalNorm
        return start..<end
    }

    /// The entry called `name`, if any.
    public func entry(_ name: String) -> Entry? { entries.first { $0.name == name } }
}

extension ModelConfig {
    /// Parameters that take part in matrix products per token: every block's linear layers plus the LM head.
    public var matmulParameters: Int {
        layers * (2 * dim * qDim + 2 * dim * kvDim + 3 * dim * ffnDim) + vocabSize * dim
    }

    /// FLOPs of one token's forward pass with `seqLen`-token sequences: 2 per matmul parameter, plus attention
    /// QKᵀ and PV counted in full (4·layers·dim·seqLen), the convention of the PyTorch peer recipe.
    public func forwardFLOPsPerToken(seqLen: Int) -> Double {
        2 * Double(matmulParameters) + 4 * Double(layers * qDim * seqLen)
    }

    /// Forward + backward: three times the forward.
    public func trainFLOPsPerToken(seqLen: Int) -> Double { 3 * forwardFLOPsPerToken(seqLen: seqLen) }
}
