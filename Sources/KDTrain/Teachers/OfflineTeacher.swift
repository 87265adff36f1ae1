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
        cache.fill(rows!, windows: batch.windows, validationSplit: batch.validation)
        return TeacherOutput(members: [], topK: rows!.rows)
    }

    var bytesPerToken: Int { TopK.bytesPerToken(k: cache.info.k) }
    var summary: String {
        "the offline cache \(cache.dir): top-\(cache.info.k) rows of \(cache.info.teachers.map(\.path).joined(separator: ", ")), no teacher in memory"
    }
}
