// The `pipelined` teacher placement: the teacher's blocks are split in contiguous stages, one per rank; every rank's
// micro-batch flows through all stages with point-to-point messages (stage s works on micro-batch m while stage s+1
// works on m − 1, as in GPipe's fill and drain), and the last stage sends each micro-batch's final hidden states
// back to the rank that trains on it, which applies the teacher's LM head itself.
// With the top-k exchange the last stage applies the head and returns top-k rows instead.
// With the hidden-state loss, the stage that holds a paired block copies its output for every micro-batch and sends
// it to the micro-batch's owner after the drain, in increasing owner order (as the groups placement) so blocking
// sends cannot deadlock.
// Bytes moved per token: (stages − 1)·dim·4 forward along the pipeline, plus dim·4 (full) or 8·k + 4 (top-k) back,
// plus dim·4 per hidden-state block.
import KDComm
import KDCore
import KDLoss
import KDModel

final class TeacherPipeline: TeacherPlacement {
    let teacher: Transformer
    let comm: any Communicator
    /// This rank's blocks.
    let layers: Range<Int>
    /// nil: return final hidden states; else (k, temperature) of the top-k rows to return.
    let topK: (k: Int, temperature: Float)?
    var received = Slab(count: 0)
    var rows: TopKBuffer?
    /// Input from the previous stage, and (last stage) every micro-batch's result before it is sent; kept between calls.
    var stageIn = Slab(count: 0)
    var finals = [UInt8]()
    /// The last stage's top-k rows before they are sent (reused across micro-batches).
    var packBuffer: TopKBuffer?
    /// Hidden-state loss: the teacher blocks whose outputs go to each micro-batch's owner; this stage's copies of
    /// its own such blocks, per micro-batch [m][local block]; what this rank received, per distinct block.
    var hiddenBlocks: [Int] = []
    var captures: [[Slab]] = []
    var blockInbox: [Slab] = []

    init(teacher: Transformer, comm: any Communicator, topK: (k: Int, temperature: Float)? = nil) {
        self.teacher = teacher
        self.comm = comm
        self.topK = topK
        let L = teacher.config.layers, S = comm.worldSize, s = comm.rank
        layers = (L * s / S)..<(L * (s + 1) / S)
    }

    func output(for batch: TeacherBatch) throws -> TeacherOutput {
        let hidden = try forward(tokens: batch.tokens, b: batch.b, t: batch.t)
        let blocks = hiddenBlocks.isEmpty ? [] : try exchangeBlockOutputs(n: batch.b * batch.t)
        return TeacherOutput(members: [TeacherSource(head: teacher.lmHeadWeight, hidden: hidden)], topK: topKRows, blockOutputs: blocks)
    }

    func captureBlockOutputs(_ blocks: [Int]) throws { hiddenBlocks = blocks }

    var bytesPerToken: Int { returnBytesPerToken + hiddenBytesPerToken }
    /// Block outputs for the hidden-state loss that reach the owner per token.
    var hiddenBytesPerToken: Int { Set(hiddenBlocks).count * teacher.config.dim * 4 }
    var summary: String {
        "pipelined: blocks \(layers.lowerBound)..<\(layers.upperBound) of \(teacher.config.layers) on this rank, "
            + "\((comm.worldSize - 1) * teacher.config.dim * 4) B/token along the pipeline"
            + (hiddenBlocks.isEmpty ? "" : ", \(hiddenBytesPerToken) B/token of block outputs to the owner")
    }

    /// The stage (rank) that runs teacher block l.
    func stage(of l: Int) -> Int {
        let L = teacher.config.layers, S = comm.worldSize
        return (0..<S).first { (L * $0 / S)..<(L * ($0 + 1) / S) ~= l }!
    }

    /// Collective, after ``forward``: every stage sends the outputs of its hidden-state blocks to each micro-batch's
    /// owner, owners in increasing order (owner m receives only after its sends to owners < m are done); returns this
    /// rank's micro-batch's block outputs in the order of `hiddenBlocks`.
    func exchangeBlockOutputs(n: Int) throws -> [UnsafePointer<Float>] {
        let S = comm.worldSize, s = comm.rank, c = teacher.config.dim, all = Set(hiddenBlocks).sorted()
        let local = all.filter { layers.contains($0) }
        if blockInbox.count != all.count || blockInbox.first?.count != n * c { blockInbox = all.map { _ in Slab(count: n * c) } }
        for m in 0..<S {
            if m != s {
                for (i, l) in local.enumerated() { try comm.send(UnsafeRawPointer(captures[m][i].base), bytes: n * c * 4, to: m, tag: 2 * S + l) }
                continue
            }
            for (j, l) in all.enumerated() {
                let q = stage(of: l)
                if q == s {
                    blockInbox[j].base.update(from: captures[s][local.firstIndex(of: l)!].base, count: n * c)
                } else {
                    try comm.receive(UnsafeMutableRawPointer(blockInbox[j].base), bytes: n * c * 4, from: q, tag: 2 * S + l)
                }
            }
        }
        return hiddenBlocks.map { UnsafePointer(blockInbox[all.firstIndex(of: $0)!].base) }
    }

    /// Bytes returned to the owner per token.
    var returnBytesPerToken: Int { topK.map { TopK.bytesPerToken(k: $0.k) } ?? teacher.config.dim * 4 }

    /// Top-k rows of the last forward (with the top-k exchange).
    var topKRows: TopKRows? { topK == nil ? nil : rows?.rows }

    /// Turns final hidden states into what goes back to the owner: the states themselves, or top-k rows.
    func pack(_ y: UnsafePointer<Float>, n: Int, into out: UnsafeMutableRawPointer) {
        guard let (k, T) = topK else {
            out.copyMemory(from: y, byteCount: n * teacher.config.dim * 4)
            return
        }
        if packBuffer?.n != n { packBuffer = TopKBuffer(n: n, k: k) }
        packBuffer!.fill(head: teacher.lmHeadWeight, hidden: y, temperature: T, chunk: 256)
        out.copyMemory(from: packBuffer!.raw, byteCount: packBuffer!.byteCount)
    }

    /// Collective: every rank calls it with its own micro-batch; returns that micro-batch's final hidden states
    /// (meaningful with the full exchange; with top-k, read ``topKRows(n:)``).
    /// - Shapes: tokens [b, t] · result [b·t, dim]
    func forward(tokens: UnsafePointer<Int32>, b: Int, t: Int) throws -> UnsafePointer<Float> {
        let S = comm.worldSize, s = comm.rank, n = b * t, c = teacher.config.dim
        let last = s == S - 1, bytes = n * returnBytesPerToken
        if received.count != n * c { received = Slab(count: n * c) }
        if let (k, _) = topK, rows?.n != n { rows = TopKBuffer(n: n, k: k) }
        // what the owner receives lands here: hidden states, or the top-k rows
        let inbox: UnsafeMutableRawPointer = rows?.raw ?? UnsafeMutableRawPointer(received.base)
        let allTokens = UnsafeMutablePointer<Int32>.allocate(capacity: S * n)
        defer { allTokens.deallocate() }
        try comm.allGather(UnsafeRawPointer(tokens), bytes: n * 4, into: UnsafeMutableRawPointer(allTokens))
        if s > 0, stageIn.count != n * c { stageIn = Slab(count: n * c) }
        if last, finals.count != S * bytes { finals = [UInt8](repeating: 0, count: S * bytes) }
        let local = Set(hiddenBlocks).sorted().filter { layers.contains($0) }
        if captures.count != S || captures[0].count != local.count || captures[0].first.map({ $0.count != n * c }) == true {
            captures = (0..<S).map { _ in local.map { _ in Slab(count: n * c) } }
        }
        for m in 0..<S {
            if s > 0 { try comm.receive(UnsafeMutableRawPointer(stageIn.base), bytes: n * c * 4, from: s - 1, tag: m) }
            let y = teacher.forwardStage(layers, capturingAfter: local, tokens: s == 0 ? allTokens + m * n : nil,
                                         hidden: s == 0 ? nil : UnsafePointer(stageIn.base), b: b, t: t, finalNorm: last) { l, y in
                captures[m][local.firstIndex(of: l)!].base.update(from: y, count: n * c)
            }
            if last {
                finals.withUnsafeMutableBytes { pack(y, n: n, into: $0.baseAddress! + m * bytes) }
            } else {
                try comm.send(UnsafeRawPointer(y), bytes: n * c * 4, to: s + 1, tag: m)
            }
        }
        // drain: the last stage returns every micro-batch's hidden states to its owner
        if last {
            try finals.withUnsafeBytes { f in
                for m in 0..<(S - 1) { try comm.send(f.baseAddress! + m * bytes, bytes: bytes, to: m, tag: S + m) }
                inbox.copyMemory(from: f.baseAddress! + s * bytes, byteCount: bytes)
            }
        } else {
            try comm.receive(inbox, bytes: bytes, from: S - 1, tag: S + s)
        }
        return UnsafePointer(received.base)
    }
}
