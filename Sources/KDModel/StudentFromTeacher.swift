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

    /// Copies the embedding, final norm, head and blocks `layers[i]` → student block i from `teacher`. The student must
    /// have the teacher's width, vocabulary and head layout and `layers.count` blocks.
    public func copyPruned(from teacher: Transformer, layers: [Int]) throws {
        let t = teacher.config, s = config
        func mismatch(_ what: String, _ expected: Any, _ found: Any) -> KDError {
            KDError.invalidInput(what: "student.init from_teacher: model.\(what)", expected: "\(expected) (the teacher's)", found: "\(found)")
        }
        for (name, a, b) in [("dim", t.dim, s.dim), ("heads", t.heads, s.heads), ("kv_heads", t.kvHeads, s.kvHeads),
                             ("ffn_dim", t.ffnDim, s.ffnDim), ("vocab_size", t.vocabSize, s.vocabSize)] where a != b {
            throw mismatch(name, a, b)
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
            guard let te = teacherEntries[name], te.shape == e.shape else {
                throw KDError.invalidInput(what: "teacher tensor \(name)", expected: "shape \(e.shape)", found: teacherEntries[name].map { "\($0.shape)" } ?? "none")
            }
            teacher.denseTensor(te, into: params.base + e.offset)
        }
    }
}

extension StudentInitConfig {
    /// The teacher blocks kept for a teacher of `teacherLayers` blocks.
    public func keptLayers(teacherLayers: Int) -> [Int] {
        layers.isEmpty ? Array(stride(from: 0, to: teacherLayers, by: max(every, 1))) : layers
    }
}
