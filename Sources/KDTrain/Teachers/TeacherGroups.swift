// The `groups` teacher placement: with G teachers on N ranks (N a multiple of G), teacher g lives on ranks
// g·S ..< (g+1)·S, S = N/G. Every group scores the whole global batch: the rank with in-group index j runs its
// teacher on the micro-batches of every rank m with m mod S = j and sends each result to m, so every rank ends up
// with all G teachers' outputs for its own micro-batch while holding (and running) one teacher.
// Full exchange: the final hidden states (dim_g·4 bytes per token per teacher); the owner applies each teacher's LM head.
// Top-k exchange: each teacher's top-k rows (8k + 4 bytes per token per teacher), merged into their weighted mixture.
// Hidden-state loss: the first teacher's message also carries its paired blocks' outputs (dim·4 bytes per token each).
// Messages go in increasing owner order (owner m receives only after finishing its sends for owners < m), which
// keeps blocking point-to-point exchange deadlock free.
import KDComm
import KDCore
import KDLoss
import KDModel

final class TeacherGroups: TeacherPlacement {
    let teachers: [Transformer]
    let weights: [Float]
    let comm: any Communicator
    let topK: (k: Int, temperature: Float)?
    /// This rank's teacher and its index within its group.
    let group: Int, groupSize: Int
    /// What arrives from each teacher for this rank's micro-batch (hidden states or top-k rows).
    var inbox: [[UInt8]] = []
    var received: [Slab] = []
    var merged: TopKBuffer?
    var pack: TopKBuffer?
    var outbox = [UInt8]()
    /// Hidden-state loss: the first teacher's blocks whose outputs travel with its message, and this rank's copies.
    var hiddenBlocks: [Int] = []
    var blockInbox: [Slab] = []
    var blockOutputs: [UnsafePointer<Float>] = []

    /// Groups whose teacher has another tokenizer (`distill.cross_tokenizer`): their top-k rows are aligned to the
    /// owner's rows where the teacher runs and reach the owner as they are, outside the same-vocabulary merge.
    let crossK: [Int: Int]
    /// This rank's teacher, when it has another tokenizer; the received rows of every such group.
    let crossTeacher: CrossTokenizerTeacher?
    var crossRows: [Int: TopKBuffer] = [:]
    let crossMaps: [Int: UnsafeMutablePointer<Int32>]
    /// What this rank aligned in the last call (for every owner it scored).
    var alignment = AlignmentStats()

    init(teachers: [Transformer], weights: [Float], comm: any Communicator, topK: (k: Int, temperature: Float)?,
         cross: [Int: CrossTokenizerTeacherSpec] = [:]) {
        self.teachers = teachers
        self.weights = weights
        self.comm = comm
        self.topK = topK
        let groupSize = comm.worldSize / teachers.count, group = comm.rank / groupSize
        self.groupSize = groupSize
        self.group = group
        // every rank knows each such group's k (the size of its messages): what that group's CrossTokenizerTeacher uses
        crossK = Dictionary(uniqueKeysWithValues: cross.map { ($0.key, min($0.value.k, teachers[$0.key].config.vocabSize)) })
        crossTeacher = cross[group].map { CrossTokenizerTeacher(model: teachers[group], spec: $0) }
        crossMaps = cross.mapValues { spec in
            let m = UnsafeMutablePointer<Int32>.allocate(capacity: spec.pair.map.teacherToStudent.count)
            m.initialize(from: spec.pair.map.teacherToStudent, count: spec.pair.map.teacherToStudent.count)
            return m
        }
    }
    deinit { for m in crossMaps.values { m.deallocate() } }

    /// The groups whose teacher shares the student's tokenizer.
    var sameGroups: [Int] { teachers.indices.filter { crossK[$0] == nil } }

    /// Bytes per token of teacher g's message: its output (hidden states or top-k rows), and for the first teacher the
    /// hidden-state blocks' outputs after it.
    func bytesPerToken(_ g: Int) -> Int { outputBytesPerToken(g) + (g == 0 ? Set(hiddenBlocks).count * teachers[0].config.dim * 4 : 0) }
    func outputBytesPerToken(_ g: Int) -> Int {
        if let k = crossK[g] { return TopK.bytesPerToken(k: k) }
        return topK.map { TopK.bytesPerToken(k: $0.k) } ?? teachers[g].config.dim * 4
    }
    /// Bytes of teacher output this rank receives per token of its micro-batch, all teachers together.
    var receivedBytesPerToken: Int { teachers.indices.reduce(0) { $0 + bytesPerToken($1) } }

    var topKRows: TopKRows? { topK == nil ? nil : merged?.rows }

    func output(for batch: TeacherBatch) throws -> TeacherOutput {
        let members = try forward(tokens: batch.tokens, b: batch.b, t: batch.t, route: batch.route, targets: batch.targets)
        guard !crossK.isEmpty else { return TeacherOutput(members: members, topK: topKRows, blockOutputs: blockOutputs) }
        let total = weights.reduce(0, +), same = sameGroups
        let cross = crossK.keys.sorted().map { g in
            CrossTeacherRows(rows: crossRows[g]!.rows, teacherToStudent: crossMaps[g]!, weight: weights[g] / total)
        }
        return TeacherOutput(members: same.isEmpty ? [] : members, topK: same.isEmpty ? nil : topKRows, blockOutputs: blockOutputs, cross: cross,
                             sameWeight: same.reduce(Float(0)) { $0 + weights[$1] } / total, alignment: alignment)
    }

    func captureBlockOutputs(_ blocks: [Int]) throws { hiddenBlocks = blocks }

    var bytesPerToken: Int { receivedBytesPerToken }
    var summary: String {
        "groups: \(teachers.count) groups of \(groupSize) rank\(groupSize == 1 ? "" : "s"), this rank runs teacher \(group + 1)"
            + (crossK.isEmpty ? "" : "; teacher\(crossK.count == 1 ? "" : "s") \(crossK.keys.sorted().map { String($0 + 1) }.joined(separator: ", ")) "
               + "with another tokenizer send top-k rows aligned to the owner's positions")
    }

    /// Collective: every rank calls it with its own micro-batch; returns one source per teacher for that micro-batch
    /// (with the top-k exchange their merged mixture is in ``topKRows``).
    func forward(tokens: UnsafePointer<Int32>, b: Int, t: Int, route: UnsafePointer<Int32>? = nil,
                 targets: UnsafePointer<Int32>? = nil) throws -> [TeacherSource] {
        let N = comm.worldSize, S = groupSize, me = comm.rank, n = b * t, G = teachers.count
        let mine = teachers[group]
        let allTokens = UnsafeMutablePointer<Int32>.allocate(capacity: N * n)
        defer { allTokens.deallocate() }
        try comm.allGather(UnsafeRawPointer(tokens), bytes: n * 4, into: UnsafeMutableRawPointer(allTokens))
        // a teacher with another tokenizer also reads each owner's next tokens (the window's last target)
        let allTargets = UnsafeMutablePointer<Int32>.allocate(capacity: crossK.isEmpty ? 1 : N * n)
        defer { allTargets.deallocate() }
        if !crossK.isEmpty {
            let mineTargets = [Int32](unsafeUninitializedCapacity: n) { buf, c in
                for i in 0..<n { buf[i] = targets?[i] ?? -1 }
                c = n
            }
            try mineTargets.withUnsafeBytes { try comm.allGather($0.baseAddress!, bytes: n * 4, into: UnsafeMutableRawPointer(allTargets)) }
        }
        alignment = AlignmentStats()
        if inbox.count != G { inbox = (0..<G).map { [UInt8](repeating: 0, count: n * bytesPerToken($0)) } }
        let myBytes = n * bytesPerToken(group), outputBytes = n * outputBytesPerToken(group), c = mine.config.dim
        let stops = group == 0 ? Set(hiddenBlocks).sorted() : []
        if outbox.count != myBytes { outbox = [UInt8](repeating: 0, count: myBytes) }
        for m in 0..<N {
            if m % S == me % S {
                // this rank scores owner m's micro-batch with its teacher (the hidden-state blocks' outputs copied
                // behind the output on the way)
                if let ct = crossTeacher {
                    let rows = ct.output(tokens: allTokens + m * n, targets: allTargets + m * n, b: b, t: t)
                    alignment = alignment + ct.last
                    outbox.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: rows.raw, byteCount: outputBytes) }
                } else if stops.isEmpty {
                    mine.forward(tokens: allTokens + m * n, b: b, t: t)
                } else {
                    outbox.withUnsafeMutableBytes { out in
                        _ = mine.forwardStage(0..<mine.config.layers, capturingAfter: stops, tokens: allTokens + m * n, hidden: nil, b: b, t: t,
                                              finalNorm: true) { l, y in
                            (out.baseAddress! + outputBytes + stops.firstIndex(of: l)! * n * c * 4).copyMemory(from: y, byteCount: n * c * 4)
                        }
                    }
                }
                try outbox.withUnsafeMutableBytes { out in
                    if crossTeacher != nil {
                        // the aligned top-k rows are already in the outbox
                    } else if let (k, T) = topK {
                        if pack?.n != n { pack = TopKBuffer(n: n, k: k) }
                        pack!.fill(head: mine.lmHeadWeight, hidden: mine.finalHidden, temperature: T, chunk: 256)
                        out.baseAddress!.copyMemory(from: pack!.raw, byteCount: outputBytes)
                    } else {
                        out.baseAddress!.copyMemory(from: mine.finalHidden, byteCount: outputBytes)
                    }
                    if m == me {
                        inbox[group].withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: out.baseAddress!, byteCount: myBytes) }
                    } else {
                        try comm.send(UnsafeRawPointer(out.baseAddress!), bytes: myBytes, to: m, tag: 100 + group)
                    }
                }
            }
            if m == me {
                for g in 0..<G where g != group {
                    try inbox[g].withUnsafeMutableBytes { try comm.receive($0.baseAddress!, bytes: n * bytesPerToken(g), from: g * S + me % S, tag: 100 + g) }
                }
            }
        }
        if !hiddenBlocks.isEmpty {
            // the first teacher's block outputs sit behind its output in its message
            let all = Set(hiddenBlocks).sorted(), c0 = teachers[0].config.dim, offset = n * outputBytesPerToken(0)
            if blockInbox.count != all.count || blockInbox.first?.count != n * c0 { blockInbox = all.map { _ in Slab(count: n * c0) } }
            inbox[0].withUnsafeBytes { raw in
                for (i, slab) in blockInbox.enumerated() {
                    UnsafeMutableRawPointer(slab.base).copyMemory(from: raw.baseAddress! + offset + i * n * c0 * 4, byteCount: n * c0 * 4)
                }
            }
            blockOutputs = hiddenBlocks.map { UnsafePointer(blockInbox[all.firstIndex(of: $0)!].base) }
        }
        for (g, k) in crossK {
            if crossRows[g]?.n != n { crossRows[g] = TopKBuffer(n: n, k: k) }
            let dst = crossRows[g]!
            inbox[g].withUnsafeBytes { dst.raw.copyMemory(from: $0.baseAddress!, byteCount: dst.byteCount) }
        }
        let same = sameGroups
        if same.isEmpty { return [] }
        if let (k, _) = topK {
            if merged?.n != n { merged = TopKBuffer(n: n, k: k) }
            let total = same.reduce(Float(0)) { $0 + weights[$1] }
            let w = same.map { weights[$0] / total }
            let v = teachers[same[0]].config.vocabSize
            try inboxRows(n: n, k: k, groups: same) { rows in
                let out = merged!
                Parallel.forRanges(n, minPerThread: 16) { lo, hi in
                    for r in lo..<hi {
                        if let route, route[r] >= 0 {
                            // a routed row is that teacher's own row
                            let src = rows[Int(route[r])]
                            (out.ids + r * k).update(from: src.ids + r * k, count: k)
                            (out.logProbs + r * k).update(from: src.logProbs + r * k, count: k)
                            out.logTail[r] = src.logTail[r]
                            continue
                        }
                        out.logTail[r] = TopK.mergeMixture(rows: rows, r: r, weights: w, v: v, k: k, ids: out.ids + r * k, logProbs: out.logProbs + r * k)
                    }
                }
            }
            // the sources are not read with top-k rows; they only carry the heads' shapes
            return same.map { TeacherSource(head: teachers[$0].lmHeadWeight, hidden: mine.finalHidden, weight: 1) }
        }
        if received.count != G { received = (0..<G).map { Slab(count: n * teachers[$0].config.dim) } }
        return same.map { g in
            inbox[g].withUnsafeBytes { received[g].base.update(from: $0.baseAddress!.assumingMemoryBound(to: Float.self), count: n * teachers[g].config.dim) }
            return TeacherSource(head: teachers[g].lmHeadWeight, hidden: UnsafePointer(received[g].base), weight: weights[g])
        }
    }

    /// Views the inboxes as top-k rows while `body` runs.
    func inboxRows(n: Int, k: Int, groups: [Int], _ body: ([TopKRows]) throws -> Void) throws {
        func go(_ i: Int, _ acc: [TopKRows]) throws {
            if i == groups.count { return try body(acc) }
            try inbox[groups[i]].withUnsafeBytes { raw in
                let base = raw.baseAddress!
                let row = TopKRows(k: k, ids: base.assumingMemoryBound(to: Int32.self),
                                   logProbs: (base + n * k * 4).assumingMemoryBound(to: Float.self),
                                   logTail: (base + n * k * 8).assumingMemoryBound(to: Float.self))
                try go(i + 1, acc + [row])
            }
        }
        try go(0, [])
    }
}
