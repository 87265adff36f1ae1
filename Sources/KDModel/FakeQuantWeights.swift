// QAT on a model: which tensors are quantized, and writing their fake-quantized values (from full-precision master
// weights) into the model's parameter slab, with the straight-through masks for the gradients.
import KDCore
import KDQuant

extension Transformer {
    /// The tensors a QAT scheme quantizes: every block's linear weights, plus the embedding and the (untied) LM head
    /// when `embeddings`. Norm vectors never.
    public func quantizedEntries(embeddings: Bool) -> [ParameterLayout.Entry] {
        layout.entries.filter { e in
            guard e.isMatrix else { return false }
            let isTable = e.offset == layout.embedding || e.offset == layout.lmHead
            return embeddings || !isTable
        }
    }

    /// params ← fake-quantized `master` on the quantized tensors, `master` elsewhere; `mask` (same layout) receives
    /// the straight-through masks of the quantized tensors and 1 elsewhere. `master` may be `params` itself.
    public func writeFakeQuantized(_ scheme: FakeQuantScheme, embeddings: Bool, master: UnsafePointer<Float>,
                                   mask: UnsafeMutablePointer<Float>?) {
        if master != UnsafePointer(params.base) { params.base.update(from: master, count: layout.count) }
        mask?.update(repeating: 1, count: layout.count)
        let entries = quantizedEntries(embeddings: embeddings)
        Parallel.forRanges(entries.count) { lo, hi in
            for e in entries[lo..<hi] {
                fakeQuantize(scheme, src: master + e.offset, rows: e.shape[0], c: e.shape[1], out: self.params.base + e.offset,
                             mask: mask.map { $0 + e.offset })
            }
        }
    }
}
