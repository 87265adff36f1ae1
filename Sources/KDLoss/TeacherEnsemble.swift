// One or several teachers seen as one distribution. Each member is an LM head applied to that teacher's final hidden
// states for the same rows; the target at temperature T is
//   mixture: log p = log Σ_i w_i · softmax(z_i / T)     (in log space: logsumexp_i(log w_i + log p_i))
//   logits:  log p = log softmax((Σ_i w_i z_i) / T)
// with the weights normalized to sum 1, or, per row, one member picked by a route (per-example routing).
// Dims: m rows of a chunk, v vocabulary (shared by every member), c_i member i's channels.
import Foundation
import KDConfig
import KDCore
import KDOps

/// One teacher's contribution: its LM head, its final hidden states [n, c] and its weight.
public struct TeacherSource {
    public let head: any LinearWeight
    public let hidden: UnsafePointer<Float>
    public let weight: Float
    public init(head: any LinearWeight, hidden: UnsafePointer<Float>, weight: Float = 1) {
        self.head = head; self.hidden = hidden; self.weight = weight
    }
}

/// Several teachers as one target distribution.
public struct TeacherEnsemble {
    public let members: [TeacherSource]
    public let combine: TeacherCombine
    /// Per row: the index of the one member that is the target, or a negative value for the combination. nil: combine every row.
    public var route: UnsafePointer<Int32>?
    let logWeights: [Float], weights: [Float]

    public init(members: [TeacherSource], combine: TeacherCombine = .mixture, route: UnsafePointer<Int32>? = nil) {
        precondition(!members.isEmpty, "TeacherEnsemble: no members")
        let v = members[0].head.oc
        for m in members { precondition(m.head.oc == v, "TeacherEnsemble: vocabularies \(v) and \(m.head.oc) differ") }
        self.members = members
        self.combine = combine
        self.route = route
        let total = members.reduce(Float(0)) { $0 + $1.weight }
        precondition(total > 0 && members.allSatisfy { $0.weight >= 0 }, "TeacherEnsemble: weights must be >= 0 with a positive sum")
        weights = members.map { $0.weight / total }
        logWeights = weights.map { logf($0) }
    }

    public var vocabSize: Int { members[0].head.oc }

    /// Floats `projectChunk` needs in `buffer`: every member's logits for `rows` rows.
    public func bufferCount(rows: Int) -> Int { members.count * rows * vocabSize }

    /// Every member's raw logits for rows r0..<r0+m; member i lands at buffer + i·m·v.
    public func projectChunk(r0: Int, m: Int, buffer: UnsafeMutablePointer<Float>) {
        let v = vocabSize
        for (i, t) in members.enumerated() {
            t.head.forward(out: buffer + i * m * v, inp: t.hidden + r0 * t.head.c, n: m, accumulate: false)
        }
    }

    /// The target's log-probabilities at T for chunk row i (global row r) after `projectChunk`, written over member 0's
    /// row, which is returned. Members' rows are overwritten. `scratch` holds v floats.
    @discardableResult
    public func rowLogProbs(i: Int, r: Int, m: Int, buffer: UnsafeMutablePointer<Float>, temperature T: Float,
                            scratch: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
        let v = vocabSize, out = buffer + i * v
        func row(_ k: Int) -> UnsafeMutablePointer<Float> { buffer + k * m * v + i * v }
        if members.count == 1 {
            logSoftmaxInPlace(out, v, temperature: T, scratch: scratch)
            return out
        }
        if let route, route[r] >= 0 {
            let k = Int(route[r])
            if k != 0 { out.update(from: row(k), count: v) }
            logSoftmaxInPlace(out, v, temperature: T, scratch: scratch)
            return out
        }
        switch combine {
        case .logits:
            for j in 0..<v { out[j] *= weights[0] }
            for k in 1..<members.count {
                let x = row(k), w = weights[k]
                for j in 0..<v { out[j] += w * x[j] }
            }
            logSoftmaxInPlace(out, v, temperature: T, scratch: scratch)
        case .mixture:
            for k in 0..<members.count { logSoftmaxInPlace(row(k), v, temperature: T, scratch: scratch) }
            for j in 0..<v {
                var mx = -Float.infinity
                for k in 0..<members.count { mx = max(mx, logWeights[k] + row(k)[j]) }
                guard mx > -Float.infinity else { out[j] = -.infinity; continue }
                var s: Float = 0
                for k in 0..<members.count { s += expf(logWeights[k] + row(k)[j] - mx) }
                out[j] = mx + logf(s)
            }
        }
        return out
    }
}
