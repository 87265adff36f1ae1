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
        /// Matrices get weight decay; norm vectors and biases do not.
        public var isMatrix: Bool { shape.count == 2 }
        /// A projection bias (initialized to 0; norm weights start at 1).
        public var isBias: Bool { name.hasSuffix(".bias") }
        /// Held outside the slab (a packed teacher matrix, or one this rank does not use): its offset is a negative
        /// key that is never dereferenced.
        public var isExternal: Bool { offset < 0 }
    }

    /// Offsets of one block's tensors; the optional ones exist in the families that have them.
    public struct Block: Sendable {
        public let ln1, wq, wk, wv, wo, ln2, wgate, wup, wdown: Int
        /// Per-head q/k RMSNorm weights [head size] (Gemma 3, Qwen3).
        public var qNorm: Int? = nil, kNorm: Int? = nil
        /// q, k, v projection biases (Qwen2).
        public var bq: Int? = nil, bk: Int? = nil, bv: Int? = nil
        /// Norms on the attention output and the MLP output (Gemma 3).
        public var postAttnNorm: Int? = nil, postFFNNorm: Int? = nil
    }

    public let entries: [Entry]
    public let blocks: [Block]
    /// Offsets of the embedding, the final norm and the LM head (== embedding when tied).
    public let embedding: Int, finalNorm: Int, lmHead: Int
    /// Total Floats in the slab.
    public let count: Int

    /// The layout of `config`; tensors named by `external` take no room in the slab (an inference model that holds
    /// them packed, or not at all): their offsets are distinct negative keys.
    public init(config m: ModelConfig, external: (String) -> Bool = { _ in false }) {
        var entries: [Entry] = []
        var offset = 0, key = -1
        func add(_ name: String, _ shape: [Int]) -> Int {
            let n = shape.reduce(1, *)
            if external(name) {
                defer { key -= max(n, 1) }
                entries.append(Entry(name: name, shape: shape, offset: key))
                return key
            }
            entries.append(Entry(name: name, shape: shape, offset: offset))
            defer { offset += n }
            return offset
        }
        let c = m.dim, kv = m.kvDim, f = m.ffnDim, qd = m.qDim, fam = m.familySpec, hs = m.headSize
        embedding = add("model.embed_tokens.weight", [m.vocabSize, c])
        var blocks: [Block] = []
        for l in 0..<m.layers {
            // Llama's order, each optional piece right after the tensor it belongs to; ln1 stays first (blockRange)
            let p = "model.layers.\(l)."
            let ln1 = add(p + "input_layernorm.weight", [c])
            let qNorm = fam.qkNorm ? add(p + "self_attn.q_norm.weight", [hs]) : nil
            let kNorm = fam.qkNorm ? add(p + "self_attn.k_norm.weight", [hs]) : nil
            let wq = add(p + "self_attn.q_proj.weight", [qd, c])
            let bq = fam.qkvBias ? add(p + "self_attn.q_proj.bias", [qd]) : nil
            let wk = add(p + "self_attn.k_proj.weight", [kv, c])
            let bk = fam.qkvBias ? add(p + "self_attn.k_proj.bias", [kv]) : nil
            let wv = add(p + "self_attn.v_proj.weight", [kv, c])
            let bv = fam.qkvBias ? add(p + "self_attn.v_proj.bias", [kv]) : nil
            let wo = add(p + "self_attn.o_proj.weight", [c, qd])
            let postAttn = fam.postNorms ? add(p + "post_attention_layernorm.weight", [c]) : nil
            let ln2 = add(p + fam.ffnNormName + ".weight", [c])
            let wgate = add(p + "mlp.gate_proj.weight", [f, c])
            let wup = add(p + "mlp.up_proj.weight", [f, c])
            let wdown = add(p + "mlp.down_proj.weight", [c, f])
            let postFFN = fam.postNorms ? add(p + "post_feedforward_layernorm.weight", [c]) : nil
            blocks.append(Block(ln1: ln1, wq: wq, wk: wk, wv: wv, wo: wo, ln2: ln2, wgate: wgate, wup: wup, wdown: wdown,
                                qNorm: qNorm, kNorm: kNorm, bq: bq, bk: bk, bv: bv, postAttnNorm: postAttn, postFFNNorm: postFFN))
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

    /// Whether a stored tensor of shape `stored` fills `e`: the same shape, or — when the model keeps only the first
    /// rows of its vocabulary (`slicingVocab`) — an embedding or head table with more rows (row-major: the kept rows
    /// are a prefix of the stored data).
    public func accepts(_ e: Entry, stored: [Int], slicingVocab: Bool) -> Bool {
        if stored == e.shape { return true }
        let isTable = e.offset == embedding || e.offset == lmHead
        return slicingVocab && isTable && stored.count == 2 && stored[1] == e.shape[1] && stored[0] >= e.shape[0]
    }

    /// The block a tensor called `name` belongs to (model.layers.N.…), nil for the embedding, final norm and head.
    public static func block(of name: String) -> Int? {
        let p = name.split(separator: ".", maxSplits: 3)
        return p.count > 3 && p[0] == "model" && p[1] == "layers" ? Int(p[2]) : nil
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
