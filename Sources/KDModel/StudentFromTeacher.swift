// Students cut from their teacher (DistilBERT, Minitron): the teacher's embedding, final norm and LM head, and a
// selection of its blocks in order (depth pruning), dequantized into a trainable full-precision student.
import KDConfig
import KDCore
import KDQuant

extension Transformer {
    /// Every element of the tensor at `entry` as floats (packed weights dequantized). - Shapes: out [entry.count]
    public func denseTensor(_ entry: ParameterLayout.Entry, into out: UnsafeMutablePointer<Float>) {
        if let q = packed[entry.offset] as? QuantizedMatrix {
            dequantize(q.type, src: q.data, out: out, count: entry.count)
        } else {
            out.update(from: params.base + entry.offset, count: entry.count)
        }
    }

    /// The student shape that keeps `layers` of this model's blocks (everything else as the teacher).
    public func prunedConfig(keeping layers: [Int]) -> ModelConfig {
        var m = config
        m.layers = layers.count
        return m
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

    /// Per block, the mean |value| of every column of the [b·t, width] buffer `buffer` picks from its activations.
    func meanAbsoluteColumns(tokens: UnsafePointer<Int32>, b: Int, t: Int, width: Int, _ buffer: (BlockActivations) -> Slab) -> [[Double]] {
        let n = b * t
        var out: [[Double]] = []
        for l in 0..<config.layers {
            _ = forwardStage(l..<(l + 1), tokens: l == 0 ? tokens : nil, hidden: nil, b: b, t: t, finalNorm: false)
            let x = buffer(activations(b: b, t: t).blocks[l]).base
            var acc = [Double](repeating: 0, count: width)
            for r in 0..<n { for j in 0..<width { acc[j] += Double(abs(x[r * width + j])) } }
            out.append(acc.map { $0 / Double(n) })
        }
        return out
    }

    /// Copies the embedding, final norm, head and blocks `layers[i]` → student block i from `teacher`. The student must
    /// have the teacher's width, vocabulary and key/value heads and `layers.count` blocks; with `ffnChannels` (per
    /// student block, the teacher FFN channels kept, ascending) its ffn_dim may be narrower, and with `queryHeads` (per
    /// student block, the teacher query heads kept, grouped by key/value head) it may have fewer query heads of the
    /// teacher's size (width pruning).
    public func copyPruned(from teacher: Transformer, layers: [Int], ffnChannels: [[Int]]? = nil, queryHeads: [[Int]]? = nil) throws {
        let t = teacher.config, s = config
        func mismatch(_ what: String, _ expected: Any, _ found: Any) -> KDError {
            KDError.invalidInput(what: "student.init from_teacher: model.\(what)", expected: "\(expected) (the teacher's)", found: "\(found)")
        }
        for (name, a, b) in [("dim", t.dim, s.dim), ("kv_heads", t.kvHeads, s.kvHeads), ("vocab_size", t.vocabSize, s.vocabSize)] where a != b {
            throw mismatch(name, a, b)
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
        for e in layout.entries {
            var name = e.name
            if name.hasPrefix("model.layers.") {
                let parts = name.split(separator: ".", maxSplits: 3)
                name = "model.layers.\(layers[Int(parts[2])!]).\(parts[3])"
            }
            guard let te = teacherEntries[name] else {
                throw KDError.invalidInput(what: "teacher tensor \(name)", expected: "shape \(e.shape)", found: "none")
            }
            if te.shape == e.shape {
                teacher.denseTensor(te, into: params.base + e.offset)
                continue
            }
            let i = Int(e.name.split(separator: ".")[2]) ?? 0
            if let queryHeads, name.hasSuffix("q_proj.weight") || name.hasSuffix("o_proj.weight") {
                // head pruning: q keeps the kept heads' rows, o their columns (hs each)
                let full = Slab(count: te.count), dst = params.base + e.offset, hs = t.headSize
                teacher.denseTensor(te, into: full.base)
                if name.hasSuffix("q_proj.weight") {
                    for (j, h) in queryHeads[i].enumerated() { (dst + j * hs * t.dim).update(from: full.base + h * hs * t.dim, count: hs * t.dim) }
                } else {
                    let (rows, tc, sc) = (te.shape[0], te.shape[1], e.shape[1])
                    for r in 0..<rows { for (j, h) in queryHeads[i].enumerated() { (dst + r * sc + j * hs).update(from: full.base + r * tc + h * hs, count: hs) } }
                }
                continue
            }
            // width pruning: gate/up keep the selected rows, down the selected columns
            guard let ffnChannels, name.contains(".mlp.") else {
                throw KDError.invalidInput(what: "teacher tensor \(name)", expected: "shape \(e.shape)", found: "\(te.shape)")
            }
            let full = Slab(count: te.count), keep = ffnChannels[i], dst = params.base + e.offset
            teacher.denseTensor(te, into: full.base)
            if name.hasSuffix("down_proj.weight") {
                let (rows, tc) = (te.shape[0], te.shape[1])
                for r in 0..<rows { for (j, ch) in keep.enumerated() { dst[r * keep.count + j] = full.base[r * tc + ch] } }
            } else {
                let c = te.shape[1]
                for (j, ch) in keep.enumerated() { (dst + j * c).update(from: full.base + ch * c, count: c) }
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
