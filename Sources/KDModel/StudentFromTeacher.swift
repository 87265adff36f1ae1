// Students cut from their teacher (DistilBERT, Minitron): the teacher's embedding, final norm and LM head, and a
// selection of its blocks in order (depth pruning), dequantized into a trainable full-precision student; optionally
// narrower (width pruning: residual-stream channels, FFN channels, query heads, each ranked by mean |activation|).
import KDConfig
import KDCore
import KDOps
import KDQuant

extension Transformer {
    /// Every element of the tensor at `entry` as floats (packed weights dequantized). - Shapes: out [entry.count]
    public func denseTensor(_ entry: ParameterLayout.Entry, into out: UnsafeMutablePointer<Float>) {
        if let q = packed[entry.offset] as? QuantizedMatrix {
            dequantize(q.type, src: q.data, out: out, count: entry.count)
        } else {
            out.update(from: stored(entry.offset), count: entry.count)
        }
    }

    /// Mean |activation| of every FFN hidden channel (silu(gate)·up, what the down projection reads) of every block
    /// over the tokens given: the importance width pruning ranks channels by (Minitron). Inference models only.
    /// - Shapes: tokens [b, t] · result [layers][ffnDim]
    public func ffnChannelImportance(tokens: UnsafePointer<Int32>, b: Int, t: Int) -> [[Double]] {
        meanAbsoluteColumns(tokens: tokens, b: b, t: t, width: config.ffnDim) { $0.h }
    }

    /// Mean |attention output| of every query head of every block (the head's slice of what the output projection
    /// reads) over the tokens given: the importance head pruning ranks heads by. Inference models only.
    /// - Shapes: tokens [b, t] · result [layers][heads]
    public func attentionHeadImportance(tokens: UnsafePointer<Int32>, b: Int, t: Int) -> [[Double]] {
        let hs = config.headSize
        return meanAbsoluteColumns(tokens: tokens, b: b, t: t, width: config.qDim) { $0.att }.map { cols in
            (0..<config.heads).map { h in cols[(h * hs)..<((h + 1) * hs)].reduce(0, +) / Double(hs) }
        }
    }

    /// Mean |normalized hidden state| of every residual-stream channel, per block: the two RMSNorm outputs (what
    /// attention and the FFN read), summed — the importance hidden-dim pruning ranks channels by (Minitron's width axis,
    /// aggregated over the blocks a student keeps). Inference models only. - Shapes: tokens [b, t] · result [layers][dim]
    public func residualChannelImportance(tokens: UnsafePointer<Int32>, b: Int, t: Int) -> [[Double]] {
        meanAbsoluteColumns(tokens: tokens, b: b, t: t, width: config.dim, { $0.ln1 }, { $0.ln2 })
    }

    /// The stream around a run of blocks `(before + 1)...last` that a cut drops, for a linear bridge over it: per row,
    /// block `before`'s FFN output (what its down projection adds to the stream), the stream before that addition and
    /// the stream after block `last`. Inference models of families whose FFN output adds to the stream as it is (no
    /// post-norms). - Shapes: tokens [b, t] · each result [b·t, dim]
    public func seamStreams(tokens: UnsafePointer<Int32>, b: Int, t: Int, before: Int, last: Int)
        -> (ffnOut: [Float], beforeFFN: [Float], after: [Float]) {
        precondition(!config.familySpec.postNorms && before >= 0 && last > before && last < config.layers)
        let n = b * t, c = config.dim, f = config.ffnDim
        let stream = forwardStage(0...before, tokens: tokens, hidden: nil, b: b, t: t, finalNorm: false)
        let mid = Array(UnsafeBufferPointer(start: stream, count: n * c))
        let down = [Float](unsafeUninitializedCapacity: c * f) { buf, count in
            denseTensor(layout.entries.first { $0.offset == layout.blocks[before].wdown }!, into: buf.baseAddress!)
            count = c * f
        }
        var ffnOut = [Float](repeating: 0, count: n * c)
        ffnOut.withUnsafeMutableBufferPointer { out in
            down.withUnsafeBufferPointer { w in
                matmulForward(out: out.baseAddress!, inp: activations(b: b, t: t).blocks[before].h.base, weight: w.baseAddress!, n: n, c: f, oc: c)
            }
        }
        let beforeFFN = zip(mid, ffnOut).map { $0 - $1 }
        let after = mid.withUnsafeBufferPointer { m in
            Array(UnsafeBufferPointer(start: forwardStage((before + 1)...last, tokens: nil, hidden: m.baseAddress, b: b, t: t, finalNorm: false),
                                      count: n * c))
        }
        return (ffnOut, beforeFFN, after)
    }

    /// Per block, the mean |value| of every column of the [b·t, width] buffers `buffers` pick from its activations,
    /// summed over the buffers.
    func meanAbsoluteColumns(tokens: UnsafePointer<Int32>, b: Int, t: Int, width: Int, _ buffers: (BlockActivations) -> Slab...) -> [[Double]] {
        let n = b * t
        var out: [[Double]] = []
        for l in 0..<config.layers {
            _ = forwardStage(l..<(l + 1), tokens: l == 0 ? tokens : nil, hidden: nil, b: b, t: t, finalNorm: false)
            var acc = [Double](repeating: 0, count: width)
            for buffer in buffers {
                let x = buffer(activations(b: b, t: t).blocks[l]).base
                for r in 0..<n { for j in 0..<width { acc[j] += Double(abs(x[r * width + j])) } }
            }
            out.append(acc.map { $0 / Double(n) })
        }
        return out
    }

    /// Copies the embedding, final norm, head and blocks `layers[i]` → student block i from `teacher`. The student must
    /// have the teacher's vocabulary, key/value heads and head size and `layers.count` blocks. Width pruning, each
    /// optional and combinable: with `residualChannels` (the teacher's residual-stream channels kept, ascending) its
    /// `dim` may be narrower — every matrix, norm and the embedding keep those rows or columns; with `ffnChannels` (per
    /// student block, the teacher FFN channels kept, ascending) its ffn_dim; with `queryHeads` (per student block, the
    /// teacher query heads kept, grouped by key/value head) its number of query heads.
    public func copyPruned(from teacher: Transformer, layers: [Int], ffnChannels: [[Int]]? = nil, queryHeads: [[Int]]? = nil,
                           residualChannels: [Int]? = nil) throws {
        let t = teacher.config, s = config
        func mismatch(_ what: String, _ expected: Any, _ found: Any) -> KDError {
            KDError.invalidInput(what: "student.init from_teacher: model.\(what)", expected: "\(expected) (the teacher's)", found: "\(found)")
        }
        for (name, a, b) in [("kv_heads", t.kvHeads, s.kvHeads), ("vocab_size", t.vocabSize, s.vocabSize)] where a != b {
            throw mismatch(name, a, b)
        }
        if let residualChannels {
            guard residualChannels.count == s.dim, residualChannels.allSatisfy({ (0..<t.dim).contains($0) }),
                  zip(residualChannels, residualChannels.dropFirst()).allSatisfy({ $0 < $1 }) else {
                throw KDError.invalidInput(what: "hidden-dim pruning", expected: "\(s.dim) distinct teacher channels below \(t.dim), ascending",
                                           found: "another selection")
            }
        } else if t.dim != s.dim {
            throw mismatch("dim", t.dim, s.dim)
        }
        if s.headSize != t.headSize { throw mismatch("head_dim", t.headSize, s.headSize) }
        if let queryHeads {
            let perGroup = t.heads / t.kvHeads, keep = s.heads / s.kvHeads
            // student head i reads key/value head i / keep: the teacher heads it takes must belong to that group
            guard queryHeads.count == s.layers, queryHeads.allSatisfy({ hs in
                hs.count == s.heads && hs.enumerated().allSatisfy { i, h in (0..<t.heads).contains(h) && h / perGroup == i / keep }
            }) else {
                throw KDError.invalidInput(what: "head pruning", expected: "\(keep) teacher heads of each key/value group per block", found: "another selection")
            }
        } else if t.heads != s.heads {
            throw mismatch("heads", t.heads, s.heads)
        }
        if let ffnChannels {
            guard ffnChannels.count == s.layers, ffnChannels.allSatisfy({ $0.count == s.ffnDim && $0.allSatisfy { (0..<t.ffnDim).contains($0) } }) else {
                throw KDError.invalidInput(what: "width pruning", expected: "\(s.ffnDim) teacher channels per block", found: "another selection")
            }
        } else if t.ffnDim != s.ffnDim {
            throw mismatch("ffn_dim", t.ffnDim, s.ffnDim)
        }
        guard s.family == t.family else { throw mismatch("family", t.family, s.family) }
        guard s.slidingWindow == t.slidingWindow, s.ropeThetaLocal == t.ropeThetaLocal,
              layers.count != s.layers || (0..<s.layers).allSatisfy({ s.isSliding($0) == t.isSliding(layers[$0]) }) else {
            throw KDError.invalidInput(what: "student attention kinds", expected: "each block sliding or global as teacher block it comes from",
                                       found: "another pattern (window \(s.slidingWindow), global blocks \((0..<s.layers).filter { !s.isSliding($0) }))")
        }
        guard s.ropeStyle == t.ropeStyle else { throw mismatch("rope_style", t.ropeStyle, s.ropeStyle) }
        guard s.ropeTheta == t.ropeTheta else { throw mismatch("rope_theta", t.ropeTheta, s.ropeTheta) }
        guard s.tiedEmbeddings == t.tiedEmbeddings else { throw mismatch("tied_embeddings", t.tiedEmbeddings, s.tiedEmbeddings) }
        guard layers.count == s.layers else {
            throw KDError.invalidInput(what: "student.init from_teacher", expected: "model.layers = \(layers.count) (the blocks kept)", found: "\(s.layers)")
        }
        if let bad = layers.first(where: { $0 >= t.layers }) {
            throw KDError.invalidInput(what: "student.layers", expected: "teacher block indices below \(t.layers)", found: "\(bad)")
        }
        // student tensor name → teacher tensor name: blocks renumbered, the rest by name
        let teacherEntries = Dictionary(uniqueKeysWithValues: teacher.layout.entries.map { ($0.name, $0) })
        let hs = t.headSize
        for e in layout.entries {
            var name = e.name, block: Int?
            if name.hasPrefix("model.layers.") {
                let parts = name.split(separator: ".", maxSplits: 3)
                block = Int(parts[2])!
                name = "model.layers.\(layers[block!]).\(parts[3])"
            }
            guard let te = teacherEntries[name] else {
                throw KDError.invalidInput(what: "teacher tensor \(name)", expected: "shape \(e.shape)", found: "none")
            }
            // the teacher rows and columns the student keeps (nil: all). The residual stream is the rows of the
            // norms and of the projections that write it (o, down), the columns of everything that reads it.
            var rows: [Int]?, cols: [Int]?
            if let residualChannels {
                // 1-D: the norms on the stream ([dim]); biases and q/k head norms do not live on it
                let streamVector = te.shape.count == 1 && name.hasSuffix("layernorm.weight") || name == "model.norm.weight"
                if streamVector || name.hasSuffix("o_proj.weight") || name.hasSuffix("down_proj.weight") {
                    rows = residualChannels
                } else if te.shape.count > 1 {
                    cols = residualChannels
                }
            }
            if let i = block, let queryHeads {
                let channels = queryHeads[i].flatMap { h in h * hs..<(h + 1) * hs }
                if name.hasSuffix("q_proj.weight") || name.hasSuffix("q_proj.bias") { rows = channels } else if name.hasSuffix("o_proj.weight") { cols = channels }
            }
            if let i = block, let ffnChannels {
                if name.hasSuffix("gate_proj.weight") || name.hasSuffix("up_proj.weight") { rows = ffnChannels[i] } else if name.hasSuffix("down_proj.weight") { cols = ffnChannels[i] }
            }
            let tr = te.shape[0], tc = te.shape.count > 1 ? te.shape[1] : 1
            let kept = [rows?.count ?? tr] + (te.shape.count > 1 ? [cols?.count ?? tc] : [])
            guard kept == e.shape else {
                throw KDError.invalidInput(what: "teacher tensor \(name)", expected: "shape \(e.shape)", found: "\(te.shape)")
            }
            let dst = params.base + e.offset
            guard rows != nil || cols != nil else {
                teacher.denseTensor(te, into: dst)
                continue
            }
            let full = Slab(count: te.count)
            teacher.denseTensor(te, into: full.base)
            let rowList = rows ?? Array(0..<tr), colList = cols ?? Array(0..<tc), sc = colList.count
            for (i, r) in rowList.enumerated() {
                let src = full.base + r * tc, out = dst + i * sc
                if cols == nil { out.update(from: src, count: tc) } else { for (j, c) in colList.enumerated() { out[j] = src[c] } }
            }
        }
    }
}

extension StudentInitConfig {
    /// The teacher blocks kept for a teacher of `teacherLayers` blocks.
    public func keptLayers(teacherLayers: Int) -> [Int] {
        layers.isEmpty ? Array(stride(from: 0, to: teacherLayers, by: max(every, 1))) : layers
    }
}
