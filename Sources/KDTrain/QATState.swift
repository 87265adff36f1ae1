// Quantization-aware training state: full-precision master weights (the model's slab holds their fake-quantized
// values), the straight-through masks of the last quantization, and explicit scales (learned LSQ-style, or absmax
// ranges frozen at a step) with the scales' own AdamW. Everything covers this rank's range of the slab
// (`optimizer.sharding`); ranges end on row boundaries, so every quantization group is one rank's.
import Foundation
import KDComm
import KDConfig
import KDData
import KDCore
import KDCheckpoint
import KDFormats
import KDModel
import KDOps
import KDQuant

/// QAT masters, masks and scales of this rank's range.
public final class QATState: TrainerPart {
    public let config: QATConfig
    public let scheme: FakeQuantScheme?
    /// Each quantized tensor's scheme (a preset's per-tensor types, the tables' own scheme, k-quant fallbacks).
    let plan: QuantPlan
    let model: Transformer
    let shard: SlabShard
    let comm: any Communicator
    /// Full-precision weights of this rank's range (index 0 = the range's first Float).
    public let masters: Slab
    /// Straight-through masks of this range (1 where the gradient passes).
    let mask: Slab
    /// The quantized matrices (in layout order), taken once.
    let entries: [ParameterLayout.Entry]
    /// The quantized matrices' rows inside this range.
    let pieces: [(index: Int, rows: Range<Int>)]
    /// Explicit scales of every quantized tensor (slab-wide; this rank computes and updates only its own rows').
    public private(set) var scales: QATScales?
    /// The explicit scales have values (taken from the weights once, or loaded).
    var scalesReady = false
    /// Each rank's range of `scales.values` (its rows' scales), for gathering them.
    let scaleCounts: [Int]
    /// This rank's range of `scales.values`.
    let scaleRange: Range<Int>
    /// Learned scales: the gradient, the AdamW moments and θ = log|s| of this rank's scales.
    let scaleGrad: Slab?, scaleM: Slab?, scaleV: Slab?, scaleTheta: Slab?
    /// `qat.importance`: the importance matrix weighing the IQ4_NL, Q4_0 and Q5_0 tensors' scale search (the same on every rank), and
    /// how many tokens it was measured on.
    public private(set) var importance: QATImportance?
    var importanceTokens = 0

    public init(config: QATConfig, model: Transformer, shard: SlabShard, comm: any Communicator) {
        self.config = config
        self.model = model
        self.shard = shard
        self.comm = comm
        scheme = FakeQuantScheme(config.scheme)
        plan = model.quantPlan(config)
        let r = shard.range
        masters = Slab(count: max(r.count, 1))
        masters.base.update(from: model.params.base + r.lowerBound, count: r.count)
        mask = Slab(count: max(r.count, 1))
        let entries = model.quantizedEntries(embeddings: config.embeddings)
        self.entries = entries
        pieces = scheme == nil ? [] : shard.rows(of: entries)
        if let scheme, config.scales == .learned || config.freezeStep > 0 {
            let qs = QATScales(model: model, scheme: scheme, embeddings: config.embeddings)
            scales = qs
            // rank r's scales: from the first scale of its first row to the end of its last row's
            let ranks = (0..<shard.parts).map { rank -> Range<Int> in
                let rows = SlabShard.rows(of: entries, in: shard.offsets[rank]..<(shard.offsets[rank] + shard.counts[rank]))
                guard let first = rows.first, let last = rows.last else { return 0..<0 }
                func index(_ i: Int, _ row: Int) -> Int { qs.offsets[i] + row * qs.shape(i)[1] }
                return index(first.index, first.rows.lowerBound)..<index(last.index, last.rows.upperBound)
            }
            // ranks without matrices own an empty range where the next rank starts
            var counts: [Int] = [], end = 0
            for (i, rg) in ranks.enumerated() {
                let hi = rg.isEmpty ? end : rg.upperBound
                counts.append(i == ranks.count - 1 ? qs.values.count - end : hi - end)
                end = hi
            }
            scaleCounts = counts
            let lo = counts[..<shard.rank].reduce(0, +)
            scaleRange = lo..<(lo + counts[shard.rank])
        } else {
            scaleCounts = []
            scaleRange = 0..<0
        }
        if config.scales == .learned, scales != nil {
            let n = max(scaleRange.count, 1)
            (scaleGrad, scaleM, scaleV, scaleTheta) = (Slab(count: n), Slab(count: n), Slab(count: n), Slab(count: n))
        } else {
            (scaleGrad, scaleM, scaleV, scaleTheta) = (nil, nil, nil, nil)
        }
    }


    /// `qat.importance: activations`: the mean square of every quantized matrix's input channels on the student as it
    /// starts (its full-precision weights, before any quantization), over the first `importance_windows` training
    /// windows in micro-batches of b × t, the micro-batches dealt round the ranks and the sums all-reduced.
    /// Collective; call before the first ``refresh(step:)``.
    public func measureImportance(sampler: WindowSampler, b: Int, t: Int) throws {
        guard config.importance == .activations else { return }
        let start = monotonicSeconds()
        let imp = QATImportance(model: model, embeddings: config.embeddings)
        var sums = [Double](repeating: 0, count: imp.values.count)
        let batches = (config.measuredWindows + b - 1) / b
        let tokens = UnsafeMutablePointer<Int32>.allocate(capacity: b * t), targets = UnsafeMutablePointer<Int32>.allocate(capacity: b * t)
        defer { tokens.deallocate(); targets.deallocate() }
        for k in stride(from: comm.rank, to: batches, by: comm.worldSize) {
            sampler.fillSequential(inputs: tokens, targets: targets, first: k * b, count: b)
            model.forward(tokens: tokens, b: b, t: t)
            sums.withUnsafeMutableBufferPointer { model.accumulateInputSquares(imp, into: $0.baseAddress!) }
        }
        try comm.allReduceSum(&sums)
        let n = Double(batches * b * t)
        for i in sums.indices { imp.values.base[i] = Float(sums[i] / n) }
        importance = imp
        importanceTokens = batches * b * t
        KDLog.info(String(format: "qat.importance: the input channels of %d matrices measured on %d tokens (%d windows) in %.1f s",
                          imp.entries.count, importanceTokens, batches * b, monotonicSeconds() - start))
    }

    /// Whether `step` trains with quantization (from qat.start_step on).
    public func active(step: Int) -> Bool { config.enabled && step >= config.startStep }

    /// LSQ: `step` trains the scales (learned, in use, and before freeze_step).
    func learningScales(step: Int) -> Bool {
        config.scales == .learned && scalesReady && active(step: step) && (config.freezeStep == 0 || step < config.freezeStep)
    }

    /// Master weights of this rank's range: what the optimizer updates.
    public var weights: UnsafeMutablePointer<Float> { masters.base }

    // MARK: - The step

    /// The model's weights of this range ← fake-quantized masters (the masters themselves before start_step), and
    /// activation fake quantization on or off. The caller all-gathers the weights when the slab is split.
    public func refresh(step: Int) {
        StepProfile.phase(.qat) { quantize(step: step) }
    }

    func quantize(step: Int) {
        let r = shard.range, params = model.params.base + r.lowerBound, m = masters.base
        params.update(from: m, count: r.count)
        if let scheme, active(step: step) {
            mask.base.update(repeating: 1, count: r.count)
            let explicit = scales != nil && config.explicitScales(atStep: step)
            // learned scales start from the absmax ones, frozen ones are the absmax ones of the freeze step
            if explicit, !scalesReady {
                capture()
                scalesReady = true
            }
            let qs = explicit ? scales : nil, pieces = self.pieces
            Parallel.forRanges(pieces.count) { lo, hi in
                for (i, rows) in pieces[lo..<hi] {
                    let e = entries[i], c = e.shape[1], local = e.offset + rows.lowerBound * c - r.lowerBound
                    if let qs {
                        fakeQuantizeScaled(scheme, src: m + local, rows: rows.count, c: c, scales: qs.values.base + qs.offsets[i] + rows.lowerBound * qs.shape(i)[1],
                                           out: params + local, mask: self.mask.base + local)
                    } else {
                        fakeQuantize(self.plan.scheme(at: e.offset) ?? scheme, src: m + local, rows: rows.count, c: c, out: params + local,
                                     mask: self.mask.base + local, importance: self.importance?.row(forOffset: e.offset))
                    }
                }
            }
        }
        model.quantizeActivations = active(step: step) && config.activations == .int8
    }

    /// scales ← the absmax scales of this rank's masters (what the absmax path would use now).
    func capture() {
        guard let qs = scales, let scheme else { return }
        let entries = self.entries, r = shard.range, pieces = self.pieces
        Parallel.forRanges(pieces.count) { lo, hi in
            for (i, rows) in pieces[lo..<hi] {
                let e = entries[i], c = e.shape[1]
                absmaxScales(scheme, src: self.masters.base + e.offset + rows.lowerBound * c - r.lowerBound, rows: rows.count, c: c,
                             out: qs.values.base + qs.offsets[i] + rows.lowerBound * qs.shape(i)[1])
            }
        }
    }

    /// Before clipping: the LSQ gradient of this rank's scales from the summed gradient of its quantized weights
    /// (`grads` is the slab-sized gradient), then the straight-through masks (a clipped weight gets no gradient).
    public func prepareGradient(_ grads: UnsafeMutablePointer<Float>, step: Int) {
        StepProfile.phase(.qat) { maskAndScaleGradient(grads, step: step) }
    }

    func maskAndScaleGradient(_ grads: UnsafeMutablePointer<Float>, step: Int) {
        guard config.enabled else { return }
        let r = shard.range
        if learningScales(step: step), let qs = scales, let sg = scaleGrad, let scheme {
            let entries = self.entries, s0 = scaleRange.lowerBound, pieces = self.pieces
            sg.zero()
            Parallel.forRanges(pieces.count) { lo, hi in
                for (i, rows) in pieces[lo..<hi] {
                    let e = entries[i], c = e.shape[1], first = e.offset + rows.lowerBound * c, si = qs.offsets[i] + rows.lowerBound * qs.shape(i)[1]
                    fakeQuantizeScaleGradient(scheme, src: self.masters.base + first - r.lowerBound, rows: rows.count, c: c, scales: qs.values.base + si,
                                              dOut: grads + first, dScales: sg.base + si - s0)
                }
            }
        }
        if scheme != nil, active(step: step) {
            let g = grads + r.lowerBound, m = mask.base
            Parallel.forRanges(r.count, minPerThread: 1 << 16) { lo, hi in for i in lo..<hi { g[i] *= m[i] } }
        }
    }

    /// After the weights' update: AdamW on θ = log|s| of this rank's learned scales. AdamW moves every parameter by
    /// about lr per step, far more than a scale of 1e-3 can take; on θ steps are relative to the scale
    /// (∂L/∂θ = s·∂L/∂s) and the sign stays (Q4_0's scales start negative where a block's extreme value is positive).
    public func updateScales(lr: Float, optimizer o: OptimizerConfig, step: Int) {
        guard learningScales(step: step), let qs = scales, let sg = scaleGrad, let sm = scaleM, let sv = scaleV, let theta = scaleTheta else { return }
        let sr = scaleRange, sp = qs.values.base + sr.lowerBound, gp = sg.base, n = sr.count
        for i in 0..<n {
            theta.base[i] = Foundation.log(max(abs(sp[i]), 1e-30))
            gp[i] *= sp[i]
        }
        adamWUpdate(param: theta.base, grad: gp, m: sm.base, v: sv.base, count: n,
                    step: AdamWStep(lr: lr * config.scaleLRRatio, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: 0,
                                    t: step + 1 - config.startStep))
        for i in 0..<n { sp[i] = (sp[i] < 0 ? -1 : 1) * Foundation.exp(theta.base[i]) }
    }

    // MARK: - Checkpoint state (TrainerPart)

    /// The checkpoint holds the full-precision weights (QAT quantizes them again from its config when read): every
    /// rank's masters into rank 0's model weights; the scales beside them. Collective.
    public func save(into contents: inout CheckpointContents?) throws {
        let scales = try scalesFile(root: 0)
        if shard.isSplit {
            try comm.gather(masters.base, counts: shard.counts, into: comm.rank == 0 ? model.params.base : nil, root: 0)
        } else if comm.rank == 0 {
            model.params.base.update(from: masters.base, count: model.layout.count)
        }
        if let scales { contents?.files[CheckpointFile.qatScales] = scales }
        if let importance, contents != nil { contents?.files[CheckpointFile.qatImportance] = try qatImportanceFile(importance, tokens: importanceTokens) }
    }

    public func restore(from source: CheckpointSource?) throws { try restore(dir: source?.dir) }

    /// Learned scales take their AdamW step.
    public func afterUpdate(_ u: UpdateContext) throws {
        StepProfile.phase(.qat) { updateScales(lr: u.lr, optimizer: u.optimizer, step: u.t - 1) }
    }

    /// The explicit scales (and learned ones' moments) as a safetensors file, on `root` (nil elsewhere, or without
    /// scales yet). Collective when the slab is split.
    func scalesFile(root: Int = 0) throws -> Data? {
        // scalesReady changes at the same step on every rank
        guard let qs = scales, scalesReady else { return nil }
        // the whole scale vector and moments on root
        let n = qs.values.count, isRoot = comm.rank == root
        let values = isRoot ? Slab(count: n) : nil
        var moments: (m: Slab, v: Slab)?
        if shard.isSplit {
            try comm.gather(qs.values.base + scaleRange.lowerBound, counts: scaleCounts, into: values?.base, root: root)
        } else {
            values?.base.update(from: qs.values.base, count: n)
        }
        if let sm = scaleM, let sv = scaleV {
            let full = isRoot ? (Slab(count: n), Slab(count: n)) : nil
            if shard.isSplit {
                try comm.gather(sm.base, counts: scaleCounts, into: full?.0.base, root: root)
                try comm.gather(sv.base, counts: scaleCounts, into: full?.1.base, root: root)
            } else if let full {
                full.0.base.update(from: sm.base, count: n)
                full.1.base.update(from: sv.base, count: n)
            }
            moments = full
        }
        guard isRoot, let values else { return nil }
        return try qatScalesFile(qs, values: values.base, moments: moments.map { (UnsafePointer($0.m.base), UnsafePointer($0.v.base)) }, source: config.scales)
    }

    /// After the model's weights were restored (full precision, every rank): masters ← this range; scales and their
    /// moments from `dir` on `root` (nil elsewhere) to every rank. Collective.
    func restore(dir: String?, root: Int = 0) throws {
        let r = shard.range
        masters.base.update(from: model.params.base + r.lowerBound, count: r.count)
        // the importance matrix the checkpoint's weights trained with (measured again at start-up, the same windows
        // and weights: the same values; the file decides)
        if let importance {
            var found = [0.0]
            if comm.rank == root, let dir, let loaded = try loadQATImportance(dir: dir, model: model, qat: config) {
                importance.values.base.update(from: loaded.values.base, count: importance.values.count)
                found[0] = 1
            }
            try comm.broadcast(&found, root: root)
            if found[0] > 0 { try broadcastFloats(comm, importance.values.base, count: importance.values.count, root: root) }
        }
        guard let qs = scales else { return }
        var loaded: QATScales?, moments: (m: Slab, v: Slab)?
        if comm.rank == root, let dir {
            let full = scaleM != nil ? (Slab(count: qs.values.count), Slab(count: qs.values.count)) : nil
            loaded = try loadQATScales(dir: dir, model: model, qat: config, moments: full)
            moments = full
        }
        var ready = [loaded != nil ? 1.0 : 0]
        try comm.broadcast(&ready, root: root)
        scalesReady = ready[0] > 0
        guard scalesReady else { return }
        if let loaded { qs.values.base.update(from: loaded.values.base, count: qs.values.count) }
        try broadcastFloats(comm, qs.values.base, count: qs.values.count, root: root)
        if let sm = scaleM, let sv = scaleV {
            if shard.isSplit {
                try comm.scatter(moments?.m.base, counts: scaleCounts, into: sm.base, root: root)
                try comm.scatter(moments?.v.base, counts: scaleCounts, into: sv.base, root: root)
            } else {
                if let moments {
                    sm.base.update(from: moments.m.base, count: qs.values.count)
                    sv.base.update(from: moments.v.base, count: qs.values.count)
                }
                try broadcastFloats(comm, sm.base, count: qs.values.count, root: root)
                try broadcastFloats(comm, sv.base, count: qs.values.count, root: root)
            }
        }
    }
}
