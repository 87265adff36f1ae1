// The `replicated` teacher placement: every rank holds every teacher and runs it on its own micro-batches. With the
// full exchange the student's head projects the teachers' final hidden states itself (nothing crosses ranks); with
// the top-k exchange the top-k rows of the combined teachers are computed here.
import KDConfig
import KDCore
import KDLoss
import KDModel

final class ReplicatedTeachers: TeacherPlacement {
    let teachers: [Transformer]
    let weights: [Float]
    let combine: TeacherCombine
    let topK: (k: Int, temperature: Float)?
    let vocabSize: Int
    /// The top-k rows of the last micro-batch, kept between calls.
    var rows: TopKBuffer?
    /// Blocks of the first teacher whose outputs the hidden-state loss reads, and their copies for the last micro-batch.
    var hiddenBlocks: [Int] = []
    var captured: [Slab] = []

    /// Teachers with another tokenizer (`distill.cross_tokenizer`), by index, and the weights of the two parts.
    let cross: [Int: CrossTokenizerTeacher]
    let sameWeight: Float

    init(teachers: [Transformer], weights: [Float], combine: TeacherCombine, topK: (k: Int, temperature: Float)?, vocabSize: Int,
         cross: [Int: CrossTokenizerTeacherSpec] = [:]) {
        precondition(teachers.count == weights.count, "\(teachers.count) teachers, \(weights.count) weights")
        self.teachers = teachers
        self.weights = weights
        self.cross = Dictionary(uniqueKeysWithValues: cross.map { ($0.key, CrossTokenizerTeacher(model: teachers[$0.key], spec: $0.value)) })
        let total = weights.reduce(0, +)
        sameWeight = cross.isEmpty ? 1 : weights.indices.filter { cross[$0] == nil }.reduce(Float(0)) { $0 + weights[$1] } / total
        self.combine = combine
        self.topK = topK
        self.vocabSize = vocabSize
    }

    func output(for batch: TeacherBatch) throws -> TeacherOutput {
        var members: [TeacherSource] = []
        var blockOutputs: [UnsafePointer<Float>] = []
        var crossRows: [CrossTeacherRows] = [], alignment = AlignmentStats()
        let total = weights.reduce(0, +)
        for (i, (teacher, w)) in zip(teachers, weights).enumerated() {
            if let c = cross[i] {
                let rows = c.output(tokens: batch.tokens, targets: batch.targets, b: batch.b, t: batch.t)
                crossRows.append(CrossTeacherRows(rows: rows.rows, teacherToStudent: c.map, weight: w / total))
                alignment = alignment + c.last
                continue
            }
            if i == 0, !hiddenBlocks.isEmpty {
                blockOutputs = forwardCapturing(teacher, batch)
            } else {
                teacher.forward(tokens: batch.tokens, b: batch.b, t: batch.t)
            }
            members.append(TeacherSource(head: teacher.lmHeadWeight, hidden: teacher.finalHidden, weight: w))
        }
        var out = TeacherOutput(members: members, topK: nil, blockOutputs: blockOutputs, cross: crossRows, sameWeight: sameWeight, alignment: alignment)
        guard let (k, T) = topK, !members.isEmpty else { return out }
        let n = batch.b * batch.t
        if rows?.n != n { rows = TopKBuffer(n: n, k: k) }
        rows!.fill(ensemble: TeacherEnsemble(members: members, combine: combine, route: batch.route), temperature: T, chunk: 256)
        out.topK = rows!.rows
        return out
    }

    /// The teacher's forward with the hidden-state blocks' outputs copied on the way (the final hidden states are
    /// bitwise those of one forward).
    func forwardCapturing(_ teacher: Transformer, _ batch: TeacherBatch) -> [UnsafePointer<Float>] {
        let n = batch.b * batch.t, c = teacher.config.dim, stops = Set(hiddenBlocks).sorted()
        if captured.count != stops.count || captured.first?.count != n * c { captured = stops.map { _ in Slab(count: n * c) } }
        _ = teacher.forwardStage(0..<teacher.config.layers, capturingAfter: stops, tokens: batch.tokens, hidden: nil, b: batch.b, t: batch.t,
                                 finalNorm: true) { l, y in captured[stops.firstIndex(of: l)!].base.update(from: y, count: n * c) }
        return hiddenBlocks.map { l in UnsafePointer(captured[stops.firstIndex(of: l)!].base) }
    }

    func captureBlockOutputs(_ blocks: [Int]) throws { hiddenBlocks = blocks }

    /// Nothing crosses ranks here; what the student's head reads per token, plus the block outputs it compares.
    var bytesPerToken: Int {
        (cross.count == teachers.count ? 0 : topK.map { TopK.bytesPerToken(k: $0.k) } ?? vocabSize * 4)
            + cross.values.reduce(0) { $0 + TopK.bytesPerToken(k: $1.k) } + hiddenBlocks.count * (teachers.first?.config.dim ?? 0) * 4
    }
    var localTeachers: [(model: Transformer, weight: Float)] { teachers.indices.filter { cross[$0] == nil }.map { (teachers[$0], weights[$0]) } }
    var summary: String {
        "replicated: every rank runs \(teachers.count == 1 ? "the teacher" : "all \(teachers.count) teachers") on its own micro-batches"
            + (cross.isEmpty ? "" : "; \(cross.count == 1 ? "one teacher has" : "\(cross.count) teachers have") another tokenizer: windows "
               + "re-tokenized, aligned by bytes, top-\(cross.values.first!.k) rows in its vocabulary")
    }
}
