// A linear bridge over each run of blocks a depth cut drops (`student.bridge: linear`; ReplaceMe, Shopkhoev et al.
// 2025): the run's effect on the stream, approximated by a linear map of the FFN output of the kept block before it and
// merged into that block's down projection, so the cut student starts closer to its teacher with no new parameters.
// Dims: n calibration rows, c dim, f the student's ffn dim.
import KDConfig
import KDCore
import KDModel

/// One dropped run of teacher blocks and the kept block before it.
struct DroppedRun: Equatable {
    /// The teacher block before the run (kept), and the run's first and last teacher blocks.
    let before: Int, first: Int, last: Int
}

enum LinearBridge {
    /// Ridge of the least-squares fit, relative to the mean diagonal of MᵀM: T = (MᵀM + ridge·tr(MᵀM)/c·I)⁻¹ Mᵀ(B − A).
    static let ridge = 1e-3

    /// The runs of teacher blocks missing from `kept` (ascending) that have a kept block before them; a run at the start
    /// (block 0 dropped) has none and is left out.
    static func runs(kept: [Int], teacherLayers: Int) -> [DroppedRun] {
        var out: [DroppedRun] = [], l = 0
        while l < teacherLayers {
            guard !kept.contains(l) else { l += 1; continue }
            var last = l
            while last + 1 < teacherLayers && !kept.contains(last + 1) { last += 1 }
            if l > 0 { out.append(DroppedRun(before: l - 1, first: l, last: last)) }
            l = last + 1
        }
        return out
    }

    /// The fit's sufficient statistics over calibration rows: MᵀM and Mᵀ(B − A) (c × c, row-major, Double), with M the
    /// FFN output of block `before`, A the stream before it is added and B the stream after the run; and the squared
    /// seam error without a bridge, Σ‖A + M − B‖², and ‖B − A‖²'s sum for the solution's error.
    struct Statistics {
        var mm: [Double], mr: [Double], rr = 0.0, rows = 0
        init(c: Int) { mm = [Double](repeating: 0, count: c * c); mr = mm }

        mutating func add(ffnOut m: [Float], beforeFFN a: [Float], after b: [Float], c: Int) {
            let n = m.count / c
            var r = [Double](repeating: 0, count: c), md = [Double](repeating: 0, count: c)
            for row in 0..<n {
                for j in 0..<c {
                    md[j] = Double(m[row * c + j]); r[j] = Double(b[row * c + j]) - Double(a[row * c + j]); rr += r[j] * r[j]
                }
                for i in 0..<c where md[i] != 0 {
                    let mi = md[i], o = i * c
                    for j in 0..<c { mm[o + j] += mi * md[j]; mr[o + j] += mi * r[j] }
                }
            }
            rows += n
        }

        /// Σ‖M·T − R‖² over the rows seen, from the statistics alone (T row-major c × c; T = I is no bridge).
        func error(_ t: [Double], c: Int) -> Double {
            // ‖MT − R‖² = tr(TᵀMᵀMT) − 2 tr(TᵀMᵀR) + ‖R‖²
            var e = rr
            for i in 0..<c {
                for j in 0..<c {
                    var mt = 0.0
                    for k in 0..<c { mt += mm[i * c + k] * t[k * c + j] }
                    e += t[i * c + j] * (mt - 2 * mr[i * c + j])
                }
            }
            return e
        }
    }

    /// T solving (MᵀM + λ·I) T = Mᵀ(B − A) by Cholesky, λ = ridge · mean diagonal of MᵀM. Row-major c × c.
    static func solve(_ s: Statistics, c: Int) throws -> [Double] {
        let lambda = ridge * (0..<c).reduce(0.0) { $0 + s.mm[$1 * c + $1] } / Double(c)
        var l = s.mm
        for i in 0..<c { l[i * c + i] += lambda }
        // in place: the lower triangle becomes L with L·Lᵀ = MᵀM + λI
        for j in 0..<c {
            var d = l[j * c + j]
            for k in 0..<j { d -= l[j * c + k] * l[j * c + k] }
            guard d > 0, d.isFinite else {
                throw KDError.invalidInput(what: "student.bridge: linear", expected: "calibration activations that determine the map (a positive definite MᵀM + λI)",
                                           found: "pivot \(d) at row \(j): an FFN output that is zero or not finite on every calibration token")
            }
            let djj = d.squareRoot()
            l[j * c + j] = djj
            for i in (j + 1)..<c {
                var v = l[i * c + j]
                for k in 0..<j { v -= l[i * c + k] * l[j * c + k] }
                l[i * c + j] = v / djj
            }
        }
        var t = s.mr
        for col in 0..<c {  // L·y = r, then Lᵀ·x = y, one column of T at a time
            for i in 0..<c {
                var v = t[i * c + col]
                for k in 0..<i { v -= l[i * c + k] * t[k * c + col] }
                t[i * c + col] = v / l[i * c + i]
            }
            for i in stride(from: c - 1, through: 0, by: -1) {
                var v = t[i * c + col]
                for k in (i + 1)..<c { v -= l[k * c + i] * t[k * c + col] }
                t[i * c + col] = v / l[i * c + i]
            }
        }
        return t
    }

    /// Fits one map per run of `runs` on the calibration windows (`batches` micro-batches of [b, t] at `tokens`) and
    /// merges each into `student`'s down projection of the student block that is the run's `before`
    /// (`kept` maps student blocks to teacher blocks). Returns, per run, the seam error before and after (Σ‖·‖² per
    /// row) for the log.
    static func apply(to student: Transformer, from teacher: Transformer, kept: [Int], runs: [DroppedRun], tokens: UnsafePointer<Int32>,
                      batches: Int, b: Int, t: Int) throws -> [(run: DroppedRun, before: Double, after: Double, rows: Int)] {
        let c = teacher.config.dim
        var report: [(run: DroppedRun, before: Double, after: Double, rows: Int)] = []
        for run in runs {
            var stats = Statistics(c: c)
            for i in 0..<batches {
                let s = teacher.seamStreams(tokens: tokens + i * b * t, b: b, t: t, before: run.before, last: run.last)
                stats.add(ffnOut: s.ffnOut, beforeFFN: s.beforeFFN, after: s.after, c: c)
            }
            let map = try solve(stats, c: c)
            var identity = [Double](repeating: 0, count: c * c)
            for i in 0..<c { identity[i * c + i] = 1 }
            report.append((run, stats.error(identity, c: c) / Double(stats.rows), stats.error(map, c: c) / Double(stats.rows), stats.rows))
            guard let block = kept.firstIndex(of: run.before) else { continue }
            mergeIntoDown(student, block: block, map: map)
        }
        return report
    }

    /// ffn_down ← Tᵀ · ffn_down for student block `block` (the FFN output y = W·h becomes Tᵀ·y, i.e. yᵀ·T as a row).
    static func mergeIntoDown(_ student: Transformer, block: Int, map t: [Double]) {
        let c = student.config.dim, f = student.config.ffnDim
        let w = student.params.base + student.layout.blocks[block].wdown  // [c, f]
        var col = [Double](repeating: 0, count: c)
        for j in 0..<f {
            for r in 0..<c { col[r] = Double(w[r * f + j]) }
            for r in 0..<c {
                var v = 0.0
                for k in 0..<c { v += t[k * c + r] * col[k] }
                w[r * f + j] = Float(v)
            }
        }
    }
}
