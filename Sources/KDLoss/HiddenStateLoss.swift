// Hidden-state distillation (`distill.hidden_weight`): the student's block outputs (the residual stream after a block)
// pulled toward the teacher's, as a normalized MSE per token, ‖s − t‖² / (‖t‖² + ε).
// Why normalized MSE and not cosine: every block reads the stream through an RMSNorm, so what a later block adds
// weighs against the stream's own size: a student whose stream points the right way at the wrong norm computes
// something else. Cosine cannot see that; a plain MSE can, but is dominated by the deep blocks, whose streams are
// many times larger (the norm grows with depth). Dividing by ‖t‖² matches direction and size with every pair
// weighing alike.
import Foundation

/// Σ over rows with targets[r] ≥ 0 of ‖s_r − t_r‖² / (‖t_r‖² + ε), and (when `grad` is given) scale · its gradient
/// with respect to s added into grad. - Shapes: student, teacher, grad [rows, c] · targets [rows]
public func hiddenStateLoss(student s: UnsafePointer<Float>, teacher t: UnsafePointer<Float>, rows: Int, c: Int,
                            targets: UnsafePointer<Int32>, grad: UnsafeMutablePointer<Float>?, scale: Float) -> Double {
    let eps = 1e-6
    var total = 0.0
    for r in 0..<rows where targets[r] >= 0 {
        let sr = s + r * c, tr = t + r * c
        var d2 = 0.0, t2 = 0.0
        for j in 0..<c {
            let d = Double(sr[j]) - Double(tr[j])
            d2 += d * d
            t2 += Double(tr[j]) * Double(tr[j])
        }
        let inv = 1 / (t2 + eps)
        total += d2 * inv
        if let grad {
            let g = Float(2 * inv) * scale, gr = grad + r * c
            for j in 0..<c { gr[j] += g * (sr[j] - tr[j]) }
        }
    }
    return total
}
