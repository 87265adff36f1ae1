// The offline teacher (`teacher.cache`): no teacher in memory; each micro-batch's top-k rows are read from the cache
// `distill teacher-cache` wrote, by corpus window.
import KDLoss

final class OfflineTeacher: TeacherPlacement {
    let cache: TeacherCache
    var rows: TopKBuffer?

    init(cache: TeacherCache) { self.cache = cache }

    func output(for batch: TeacherBatch) throws -> TeacherOutput {
        let n = batch.b * batch.t
        if rows?.n != n { rows = TopKBuffer(n: n, k: cache.info.k) }
        try cache.fill(rows!, windows: batch.windows, validationSplit: batch.validation)
        if let map = cache.vocabMap {
            // a teacher with another tokenizer: its aligned rows, mapped at the student's head
            return TeacherOutput(members: [], topK: nil, cross: [CrossTeacherRows(rows: rows!.rows, teacherToStudent: map, weight: 1)], sameWeight: 0)
        }
        return TeacherOutput(members: [], topK: rows!.rows)
    }

    var bytesPerToken: Int { TopK.bytesPerToken(k: cache.info.k) }
    var summary: String {
        "the offline cache \(cache.dir): top-\(cache.info.k) rows of \(cache.info.teachers.map(\.path).joined(separator: ", ")), no teacher in memory"
            + (cache.isCrossTokenizer ? String(format: " (another tokenizer: rows aligned to the student's positions, %.1f%% aligned, %.1f%% matched)",
                                                100 * (cache.info.alignedShare ?? 0), 100 * (cache.info.matchedShare ?? 0)) : "")
    }
}
