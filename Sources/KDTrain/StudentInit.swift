// A student cut from its teacher (`student.init: from_teacher`): the embedding, final norm, head and the kept blocks
// are copied (depth pruning); a narrower FFN or fewer query heads keep the teacher's channels and heads with the
// largest mean |activation| on calibration batches from the first training windows (width pruning).
import KDConfig
import KDData
import KDModel

/// Copies the parts of `source` that `config.student` keeps into `model` (same width, unless pruned).
func cutStudent(_ model: Transformer, from source: Transformer, config: RunConfig, calibration sampler: WindowSampler) throws {
    let t = config.train
    let kept = config.student.keptLayers(teacherLayers: source.config.layers)
    let cb = max(1, config.student.calibrationBatches), b = t.microBatch, seqLen = t.seqLen
    /// A per-block importance summed over the calibration batches.
    func calibrated(_ measure: (UnsafePointer<Int32>) -> [[Double]]) -> [[Double]] {
        let toks = UnsafeMutablePointer<Int32>.allocate(capacity: cb * b * seqLen), tg = UnsafeMutablePointer<Int32>.allocate(capacity: cb * b * seqLen)
        defer { toks.deallocate(); tg.deallocate() }
        sampler.fillSequential(inputs: toks, targets: tg, first: 0, count: cb * b)
        var sum: [[Double]] = []
        for i in 0..<cb {
            let imp = measure(toks + i * b * seqLen)
            sum = sum.isEmpty ? imp : zip(sum, imp).map { zip($0, $1).map(+) }
        }
        return sum
    }
    var channels: [[Int]]?
    if config.model.ffnDim < source.config.ffnDim {
        let importance = calibrated { source.ffnChannelImportance(tokens: $0, b: b, t: seqLen) }
        channels = kept.map { l in
            importance[l].indices.sorted { importance[l][$0] > importance[l][$1] }.prefix(config.model.ffnDim).sorted()
        }
    }
    var heads: [[Int]]?
    if config.model.heads < source.config.heads {
        // in every key/value group, the query heads with the largest mean |output|
        let importance = calibrated { source.attentionHeadImportance(tokens: $0, b: b, t: seqLen) }
        let perGroup = source.config.heads / source.config.kvHeads, keep = config.model.heads / max(config.model.kvHeads, 1)
        heads = kept.map { l in
            (0..<source.config.kvHeads).flatMap { g in
                Array(g * perGroup..<(g + 1) * perGroup).sorted { importance[l][$0] > importance[l][$1] }.prefix(keep).sorted()
            }
        }
    }
    try model.copyPruned(from: source, layers: kept, ffnChannels: channels, queryHeads: heads)
}
