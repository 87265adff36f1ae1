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
    public func writeFakeQuantized(_ plan: QuantPlan, master: UnsafePointer<Float>, mask: UnsafeMutablePointer<Float>?) {
        if master != UnsafePointer(params.base) { params.base.update(from: master, count: layout.count) }
        mask?.update(repeating: 1, count: layout.count)
        let entries = layout.entries.filter { plan.scheme(at: $0.offset) != nil }
        Parallel.forRanges(entries.count) { lo, hi in
            for e in entries[lo..<hi] {
                fakeQuantize(plan.scheme(at: e.offset)!, src: master + e.offset, rows: e.shape[0], c: e.shape[1],
                             out: self.params.base + e.offset, mask: mask.map { $0 + e.offset })
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
