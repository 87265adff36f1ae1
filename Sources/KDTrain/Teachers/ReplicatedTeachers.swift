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
        for (teacher, w) in zip(teachers, weights) {
            teacher.forward(tokens: batch.tokens, b: batch.b, t: batch.t)
            members.append(TeacherSource(head: teacher.lmHeadWeight, hidden: teacher.finalHidden, weight: w))
        }
        guard let (k, T) = topK else { return TeacherOutput(members: members, topK: nil) }
        let n = batch.b * batch.t
        if rows?.n != n { rows = TopKBuffer(n: n, k: k) }
        rows!.fill(ensemble: TeacherEnsemble(members: members, combine: combine, route: batch.route), temperature: T, chunk: 256)
        return TeacherOutput(members: members, topK: rows!.rows)
    }

    var bytesPerToken: Int { topK.map { TopK.bytesPerToken(k: $0.k) } ?? vocabSize * 4 }
    var localTeachers: [(model: Transformer, weight: Float)] { Array(zip(teachers, weights)) }
    var summary: String { "replicated: every rank runs \(teachers.count == 1 ? "the teacher" : "all \(teachers.count) teachers") on its own micro-batches" }
}
