// QAT on a model: which tensors are quantized, and writing their fake-quantized values (from full-precision master
// weights) into the model's parameter slab, with the straight-through masks for the gradients.
import KDConfig
import KDCore
import KDQuant

extension Transformer {
    /// The tensors a QAT scheme quantizes: every block's linear weights, plus the embedding and the (untied) LM head
    /// when `embeddings`. Norm vectors never.
    public func quantizedEntries(embeddings: Bool) -> [ParameterLayout.Entry] {
        layout.entries.filter { e in e.isMatrix && (embeddings || !isTable(e)) }
    }

    /// The token embedding or the (untied) LM head.
    public func isTable(_ e: ParameterLayout.Entry) -> Bool { e.offset == layout.embedding || e.offset == layout.lmHead }

    /// params ← fake-quantized `master` on the tensors `plan` quantizes, `master` elsewhere; `mask` (same layout)
    /// receives the straight-through masks of the quantized tensors and 1 elsewhere. `master` may be `params` itself.
    /// `importance` weighs the IQ4_NL, Q4_0 and Q5_0 tensors' scale search (``QATImportance``).
    public func writeFakeQuantized(_ plan: QuantPlan, master: UnsafePointer<Float>, mask: UnsafeMutablePointer<Float>?, importance: QATImportance? = nil) {
        if master != UnsafePointer(params.base) { params.base.update(from: master, count: layout.count) }
        mask?.update(repeating: 1, count: layout.count)
        let entries = layout.entries.filter { plan.scheme(at: $0.offset) != nil }
        Parallel.forRanges(entries.count) { lo, hi in
            for e in entries[lo..<hi] {
                fakeQuantize(plan.scheme(at: e.offset)!, src: master + e.offset, rows: e.shape[0], c: e.shape[1],
                             out: self.params.base + e.offset, mask: mask.map { $0 + e.offset }, importance: importance?.row(forOffset: e.offset))
            }
        }
    }

    /// The plan of `qat` for this model.
    public func quantPlan(_ qat: QATConfig) -> QuantPlan { QuantPlan(qat: qat, config: config, layout: layout) }
}

/// Explicit QAT scales for every quantized tensor (learned LSQ-style, or absmax ranges frozen at a step), one per
/// group of 32 (block schemes) or per row (per-channel schemes), in one slab in layout order.
public final class QATScales {
    public let scheme: FakeQuantScheme
    /// The quantized tensors, and where each one's scales start in `values`.
    public let entries: [ParameterLayout.Entry]
    public let offsets: [Int]
    public let values: Slab

    public init(model: Transformer, scheme: FakeQuantScheme, embeddings: Bool) {
        precondition(scheme.supportsGivenScales, "\(scheme) takes no given scales")
        self.scheme = scheme
        entries = model.quantizedEntries(embeddings: embeddings)
        var offs: [Int] = [], n = 0
        for e in entries {
            offs.append(n)
            n += e.count / scheme.group(c: e.shape[1])
        }
        offsets = offs
        values = Slab(count: max(n, 1))
    }

    /// Shape of tensor i's scales: [rows, groups per row].
    public func shape(_ i: Int) -> [Int] { [entries[i].shape[0], entries[i].shape[1] / scheme.group(c: entries[i].shape[1])] }

    /// The name tensor i's scales are stored under (`qat_scales.safetensors` of a checkpoint).
    public func name(_ i: Int) -> String { entries[i].name + ".scale" }

    /// Scales of the parameter at layout offset `offset`, if it is quantized.
    public func scales(forOffset offset: Int) -> UnsafePointer<Float>? {
        entries.firstIndex { $0.offset == offset }.map { UnsafePointer(values.base + offsets[$0]) }
    }

    /// values ← the absmax scales of `master` (what the absmax path would use now).
    public func capture(master: UnsafePointer<Float>) {
        Parallel.forRanges(entries.count) { lo, hi in
            for i in lo..<hi {
                let e = self.entries[i]
                absmaxScales(self.scheme, src: master + e.offset, rows: e.shape[0], c: e.shape[1], out: self.values.base + self.offsets[i])
            }
        }
    }
}

extension Transformer {
    /// ``writeFakeQuantized(_:master:mask:)`` with explicit scales.
    public func writeFakeQuantized(scales: QATScales, master: UnsafePointer<Float>, mask: UnsafeMutablePointer<Float>?) {
        if master != UnsafePointer(params.base) { params.base.update(from: master, count: layout.count) }
        mask?.update(repeating: 1, count: layout.count)
        Parallel.forRanges(scales.entries.count) { lo, hi in
            for i in lo..<hi {
                let e = scales.entries[i]
                fakeQuantizeScaled(scales.scheme, src: master + e.offset, rows: e.shape[0], c: e.shape[1],
                                   scales: scales.values.base + scales.offsets[i], out: self.params.base + e.offset, mask: mask.map { $0 + e.offset })
            }
        }
    }
}

/// An importance matrix for QAT (`qat.importance`): for every quantized matrix that reads activations, one weight per
/// input column — the mean square of that input channel over calibration tokens, what llama-imatrix collects — which
/// IQ4_NL's, Q4_0's and Q5_0's scale searches weigh as llama-quantize --imatrix does. The embedding of an untied model reads none (a
/// lookup) and has no entry.
public final class QATImportance {
    /// The matrices with an importance, in layout order, and where each one's weights start in `values`.
    public let entries: [ParameterLayout.Entry]
    public let offsets: [Int]
    public let values: Slab
    /// Each matrix's index in `entries`, by layout offset.
    let index: [Int: Int]

    public init(model: Transformer, embeddings: Bool) {
        let layout = model.layout
        entries = model.quantizedEntries(embeddings: embeddings).filter { $0.offset != layout.embedding || layout.embedding == layout.lmHead }
        var offs: [Int] = [], n = 0
        for e in entries {
            offs.append(n)
            n += e.shape[1]
        }
        offsets = offs
        values = Slab(count: max(n, 1))
        index = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.offset, $0) })
    }

    /// The name tensor i's importances are stored under (`qat_importance.safetensors` of a checkpoint).
    public func name(_ i: Int) -> String { entries[i].name + ".importance" }

    /// The importances of the matrix at layout offset `offset` (one per column), if it has them.
    public func weights(forOffset offset: Int) -> UnsafePointer<Float>? {
        index[offset].map { UnsafePointer(values.base + offsets[$0]) }
    }

    /// The matrix at layout offset `offset`'s importances as its quantizer takes them (rows of its width), if it has them.
    public func row(forOffset offset: Int) -> Importance? {
        index[offset].map { Importance(weights: values.base + offsets[$0], perRow: entries[$0].shape[1]) }
    }
}

extension Transformer {
    /// Adds, for each matrix of `importance`, the squares of its inputs in the last ``forward`` summed over the rows
    /// into `sums` (laid out as `importance.values`): the normed input for q, k, v, gate and up, the attention's output
    /// for o, the gated activation for down, the final norm's output for the head. A training model's forward only
    /// (an inference model's blocks share one set of buffers).
    public func accumulateInputSquares(_ importance: QATImportance, into sums: UnsafeMutablePointer<Double>) {
        precondition(grads != nil, "accumulateInputSquares: a training model's forward keeps every block's inputs")
        guard let a = acts else { preconditionFailure("accumulateInputSquares: no forward yet") }
        let n = a.b * a.t, m = config
        var inputs: [Int: (UnsafePointer<Float>, Int)] = [layout.lmHead: (UnsafePointer(a.lnf.base), m.dim)]
        for (l, L) in layout.blocks.enumerated() {
            let A = a.blocks[l]
            for o in [L.wq, L.wk, L.wv] { inputs[o] = (UnsafePointer(A.ln1.base), m.dim) }
            inputs[L.wo] = (UnsafePointer(A.att.base), m.qDim)
            for o in [L.wgate, L.wup] { inputs[o] = (UnsafePointer(A.ln2.base), m.dim) }
            inputs[L.wdown] = (UnsafePointer(A.h.base), m.ffnDim)
        }
        let entries = importance.entries, offsets = importance.offsets
        Parallel.forRanges(entries.count) { lo, hi in
            for i in lo..<hi {
                guard let (x, c) = inputs[entries[i].offset] else { continue }
                precondition(c == entries[i].shape[1], "accumulateInputSquares: \(entries[i].name) reads \(entries[i].shape[1]) columns, its input has \(c)")
                let s = sums + offsets[i]
                for r in 0..<n {
                    let row = x + r * c
                    for j in 0..<c { s[j] += Double(row[j]) * Double(row[j]) }
                }
            }
        }
    }
}
