// The `pipelined` teacher placement: the teacher's blocks are split in contiguous stages, one per rank; every rank's
// micro-batch flows through all stages with point-to-point messages (stage s works on micro-batch m while stage s+1
// works on m − 1, as in GPipe's fill and drain), and the last stage sends each micro-batch's final hidden states
// back to the rank that trains on it, which applies the teacher's LM head itself.
// Bytes moved per token: (stages − 1)·dim·4 forward along the pipeline, plus dim·4 back to the owner.
import KDComm
import KDCore
import KDModel

final class TeacherPipeline {
    let teacher: Transformer
    let comm: any Communicator
    /// This rank's blocks.
    let layers: Range<Int>
    var received = Slab(count: 0)

    init(teacher: Transformer, comm: any Communicator) {
        self.teacher = teacher
        self.comm = comm
        let L = teacher.config.layers, S = comm.worldSize, s = comm.rank
        layers = (L * s / S)..<(L * (s + 1) / S)
    }

    /// Collective: every rank calls it with its own micro-batch; returns that micro-batch's final hidden states.
    /// - Shapes: tokens [b, t] · result [b·t, dim]
    func forward(tokens: UnsafePointer<Int32>, b: Int, t: Int) throws -> UnsafePointer<Float> {
        let S = comm.worldSize, s = comm.rank, n = b * t, c = teacher.config.dim
        let last = s == S - 1
        if received.count != n * c { received = Slab(count: n * c) }
        let allTokens = UnsafeMutablePointer<Int32>.allocate(capacity: S * n)
        defer { allTokens.deallocate() }
        try comm.allGather(UnsafeRawPointer(tokens), bytes: n * 4, into: UnsafeMutableRawPointer(allTokens))
        let inbox = Slab(count: s > 0 ? n * c : 0)
        let finals = Slab(count: last ? S * n * c : 0)
        for m in 0..<S {
            if s > 0 { try comm.receive(UnsafeMutableRawPointer(inbox.base), bytes: n * c * 4, from: s - 1, tag: m) }
            let y = teacher.forwardStage(layers, tokens: s == 0 ? allTokens + m * n : nil, hidden: s == 0 ? nil : UnsafePointer(inbox.base),
                                         b: b, t: t, finalNorm: last)
            if last {
                (finals.base + m * n * c).update(from: y, count: n * c)
            } else {
                try comm.send(UnsafeRawPointer(y), bytes: n * c * 4, to: s + 1, tag: m)
            }
        }
        // drain: the last stage returns every micro-batch's hidden states to its owner
        if last {
            for m in 0..<(S - 1) { try comm.send(UnsafeRawPointer(finals.base + m * n * c), bytes: n * c * 4, to: m, tag: S + m) }
            received.base.update(from: finals.base + s * n * c, count: n * c)
        } else {
            try comm.receive(UnsafeMutableRawPointer(received.base), bytes: n * c * 4, from: S - 1, tag: S + s)
        }
        return UnsafePointer(received.base)
    }
}
