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

    init(teachers: [Transformer], weights: [Float], combine: TeacherCombine, topK: (k: Int, temperature: Float)?, vocabSize: Int) {
        precondition(teachers.count == weights.count, "\(teachers.count) teachers, \(weights.count) weights")
        self.teachers = teachers
        self.weights = weights
        self.combine = combine
        self.topK = topK
        self.vocabSize = vocabSize
    }

    func output(for batch: TeacherBatch) throws -> TeacherOutput {
        var members: [TeacherSource] = []
        var blockOutputs: [UnsafePointer<Float>] = []
        for (i, (teacher, w)) in zip(teachers, weights).enumerated() {
            if i == 0, !hiddenBlocks.isEmpty {
                blockOutputs = forwardCapturing(teacher, batch)
            } else {
                teacher.forward(tokens: batch.tokens, b: batch.b, t: batch.t)
            }
            members.append(TeacherSource(head: teacher.lmHeadWeight, hidden: teacher.finalHidden, weight: w))
        }
        guard let (k, T) = topK else { return TeacherOutput(members: members, topK: nil, blockOutputs: blockOutputs) }
        let n = batch.b * batch.t
        if rows?.n != n { rows = TopKBuffer(n: n, k: k) }
        rows!.fill(ensemble: TeacherEnsemble(members: members, combine: combine, route: batch.route), temperature: T, chunk: 256)
        return TeacherOutput(members: members, topK: rows!.rows, blockOutputs: blockOutputs)
    }

    /// The teacher's forward in stages that end at the hidden-state blocks, each stage's output copied on the way
    /// (the same blocks in the same order as one forward: the final hidden states are bitwise the same).
    func forwardCapturing(_ teacher: Transformer, _ batch: TeacherBatch) -> [UnsafePointer<Float>] {
        let n = batch.b * batch.t, c = teacher.config.dim, stops = Array(Set(hiddenBlocks)).sorted()
        if captured.count != stops.count || captured.first?.count != n * c { captured = stops.map { _ in Slab(count: n * c) } }
        var next = 0, stream: UnsafePointer<Float>? = nil
        for (i, l) in stops.enumerated() {
            stream = teacher.forwardStage(next..<(l + 1), tokens: next == 0 ? batch.tokens : nil, hidden: next == 0 ? nil : stream,
                                          b: batch.b, t: batch.t, finalNorm: false)
            captured[i].base.update(from: stream!, count: n * c)
            stream = UnsafePointer(captured[i].base)
            next = l + 1
        }
        _ = teacher.forwardStage(next..<teacher.config.layers, tokens: next == 0 ? batch.tokens : nil, hidden: next == 0 ? nil : stream,
                                 b: batch.b, t: batch.t, finalNorm: true)
        return hiddenBlocks.map { l in UnsafePointer(captured[stops.firstIndex(of: l)!].base) }
    }

    /// Nothing crosses ranks here; what the student's head reads per token, plus the block outputs it compares.
    var bytesPerToken: Int { (topK.map { TopK.bytesPerToken(k: $0.k) } ?? vocabSize * 4) + hiddenBlocks.count * (teachers.first?.config.dim ?? 0) * 4 }
    var localTeachers: [(model: Transformer, weight: Float)] { Array(zip(teachers, weights)) }
    var summary: String { "replicated: every rank runs \(teachers.count == 1 ? "the teacher" : "all \(teachers.count) teachers") on its own micro-batches" }
}
