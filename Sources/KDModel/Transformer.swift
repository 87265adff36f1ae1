// The decoder transformer with explicit forward and backward (llm.c train_gpt2.c, Llama flavour):
// embedding → L × [RMSNorm → GQA attention with RoPE → residual → RMSNorm → SwiGLU MLP → residual] → RMSNorm →
// LM head fused with cross-entropy. Parameters and gradients each live in one slab laid out by ParameterLayout.
// A family (ModelFamily) adds optional pieces to the block, each with its backward: q/k/v biases (Qwen2), per-head q/k
// RMSNorm before RoPE (Qwen3, Gemma 3), norms on the attention and MLP outputs before the residual adds, GeGLU, a
// √dim-scaled embedding and sliding-window layers with their own RoPE base (Gemma 3).
// Dims: b batch, t sequence, n = b·t rows, c dim, kv kv dim, f ffn dim, v vocabulary, nh heads, hs head size.
import KDConfig
import KDCore
import KDLoss
import KDOps
import KDQuant

/// Buffers one block's forward writes and its backward reads.
final class BlockActivations {
    let ln1: Slab, rstd1: Slab, q: Slab, k: Slab, v: Slab, probs: Slab, att: Slab
    let x2: Slab, ln2: Slab, rstd2: Slab, gate: Slab, up: Slab, h: Slab
    /// q/k before their per-head norm and the norms' rstd (families with q/k norm).
    let qPre: Slab?, kPre: Slab?, rstdQ: Slab?, rstdK: Slab?
    /// Attention and MLP outputs before their post-norms, the norms' rstd, and the normed output on its way to the
    /// residual (families with post-norms).
    let attnOut: Slab?, rstdPA: Slab?, ffnOut: Slab?, rstdPF: Slab?, postTmp: Slab?
    /// `tk` keys per query (t in training; cached length + t when decoding).
    init(n: Int, b: Int, t: Int, tk: Int? = nil, m: ModelConfig) {
        let c = m.dim, fam = m.familySpec
        qPre = fam.qkNorm ? Slab(count: n * m.qDim) : nil; kPre = fam.qkNorm ? Slab(count: n * m.kvDim) : nil
        rstdQ = fam.qkNorm ? Slab(count: n * m.heads) : nil; rstdK = fam.qkNorm ? Slab(count: n * m.kvHeads) : nil
        attnOut = fam.postNorms ? Slab(count: n * c) : nil; rstdPA = fam.postNorms ? Slab(count: n) : nil
        ffnOut = fam.postNorms ? Slab(count: n * c) : nil; rstdPF = fam.postNorms ? Slab(count: n) : nil
        postTmp = fam.postNorms ? Slab(count: n * c) : nil
        ln1 = Slab(count: n * c); rstd1 = Slab(count: n)
        q = Slab(count: n * m.qDim); k = Slab(count: n * m.kvDim); v = Slab(count: n * m.kvDim)
        probs = Slab(count: b * m.heads * t * (tk ?? t)); att = Slab(count: n * m.qDim)
        x2 = Slab(count: n * c); ln2 = Slab(count: n * c); rstd2 = Slab(count: n)
        gate = Slab(count: n * m.ffnDim); up = Slab(count: n * m.ffnDim); h = Slab(count: n * m.ffnDim)
    }
}

/// Gradient scratch shared by all blocks during backward.
final class BackwardScratch {
    let dx, dln, datt, dq, dqp: Slab
    let dk, dv, dkp: Slab
    let dh, dgate, dup: Slab
    let attn: Slab
    /// Gradient at a post-norm's input (families with post-norms).
    let dpost: Slab?
    init(n: Int, t: Int, m: ModelConfig) {
        let c = m.dim, kv = m.kvDim, f = m.ffnDim
        dpost = m.familySpec.postNorms ? Slab(count: n * c) : nil
        dx = Slab(count: n * c); dln = Slab(count: n * c); datt = Slab(count: n * m.qDim)
        dq = Slab(count: n * m.qDim); dqp = Slab(count: n * m.qDim)
        dk = Slab(count: n * kv); dv = Slab(count: n * kv); dkp = Slab(count: n * kv)
        dh = Slab(count: n * f); dgate = Slab(count: n * f); dup = Slab(count: n * f)
        attn = Slab(count: t * t)
    }
}

/// Everything a (b, t) forward saves: per-block buffers (one shared set when no gradient is needed),
/// the residual stream entering each block, the final norm, the tokens and per-row losses.
final class Activations {
    let b: Int, t: Int
    let blocks: [BlockActivations]
    let resid: [Slab]  // resid[l] enters block l; resid[layers] leaves the last block
    let lnf: Slab, rstdf: Slab, losses: Slab, kdLosses: Slab, agree: Slab
    let tokens: UnsafeMutablePointer<Int32>
    let scratch: BackwardScratch?
    let lmHead: LMHeadScratch

    init(b: Int, t: Int, m: ModelConfig, training: Bool, lmHeadChunk: Int) {
        self.b = b
        self.t = t
        let n = b * t
        if training {
            blocks = (0..<m.layers).map { _ in BlockActivations(n: n, b: b, t: t, m: m) }
            resid = (0...m.layers).map { _ in Slab(count: n * m.dim) }
            scratch = BackwardScratch(n: n, t: t, m: m)
        } else {
            // inference: every block reuses one set, and the residual stream is updated in place
            let one = BlockActivations(n: n, b: b, t: t, m: m), r = Slab(count: n * m.dim)
            blocks = Array(repeating: one, count: m.layers)
            resid = Array(repeating: r, count: m.layers + 1)
            scratch = nil
        }
        lnf = Slab(count: n * m.dim); rstdf = Slab(count: n); losses = Slab(count: n); kdLosses = Slab(count: n); agree = Slab(count: n)
        tokens = .allocate(capacity: n)
        lmHead = LMHeadScratch(rows: min(lmHeadChunk, n), v: m.vocabSize)
    }
    deinit { tokens.deallocate() }
}

/// Sums of per-token losses (cross-entropy, and the distillation divergence when there is a teacher) and the number
/// of tokens that carried a loss.
public struct LossSum: Sendable, Equatable {
    public var sum: Double
    public var count: Int
    public var kdSum: Double = 0
    /// Rows where the student's most likely token is the teacher's (distillation losses only).
    public var agree: Int = 0
    public init(sum: Double = 0, count: Int = 0, kdSum: Double = 0, agree: Int = 0) { self.sum = sum; self.count = count; self.kdSum = kdSum; self.agree = agree }
    public var mean: Double { count > 0 ? sum / Double(count) : 0 }
    public var kdMean: Double { count > 0 ? kdSum / Double(count) : 0 }
    /// Top-1 agreement with the teacher.
    public var agreement: Double { count > 0 ? Double(agree) / Double(count) : 0 }
    public static func + (a: LossSum, b: LossSum) -> LossSum {
        LossSum(sum: a.sum + b.sum, count: a.count + b.count, kdSum: a.kdSum + b.kdSum, agree: a.agree + b.agree)
    }
}

/// A Llama-family decoder. Built with `needsGrad: false` for teachers and inference (no gradient slab, one
/// shared set of block buffers).
public final class Transformer {
    public let config: ModelConfig
    public let layout: ParameterLayout
    public let params: Slab
    public let grads: Slab?
    public let rope: RoPETable
    /// RoPE of the sliding-window blocks when their base differs (Gemma 3).
    public let ropeLocal: RoPETable?
    public let ropeStyle: RopeStyle
    /// The family's block pieces.
    public let family: ModelFamily
    /// Rows of logits the chunked LM head materializes at once.
    public var lmHeadChunk: Int
    /// 8da4w-style QAT: int8 per-token fake quantization of every activation entering a block's linear layers.
    public var quantizeActivations = false
    var acts: Activations?
    /// Matrices kept in a packed format (a GGUF teacher's blocks), keyed by their offset in the layout; their
    /// region of `params` is never touched. Only models without gradients may hold packed weights.
    public private(set) var packed: [Int: any LinearWeight] = [:]

    /// `external` names the tensors an inference model holds outside its Float slab (packed, or not on this rank).
    public init(config: ModelConfig, needsGrad: Bool, lmHeadChunk: Int = 256, external: (String) -> Bool = { _ in false }) {
        self.config = config
        layout = ParameterLayout(config: config, external: external)
        precondition(!needsGrad || !layout.entries.contains { $0.isExternal }, "external tensors are for inference models only")
        params = Slab(count: layout.count)
        grads = needsGrad ? Slab(count: layout.count) : nil
        rope = RoPETable(maxT: config.maxSeqLen, hs: config.headSize, theta: config.ropeTheta, freqFactors: config.ropeFreqFactors)
        let local = (0..<config.layers).contains { config.ropeBase($0) != config.ropeTheta }
        ropeLocal = local ? RoPETable(maxT: config.maxSeqLen, hs: config.headSize, theta: config.ropeThetaLocal) : nil
        ropeStyle = config.ropeStyle
        family = config.familySpec
        self.lmHeadChunk = lmHeadChunk
    }

    /// Uses `weight` for the tensor at layout offset `offset` instead of its Float copy in `params`.
    public func setPacked(_ weight: any LinearWeight, offset: Int) {
        precondition(grads == nil, "packed weights are for inference models only")
        packed[offset] = weight
    }

    /// Packs every dense matrix of this inference model to bf16 in the bf16 kernel's layout, and returns the pages of
    /// their f32 copies to the system: half the bytes, and no packing in its GEMMs (a frozen teacher in a bf16 run).
    /// Matrices already packed (GGUF blocks) stay as they are. Returns (bytes packed, f32 bytes released).
    @discardableResult
    public func packDenseMatricesBF16() -> (packed: Int, released: Int) {
        precondition(grads == nil, "packed weights are for inference models only")
        var bytes = 0, released = 0
        for e in layout.entries where e.isMatrix && !e.isExternal && packed[e.offset] == nil {
            let w = BF16Weight(params.base + e.offset, oc: e.shape[0], c: e.shape[1])
            packed[e.offset] = w
            bytes += w.packed.bytes
            released += params.release(offset: e.offset, count: e.count)
        }
        return (bytes, released)
    }

    /// Quantizes every dense matrix of this inference model to GGUF blocks of `type` (KDQuant's ggml-exact quantizer) and
    /// holds them as a GGUF teacher's are held (``QuantizedMatrix``), returning the pages of their f32 copies to the
    /// system: a random model shaped like a real teacher, stored as the user's file is (`distill bench --teacher-type`).
    /// Returns the bytes of the blocks.
    @discardableResult
    public func quantizeDenseMatrices(_ type: GGMLType) -> Int {
        precondition(grads == nil, "quantized weights are for inference models only")
        var bytes = 0
        for e in layout.entries where e.isMatrix && !e.isExternal && packed[e.offset] == nil {
            let (oc, c) = (e.shape[0], e.shape[1])
            precondition(c % type.blockSize == 0, "quantizeDenseMatrices: \(c)-wide rows do not take \(type) blocks")
            let blocks = QuantizedBlocks(byteCount: type.byteCount(elements: oc * c))
            let src = stored(e.offset)
            Parallel.forRanges(oc, minPerThread: 16) { r0, r1 in
                for r in r0..<r1 { quantize(type, src: src + r * c, count: c, out: blocks.base + r * type.byteCount(elements: c)) }
            }
            packed[e.offset] = QuantizedMatrix(type: type, oc: oc, c: c, data: UnsafeRawPointer(blocks.base), owner: blocks)
            bytes += blocks.byteCount
            _ = params.release(offset: e.offset, count: e.count)
        }
        return bytes
    }

    /// The weight at layout offset `offset` as a multipliable [oc, c] matrix.
    public func weight(_ offset: Int, oc: Int, c: Int) -> any LinearWeight {
        packed[offset] ?? DenseWeight(stored(offset), oc: oc, c: c)
    }

    /// The Floats of the tensor at layout offset `offset` in the slab; an external one (held packed, or not loaded on
    /// this rank) has none.
    @inline(__always)
    func stored(_ offset: Int) -> UnsafeMutablePointer<Float> {
        precondition(offset >= 0, "Transformer: a tensor held outside the slab was read as Floats (packed, or not loaded: its placement runs it elsewhere)")
        return params.base + offset
    }

    /// The LM head (the embedding when tied).
    public var lmHeadWeight: any LinearWeight { weight(layout.lmHead, oc: config.vocabSize, c: config.dim) }

    /// out (+)= inp · Wᵀ for the weight at `offset`, packed or dense.
    @inline(__always)
    func linear(_ offset: Int, out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, n: Int, c: Int, oc: Int,
                accumulate: Bool = false) {
        StepProfile.op(.gemm) {  // a packed weight's panel dequantization counts with its GEMM
            if let p = packed[offset] {
                p.forward(out: out, inp: inp, n: n, accumulate: accumulate)
            } else {
                matmulForward(out: out, inp: inp, weight: stored(offset), n: n, c: c, oc: oc, accumulate: accumulate)
            }
        }
    }

    /// The phase a forward of this model runs as in a step's breakdown.
    var forwardPhase: StepPhase { grads == nil ? .teacherForward : .studentForward }

    /// Token embeddings of `tokens` into out, from the packed or dense table (times √dim in families that scale it).
    func embed(out: UnsafeMutablePointer<Float>, tokens: UnsafePointer<Int32>, n: Int) {
        let c = config.dim
        if let p = packed[layout.embedding] {
            Parallel.forRanges(n, minPerThread: 16) { lo, hi in
                for r in lo..<hi { p.row(Int(tokens[r]), into: out + r * c) }
            }
        } else {
            embeddingForward(out: out, tokens: tokens, wte: stored(layout.embedding), n: n, c: c)
        }
        if family.scaledEmbedding { scaleRow(out, n * c, embeddingScale) }
    }

    /// √dim in float32, as llama.cpp multiplies Gemma's embedding.
    var embeddingScale: Float { Float(config.dim).squareRoot() }

    /// The RoPE table of block l.
    func ropeTable(_ l: Int) -> RoPETable { config.ropeBase(l) != config.ropeTheta ? ropeLocal! : rope }

    /// Normal(0, initStd) matrices (output projections scaled by 1/√(2·layers), GPT-2 style), unit norm weights.
    /// Every element is a function of (seed, tensor index, element index): identical on any thread count.
    public func initialize(seed: UInt64) {
        let rng = CounterRNG(seed: seed, purpose: .parameterInit)
        let residScale = 1 / Float(2 * config.layers).squareRoot()
        for (ti, e) in layout.entries.enumerated() {
            let p = params.base + e.offset
            if !e.isMatrix {
                p.update(repeating: e.isBias ? 0 : 1, count: e.count)
                continue
            }
            let isOut = e.name.hasSuffix("o_proj.weight") || e.name.hasSuffix("down_proj.weight")
            let std = config.initStd * (isOut ? residScale : 1)
            Parallel.forRanges(e.count, minPerThread: 1 << 14) { lo, hi in
                for i in lo..<hi { p[i] = std * rng.normal(UInt64(ti), UInt64(i)) }
            }
        }
    }

    func activations(b: Int, t: Int) -> Activations {
        precondition(t <= config.maxSeqLen, "forward: sequence of \(t) exceeds max_seq_len \(config.maxSeqLen)")
        if let a = acts, a.b == b, a.t == t { return a }
        let a = Activations(b: b, t: t, m: config, training: grads != nil, lmHeadChunk: lmHeadChunk)
        acts = a
        return a
    }

    // MARK: - Forward

    /// Runs the model on `b` sequences of `t` tokens up to the final RMSNorm, saving what backward needs.
    /// - Shapes: tokens [b, t], each in 0..<vocab
    public func forward(tokens: UnsafePointer<Int32>, b: Int, t: Int) {
        StepProfile.phase(forwardPhase) { forwardBlocks(tokens: tokens, b: b, t: t) }
    }

    func forwardBlocks(tokens: UnsafePointer<Int32>, b: Int, t: Int) {
        let a = activations(b: b, t: t), m = config, n = b * t, P = params.base
        a.tokens.update(from: tokens, count: n)
        for i in 0..<n {
            precondition(tokens[i] >= 0 && Int(tokens[i]) < m.vocabSize, "forward: token \(tokens[i]) outside vocabulary of \(m.vocabSize)")
        }
        embed(out: a.resid[0].base, tokens: tokens, n: n)
        let shape = AttentionShape(b: b, tq: t, tk: t, nh: m.heads, nkv: m.kvHeads, hs: m.headSize)
        for l in 0..<m.layers {
            let A = a.blocks[l]
            blockForward(l, A, resIn: a.resid[l].base, resOut: a.resid[l + 1].base, n: n, t: t, pos0: 0,
                         kDst: A.k.base, vDst: A.v.base, shape: shape)
        }
        rmsNormForward(out: a.lnf.base, rstd: a.rstdf.base, inp: a.resid[m.layers].base,
                       weight: P + layout.finalNorm, n: n, c: m.dim, eps: m.rmsEps)
    }

    /// A pipeline stage: blocks `layers` of the model on `b` sequences of `t` tokens. The input is the token
    /// embedding of `tokens` (first stage) or `hidden` (the residual stream from the previous stage); with
    /// `finalNorm` the output is the final RMSNorm (what the LM head reads), else the residual stream.
    /// Inference models only (they keep one residual buffer). - Shapes: tokens [b, t] · hidden, result [b·t, dim]
    /// `layers` may skip blocks (a cut student measured inside its teacher, `student.select`).
    public func forwardStage(_ layers: some Sequence<Int>, tokens: UnsafePointer<Int32>?, hidden: UnsafePointer<Float>?,
                             b: Int, t: Int, finalNorm: Bool) -> UnsafePointer<Float> {
        StepProfile.phase(.teacherForward) { stage(layers, tokens: tokens, hidden: hidden, b: b, t: t, finalNorm: finalNorm) }
    }

    func stage(_ layers: some Sequence<Int>, tokens: UnsafePointer<Int32>?, hidden: UnsafePointer<Float>?,
               b: Int, t: Int, finalNorm: Bool) -> UnsafePointer<Float> {
        precondition(grads == nil, "forwardStage: pipeline stages are for inference models")
        let a = activations(b: b, t: t), m = config, n = b * t
        let resid = a.resid[0].base
        if let tokens {
            a.tokens.update(from: tokens, count: n)
            embed(out: resid, tokens: tokens, n: n)
        } else if let hidden {
            resid.update(from: hidden, count: n * m.dim)
        }
        let shape = AttentionShape(b: b, tq: t, tk: t, nh: m.heads, nkv: m.kvHeads, hs: m.headSize)
        for l in layers {
            let A = a.blocks[l]
            blockForward(l, A, resIn: resid, resOut: resid, n: n, t: t, pos0: 0, kDst: A.k.base, vDst: A.v.base, shape: shape)
        }
        guard finalNorm else { return UnsafePointer(resid) }
        rmsNormForward(out: a.lnf.base, rstd: a.rstdf.base, inp: resid, weight: params.base + layout.finalNorm, n: n, c: m.dim, eps: m.rmsEps)
        return UnsafePointer(a.lnf.base)
    }

    /// One block. Keys and values are written to kDst/vDst (the activation buffers, or rows of a KV cache),
    /// and attention reads them through `shape` (which covers earlier cached positions when pos0 > 0).
    func blockForward(
        _ l: Int, _ A: BlockActivations, resIn: UnsafeMutablePointer<Float>, resOut: UnsafeMutablePointer<Float>,
        n: Int, t: Int, pos0: Int, kDst: UnsafeMutablePointer<Float>, vDst: UnsafeMutablePointer<Float>,
        kAll: UnsafePointer<Float>? = nil, vAll: UnsafePointer<Float>? = nil, shape: AttentionShape,
        afterRoPE: (() -> Void)? = nil
    ) {
        let m = config, c = m.dim, kv = m.kvDim, f = m.ffnDim, qd = m.qDim, hs = m.headSize, P = params.base, L = layout.blocks[l]
        rmsNormForward(out: A.ln1.base, rstd: A.rstd1.base, inp: resIn, weight: P + L.ln1, n: n, c: c, eps: m.rmsEps)
        if quantizeActivations { fakeQuantizeActivationsInt8(A.ln1.base, rows: n, c: c) }
        // with q/k norm the projections land in qPre/kPre and their per-head norms in q and kDst
        let qProj = A.qPre?.base ?? A.q.base, kProj = A.kPre?.base ?? kDst
        if grads == nil, let wq = packed[L.wq] as? BF16Weight, let wk = packed[L.wk] as? BF16Weight, let wv = packed[L.wv] as? BF16Weight,
           bf16MultiplySharingInput(n: n, inp: A.ln1.base, [(wq.packed, qProj), (wk.packed, kProj), (wv.packed, vDst)]) {
            // the three projections read one packing of the normed input
        } else if grads == nil, let wq = packed[L.wq] as? QuantizedMatrix, let wk = packed[L.wk] as? QuantizedMatrix,
                  let wv = packed[L.wv] as? QuantizedMatrix,
                  QuantizedMatrix.forwardSharing(A.ln1.base, n: n, [(wq, qProj), (wk, kProj), (wv, vDst)]) {
            // quantized: the same, each thread dequantizing its chunks of the three matrices' rows in turn
        } else {
            linear(L.wq, out: qProj, inp: A.ln1.base, n: n, c: c, oc: qd)
            linear(L.wk, out: kProj, inp: A.ln1.base, n: n, c: c, oc: kv)
            linear(L.wv, out: vDst, inp: A.ln1.base, n: n, c: c, oc: kv)
        }
        if let bq = L.bq, let bk = L.bk, let bv = L.bv {
            addBias(qProj, bias: P + bq, n: n, oc: qd)
            addBias(kProj, bias: P + bk, n: n, oc: kv)
            addBias(vDst, bias: P + bv, n: n, oc: kv)
        }
        if let qn = L.qNorm, let kn = L.kNorm, let qPre = A.qPre, let kPre = A.kPre {
            rmsNormForward(out: A.q.base, rstd: A.rstdQ!.base, inp: qPre.base, weight: P + qn, n: n * m.heads, c: hs, eps: m.rmsEps)
            rmsNormForward(out: kDst, rstd: A.rstdK!.base, inp: kPre.base, weight: P + kn, n: n * m.kvHeads, c: hs, eps: m.rmsEps)
        }
        let table = ropeTable(l)
        ropeForward(out: A.q.base, inp: A.q.base, table: table, n: n, t: t, pos0: pos0, nh: m.heads, hs: hs, style: ropeStyle)
        ropeForward(out: kDst, inp: kDst, table: table, n: n, t: t, pos0: pos0, nh: m.kvHeads, hs: hs, style: ropeStyle)
        afterRoPE?()
        var shape = shape
        shape.window = m.isSliding(l) ? m.slidingWindow : 0
        attentionForward(out: A.att.base, probs: A.probs.base, q: A.q.base, k: kAll ?? UnsafePointer(kDst),
                         v: vAll ?? UnsafePointer(vDst), shape: shape, keepProbs: grads != nil)
        // residual adds ride on sgemm's beta = 1: x2 = x + att·Woᵀ, out = x2 + h·Wdᵀ (post-norm families add normed outputs).
        // Without a backward, a stream updated in place is its own x2 (no copy in, none out).
        let x2 = grads == nil && resIn == resOut ? resIn : A.x2.base
        if x2 != resIn { x2.update(from: resIn, count: n * c) }
        if quantizeActivations { fakeQuantizeActivationsInt8(A.att.base, rows: n, c: qd) }
        if let pn = L.postAttnNorm, let o = A.attnOut, let tmp = A.postTmp {
            linear(L.wo, out: o.base, inp: A.att.base, n: n, c: qd, oc: c)
            rmsNormForward(out: tmp.base, rstd: A.rstdPA!.base, inp: o.base, weight: P + pn, n: n, c: c, eps: m.rmsEps)
            addRows(x2, tmp.base, n * c)
        } else {
            linear(L.wo, out: x2, inp: A.att.base, n: n, c: qd, oc: c, accumulate: true)
        }
        rmsNormForward(out: A.ln2.base, rstd: A.rstd2.base, inp: x2, weight: P + L.ln2, n: n, c: c, eps: m.rmsEps)
        if quantizeActivations { fakeQuantizeActivationsInt8(A.ln2.base, rows: n, c: c) }
        if grads == nil, family.activation == .silu, let g = packed[L.wgate] as? BF16Weight, let u = packed[L.wup] as? BF16Weight,
           bf16SwiGLUForward(h: A.h.base, inp: A.ln2.base, n: n, gate: g.packed, up: u.packed) {
            // gate and up stay in cache (no backward reads them): the same h bit for bit
        } else if grads == nil, family.activation == .silu, let g = packed[L.wgate] as? QuantizedMatrix,
                  let u = packed[L.wup] as? QuantizedMatrix,
                  QuantizedMatrix.swiGLUForwardFused(h: A.h.base, inp: A.ln2.base, n: n, gate: g, up: u) {
            // quantized: the same, per chunk of the two matrices' rows
        } else {
            linear(L.wgate, out: A.gate.base, inp: A.ln2.base, n: n, c: c, oc: f)
            linear(L.wup, out: A.up.base, inp: A.ln2.base, n: n, c: c, oc: f)
            switch family.activation {
            case .silu: swiGLUForward(out: A.h.base, gate: A.gate.base, up: A.up.base, n: n, f: f)
            case .geluTanh: geGLUForward(out: A.h.base, gate: A.gate.base, up: A.up.base, n: n, f: f)
            }
        }
        if quantizeActivations { fakeQuantizeActivationsInt8(A.h.base, rows: n, c: f) }
        if resOut != x2 { resOut.update(from: x2, count: n * c) }
        if let pn = L.postFFNNorm, let o = A.ffnOut, let tmp = A.postTmp {
            linear(L.wdown, out: o.base, inp: A.h.base, n: n, c: f, oc: c)
            rmsNormForward(out: tmp.base, rstd: A.rstdPF!.base, inp: o.base, weight: P + pn, n: n, c: c, eps: m.rmsEps)
            addRows(resOut, tmp.base, n * c)
        } else {
            linear(L.wdown, out: resOut, inp: A.h.base, n: n, c: f, oc: c, accumulate: true)
        }
    }

    /// Cross-entropy of the last ``forward`` against `targets` (−1 = no loss), without gradients.
    /// - Shapes: targets [b, t]
    public func loss(targets: UnsafePointer<Int32>) -> LossSum {
        StepProfile.phase(.loss) { crossEntropyLoss(targets: targets) }
    }

    func crossEntropyLoss(targets: UnsafePointer<Int32>) -> LossSum {
        guard let a = acts else { preconditionFailure("loss: call forward first") }
        let n = a.b * a.t
        lmHeadCrossEntropyForward(losses: a.losses.base, inp: a.lnf.base, head: lmHeadWeight, targets: targets, n: n,
                                  scratch: a.lmHead)
        return sumLosses(a, targets: targets)
    }

    func sumLosses(_ a: Activations, targets: UnsafePointer<Int32>, kd: Bool = false) -> LossSum {
        var s = LossSum()
        for r in 0..<(a.b * a.t) where targets[r] >= 0 {
            s.sum += Double(a.losses.base[r])
            if kd { s.kdSum += Double(a.kdLosses.base[r]); s.agree += a.agree.base[r] > 0 ? 1 : 0 }
            s.count += 1
        }
        return s
    }

    /// The residual stream leaving block `l` in the last forward (training models keep every block's).
    /// - Shapes: [b·t, dim]
    public func blockOutput(_ l: Int) -> UnsafePointer<Float> {
        guard let a = acts, grads != nil else { preconditionFailure("blockOutput: needs a forward on a model built with needsGrad") }
        return UnsafePointer(a.resid[l + 1].base)
    }

    /// Final hidden states (after the last RMSNorm) of the last forward: what a student's distillation head needs
    /// from its teacher. - Shapes: [b·t, dim]
    public var finalHidden: UnsafePointer<Float> {
        guard let a = acts else { preconditionFailure("finalHidden: call forward first") }
        return UnsafePointer(a.lnf.base)
    }

    /// Cross-entropy and divergence from `target`'s teacher for the last forward, without gradients.
    public func distillLoss(targets: UnsafePointer<Int32>, target: DistillTarget) -> LossSum {
        guard let a = acts else { preconditionFailure("distillLoss: call forward first") }
        StepProfile.phase(.loss) {
            lmHeadDistill(ce: a.losses.base, kd: a.kdLosses.base, agree: a.agree.base, dinp: nil, dweight: nil, inp: a.lnf.base, head: lmHeadWeight,
                          targets: targets, n: a.b * a.t, lossScale: 0, target: target, scratch: a.lmHead)
        }
        return sumLosses(a, targets: targets, kd: true)
    }

    /// Logits of every row of the last forward, materialized (tests and small vocabularies only).
    /// - Shapes: out [b·t, v]
    public func logits(into out: UnsafeMutablePointer<Float>) {
        guard let a = acts else { preconditionFailure("logits: call forward first") }
        lmHeadWeight.forward(out: out, inp: a.lnf.base, n: a.b * a.t, accumulate: false)
    }

    // MARK: - Backward
    // Backward is four kinds of calls a caller strings together in the open, as llm.c's gpt2_backward reads:
    //   headBackward; for l in blocks.reversed() { [a loss on block l's output adds into residualGradient];
    //   mlpBackward(l); attentionBackward(l) }; embeddingLookupGradient, applied here or exchanged first.
    // ``backward(targets:lossScale:distill:)`` is that list for a caller with nothing to add between the calls.

    /// Loss of the last forward and the gradient of `lossScale · Σ losses` through the LM head and the final norm,
    /// accumulated into `grads`; ``residualGradient`` then holds dL/d(last block's output).
    /// The caller zeroes `grads` once per optimizer step and picks lossScale = 1 / (global loss-token count).
    /// - Shapes: targets [b, t] (−1 = no loss)
    public func headBackward(targets: UnsafePointer<Int32>, lossScale: Float, distill: DistillTarget? = nil) -> LossSum {
        StepProfile.phase(.loss) { lossBackward(targets: targets, lossScale: lossScale, distill: distill) }
    }

    func lossBackward(targets: UnsafePointer<Int32>, lossScale: Float, distill: DistillTarget?) -> LossSum {
        let (a, S) = backwardState("headBackward")
        let m = config, n = a.b * a.t, c = m.dim, P = params.base, G = grads!.base
        S.dx.zero()
        S.dln.zero()
        if let distill {
            lmHeadDistill(ce: a.losses.base, kd: a.kdLosses.base, agree: a.agree.base, dinp: S.dln.base, dweight: G + layout.lmHead, inp: a.lnf.base,
                          head: lmHeadWeight, targets: targets, n: n, lossScale: lossScale, target: distill, scratch: a.lmHead)
        } else {
            lmHeadCrossEntropyForwardBackward(
                losses: a.losses.base, dinp: S.dln.base, dweight: G + layout.lmHead, inp: a.lnf.base,
                weight: P + layout.lmHead, targets: targets, n: n, c: c, v: m.vocabSize, lossScale: lossScale, scratch: a.lmHead)
        }
        rmsNormBackward(dinp: S.dx.base, dweight: G + layout.finalNorm, dout: S.dln.base, inp: a.resid[m.layers].base,
                        weight: P + layout.finalNorm, rstd: a.rstdf.base, n: n, c: c)
        return sumLosses(a, targets: targets, kd: distill != nil)
    }

    /// dL/d(the residual stream) at the point backward has reached: after ``headBackward`` the last block's output,
    /// after ``attentionBackward(_:)`` of block l block l's input (= block l − 1's output). A loss on a block's output
    /// (hidden-state distillation) adds its gradient here before that block's ``mlpBackward(_:)``.
    /// - Shapes: [b·t, dim]
    public var residualGradient: UnsafeMutablePointer<Float> { backwardState("residualGradient").1.dx.base }

    /// The MLP half of block l: ``residualGradient`` from dL/d(block output) to dL/d(x2), the stream after attention.
    public func mlpBackward(_ l: Int) {
        StepProfile.phase(.backward) { mlpBackwardBlock(l) }
    }

    func mlpBackwardBlock(_ l: Int) {
        let (a, S) = backwardState("mlpBackward")
        let m = config, n = a.b * a.t, c = m.dim, f = m.ffnDim, P = params.base, G = grads!.base
        let A = a.blocks[l], L = layout.blocks[l]
        // the residual passes dL/d(output) straight through to x2; the MLP branch adds its part
        let dMLP = throughPostNorm(L.postFFNNorm, output: A.ffnOut, rstd: A.rstdPF, S, n: n)
        S.dh.zero()
        matmulBackward(dinp: S.dh.base, dweight: G + L.wdown, dout: dMLP, inp: A.h.base, weight: P + L.wdown, n: n, c: f, oc: c)
        S.dgate.zero(); S.dup.zero()
        switch family.activation {
        case .silu: swiGLUBackward(dgate: S.dgate.base, dup: S.dup.base, dout: S.dh.base, gate: A.gate.base, up: A.up.base, n: n, f: f)
        case .geluTanh: geGLUBackward(dgate: S.dgate.base, dup: S.dup.base, dout: S.dh.base, gate: A.gate.base, up: A.up.base, n: n, f: f)
        }
        S.dln.zero()
        matmulBackward(dinp: S.dln.base, dweight: G + L.wgate, dout: S.dgate.base, inp: A.ln2.base, weight: P + L.wgate, n: n, c: c, oc: f)
        matmulBackward(dinp: S.dln.base, dweight: G + L.wup, dout: S.dup.base, inp: A.ln2.base, weight: P + L.wup, n: n, c: c, oc: f)
        rmsNormBackward(dinp: S.dx.base, dweight: G + L.ln2, dout: S.dln.base, inp: A.x2.base, weight: P + L.ln2, rstd: A.rstd2.base, n: n, c: c)
    }

    /// The gradient a branch's output receives from ``residualGradient``: through its post-norm (weight at layout offset
    /// `norm`, families with post-norms) into the scratch, else the residual gradient itself.
    func throughPostNorm(_ norm: Int?, output: Slab?, rstd: Slab?, _ S: BackwardScratch, n: Int) -> UnsafePointer<Float> {
        guard let pn = norm, let o = output, let r = rstd, let dp = S.dpost else { return UnsafePointer(S.dx.base) }
        dp.zero()
        rmsNormBackward(dinp: dp.base, dweight: grads!.base + pn, dout: S.dx.base, inp: o.base, weight: params.base + pn, rstd: r.base,
                        n: n, c: config.dim)
        return UnsafePointer(dp.base)
    }

    /// The attention half of block l: ``residualGradient`` from dL/d(x2) to dL/d(block input).
    public func attentionBackward(_ l: Int) {
        StepProfile.phase(.backward) { attentionBackwardBlock(l) }
    }

    func attentionBackwardBlock(_ l: Int) {
        let (a, S) = backwardState("attentionBackward")
        let m = config, n = a.b * a.t, c = m.dim, kv = m.kvDim, P = params.base, G = grads!.base
        let A = a.blocks[l], L = layout.blocks[l]
        let shape = AttentionShape(b: a.b, tq: a.t, tk: a.t, nh: m.heads, nkv: m.kvHeads, hs: m.headSize)
        let dAttn = throughPostNorm(L.postAttnNorm, output: A.attnOut, rstd: A.rstdPA, S, n: n)
        S.datt.zero()
        matmulBackward(dinp: S.datt.base, dweight: G + L.wo, dout: dAttn, inp: A.att.base, weight: P + L.wo, n: n, c: m.qDim, oc: c)
        S.dq.zero(); S.dk.zero(); S.dv.zero()
        KDOps.attentionBackward(dq: S.dq.base, dk: S.dk.base, dv: S.dv.base, scratch: S.attn.base, dout: S.datt.base,
                          probs: A.probs.base, q: A.q.base, k: A.k.base, v: A.v.base, shape: shape)
        S.dqp.zero(); S.dkp.zero()
        let table = ropeTable(l)
        ropeBackward(dinp: S.dqp.base, dout: S.dq.base, table: table, n: n, t: a.t, nh: m.heads, hs: m.headSize, style: ropeStyle)
        ropeBackward(dinp: S.dkp.base, dout: S.dk.base, table: table, n: n, t: a.t, nh: m.kvHeads, hs: m.headSize, style: ropeStyle)
        // gradients at the q and k projections' outputs: through the per-head norms when the family has them
        var dqProj = UnsafePointer(S.dqp.base), dkProj = UnsafePointer(S.dkp.base)
        if let qn = L.qNorm, let kn = L.kNorm, let qPre = A.qPre, let kPre = A.kPre {
            S.dq.zero(); S.dk.zero()
            rmsNormBackward(dinp: S.dq.base, dweight: G + qn, dout: S.dqp.base, inp: qPre.base, weight: P + qn, rstd: A.rstdQ!.base,
                            n: n * m.heads, c: m.headSize)
            rmsNormBackward(dinp: S.dk.base, dweight: G + kn, dout: S.dkp.base, inp: kPre.base, weight: P + kn, rstd: A.rstdK!.base,
                            n: n * m.kvHeads, c: m.headSize)
            dqProj = UnsafePointer(S.dq.base); dkProj = UnsafePointer(S.dk.base)
        }
        if let bq = L.bq, let bk = L.bk, let bv = L.bv {
            biasBackward(dbias: G + bq, dout: dqProj, n: n, oc: m.qDim)
            biasBackward(dbias: G + bk, dout: dkProj, n: n, oc: kv)
            biasBackward(dbias: G + bv, dout: S.dv.base, n: n, oc: kv)
        }
        S.dln.zero()
        matmulBackward(dinp: S.dln.base, dweight: G + L.wq, dout: dqProj, inp: A.ln1.base, weight: P + L.wq, n: n, c: c, oc: m.qDim)
        matmulBackward(dinp: S.dln.base, dweight: G + L.wk, dout: dkProj, inp: A.ln1.base, weight: P + L.wk, n: n, c: c, oc: kv)
        matmulBackward(dinp: S.dln.base, dweight: G + L.wv, dout: S.dv.base, inp: A.ln1.base, weight: P + L.wv, n: n, c: c, oc: kv)
        rmsNormBackward(dinp: S.dx.base, dweight: G + L.ln1, dout: S.dln.base, inp: a.resid[l].base, weight: P + L.ln1, rstd: A.rstd1.base, n: n, c: c)
    }

    /// After block 0's backward: the embedding lookup's gradient (dL/d(embedding output), times √dim in families that
    /// scale the embedding) with its tokens, for ``applyEmbeddingGradient(_:)`` here or on every rank after an
    /// exchange. Call once per backward: it scales ``residualGradient`` in place.
    public func embeddingLookupGradient() -> EmbeddingGradient {
        let (a, S) = backwardState("embeddingLookupGradient")
        let n = a.b * a.t
        if family.scaledEmbedding { scaleRow(S.dx.base, n * config.dim, embeddingScale) }
        return EmbeddingGradient(dout: UnsafePointer(S.dx.base), tokens: UnsafePointer(a.tokens), n: n)
    }

    /// Adds an embedding-lookup gradient (this rank's or another's) into the gradient slab.
    public func applyEmbeddingGradient(_ g: EmbeddingGradient) {
        guard let grads else { preconditionFailure("applyEmbeddingGradient: model has no gradients") }
        StepProfile.phase(.backward) { embeddingBackward(dwte: grads.base + layout.embedding, dout: g.dout, tokens: g.tokens, n: g.n, c: config.dim) }
    }

    /// The whole backward of the last forward with nothing added between its calls (see the list above).
    @discardableResult
    public func backward(targets: UnsafePointer<Int32>, lossScale: Float, distill: DistillTarget? = nil) -> LossSum {
        let loss = headBackward(targets: targets, lossScale: lossScale, distill: distill)
        for l in (0..<config.layers).reversed() {
            mlpBackward(l)
            attentionBackward(l)
        }
        applyEmbeddingGradient(embeddingLookupGradient())
        return loss
    }

    func backwardState(_ caller: String) -> (Activations, BackwardScratch) {
        guard let a = acts, grads != nil, let S = a.scratch else { preconditionFailure("\(caller): needs a forward on a model built with needsGrad") }
        return (a, S)
    }
}

/// The embedding lookup's gradient of one backward: dL/d(embedding output) rows and the tokens they add into.
/// - Shapes: dout [n, dim] · tokens [n]
public struct EmbeddingGradient {
    public let dout: UnsafePointer<Float>
    public let tokens: UnsafePointer<Int32>
    public let n: Int
    public init(dout: UnsafePointer<Float>, tokens: UnsafePointer<Int32>, n: Int) { (self.dout, self.tokens, self.n) = (dout, tokens, n) }
}

/// x += y elementwise.
@inline(__always) func addRows(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, _ count: Int) {
    for i in 0..<count { x[i] += y[i] }
}

extension Transformer {
    /// Bytes of the buffers a (b, t) forward of `config` allocates (`training`: every block's and the backward
    /// scratch; else one shared set), found by allocating them once: calloc maps large slabs lazily, so this costs
    /// address space for an instant, not memory. Without `headLogits`, the LM head's logits buffer is left out (a
    /// teacher whose head runs in the student's buffers never touches its own).
    public static func activationBytes(config: ModelConfig, b: Int, t: Int, training: Bool, lmHeadChunk: Int,
                                       headLogits: Bool = true) -> Int {
        let before = Slab.liveBytes
        let a = Activations(b: b, t: t, m: config, training: training, lmHeadChunk: lmHeadChunk)
        let bytes = Slab.liveBytes - before - (headLogits ? 0 : a.lmHead.logits.byteCount)
        return withExtendedLifetime(a) { bytes }
    }
}

/// Owned GGUF blocks (``Transformer/quantizeDenseMatrices(_:)``), kept alive by the matrix that reads them.
final class QuantizedBlocks {
    let base: UnsafeMutableRawPointer, byteCount: Int
    init(byteCount: Int) {
        self.byteCount = byteCount
        base = .allocate(byteCount: max(1, byteCount), alignment: 64)
    }
    deinit { base.deallocate() }
}
