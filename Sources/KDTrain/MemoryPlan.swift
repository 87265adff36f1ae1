// The memory plan: before any teacher loads, what each rank will hold — the teacher bytes it touches (by placement and
// stage, from the files' headers), the student's weights, gradients and optimizer state (by sharding), activations
// and the LM head's work buffers — against what the rank can have (its cgroup's limit, else the node's available memory
// shared by its ranks). `distill train --dry-run` prints it for every rank; every run prints its own rank's line and
// stops with one line naming a fix when it does not fit.
import Foundation
import KDConfig
import KDCore
import KDFormats
import KDModel
import KDOps

/// The tensors of one teacher a rank loads: what its placement runs there, and the heads it applies itself.
/// `replicated`: all. `pipelined`: its stage's blocks, the final norm and head (every rank applies the head to its own
/// micro-batch), and the embedding on stage 0. `groups`: its group's teacher whole; another group's teacher's final
/// norm and head with the full exchange (the owner applies them), nothing with top-k rows. A teacher the student is cut
/// from is read whole on every rank.
public struct TeacherShare: Sendable {
    public let uses: @Sendable (String) -> Bool
    public let note: String

    public init(config c: RunConfig, teacher i: Int, layers L: Int, tied: Bool, rank: Int, ranks: Int) {
        let tc = c.teacher ?? TeacherConfig(), teachers = max(1, tc.sources.count)
        let cutFromThis = i == 0 && c.student.initFrom == .fromTeacher && c.student.teacher.isEmpty
        @Sendable func isEmbedding(_ name: String) -> Bool { name.hasPrefix("model.embed_tokens") }
        switch tc.placement {
        case _ where cutFromThis:
            uses = { _ in true }
            note = "whole (the student is cut from it)"
        case .replicated:
            uses = { _ in true }
            note = "whole"
        case .pipelined:
            let blocks = (L * rank / ranks)..<(L * (rank + 1) / ranks)
            uses = { name in ParameterLayout.block(of: name).map(blocks.contains) ?? (rank == 0 || tied || !isEmbedding(name)) }
            note = "blocks \(blocks.lowerBound)..<\(blocks.upperBound) of \(L), head" + (rank == 0 ? ", embedding" : "")
        case .groups:
            let mine = rank / max(1, ranks / teachers) == i, full = tc.exchange == .full
            uses = { name in mine || (full && ParameterLayout.block(of: name) == nil && (tied || !isEmbedding(name))) }
            note = mine ? "whole (group \(i))" : full ? "head only (group \(i) runs it)" : "none (group \(i) runs it)"
        }
    }
}

public struct MemoryPlan: Sendable {
    public struct Part: Sendable {
        public let name: String
        public let bytes: Int
        public let note: String
    }
    public let rank: Int, ranks: Int
    public let parts: [Part]
    public var total: Int { parts.reduce(0) { $0 + $1.bytes } }
    /// The teacher weights this rank touches.
    public let teacherBytes: Int
    /// The teachers' footprints the plan was made from.
    let teachers: [ModelFootprint]

    /// The plan of `rank` of `ranks` for `config`, whose teachers have the footprints `teachers` (config order);
    /// `baseline` is what the process holds before the run allocates (runtime, libraries and the loaded corpus).
    public init(config c: RunConfig, teachers: [ModelFootprint], rank: Int, ranks: Int, baseline: Int) {
        self.rank = rank
        self.ranks = ranks
        self.teachers = teachers
        let t = c.train, m = c.model, n = t.microBatch * t.seqLen, threads = max(1, Parallel.threads)
        let tc = c.teacher ?? TeacherConfig(), bf16 = t.precision == .bf16
        var parts = [Part(name: "runtime and data", bytes: baseline, note: "this process before the run allocates")]

        // teachers: what this rank's placement runs, plus the heads it applies itself
        var touched = 0
        for (i, f) in teachers.enumerated() {
            let share = TeacherShare(config: c, teacher: i, layers: f.config.layers, tied: f.config.tiedEmbeddings, rank: rank, ranks: ranks)
            let bytes = MemoryPlan.teacherBytes(f, share: share, config: c)
            touched += bytes
            let runsBlocks = f.tensors.contains { $0.block != nil && share.uses($0.name) }
            let acts = runsBlocks ? Transformer.activationBytes(config: f.config, b: t.microBatch, t: t.seqLen, training: false,
                                                                 lmHeadChunk: t.lmHeadChunk, headLogits: false) : 0
            parts.append(Part(name: "teacher \(i + 1) weights", bytes: bytes, note: share.note))
            // every rank opens every teacher: its vocabulary, merges and metadata as tables (measured on SmolLM2's
            // 1.8 MB header: about 9× its bytes resident), and the tokenizer.json checkpoints carry
            parts.append(Part(name: "teacher \(i + 1) tokenizer", bytes: 10 * f.metadataBytes, note: "tables from its \(f.metadataBytes >> 10) KiB of metadata"))
            if acts > 0 { parts.append(Part(name: "teacher \(i + 1) activations", bytes: acts, note: "\(t.microBatch) × \(t.seqLen) tokens, one block's buffers")) }
        }
        teacherBytes = touched
        let p = ParameterLayout(config: m).count, sharded = c.optimizer.sharding != .none ? ranks : 1
        if tc.selfSource != .none { parts.append(Part(name: "self-teacher weights", bytes: 4 * p, note: "a Float copy of the student")) }

        // the student: weights and gradients whole on every rank (gradients sharded too with `gradients`), AdamW
        // moments and QAT masters on this rank's 1/N with sharding
        parts.append(Part(name: "student weights", bytes: 4 * p, note: "\(p) parameters"))
        parts.append(Part(name: "student gradients", bytes: 4 * p, note: c.optimizer.sharding == .gradients ? "whole (reduce-scattered)" : "whole"))
        let stateFloats = 2 + (c.qat.enabled ? 2 : 0)
        parts.append(Part(name: "optimizer state", bytes: stateFloats * 4 * p / sharded,
                          note: "AdamW moments" + (c.qat.enabled ? ", QAT masters and masks" : "") + (sharded > 1 ? ", 1/\(sharded) of them" : "")))
        // on several ranks the gradient buckets are reduced while backward runs: MPI holds a buffer per bucket in flight,
        // up to the gradient's size (measured: the gap between plan and peak on 2 ranks was the gradient's bytes)
        if ranks > 1 { parts.append(Part(name: "gradient exchange", bytes: 4 * p, note: "MPI's buffers for the buckets in flight")) }
        parts.append(Part(name: "student activations", bytes: Transformer.activationBytes(config: m, b: t.microBatch, t: t.seqLen, training: true,
                                                                                          lmHeadChunk: t.lmHeadChunk),
                          note: "\(t.microBatch) × \(t.seqLen) tokens, every block's buffers, the head's logit chunk"))
        // the fused head's work: teacher logit rows per chunk, per-thread rows, bf16 packs of a dense head
        let rows = min(t.lmHeadChunk, n), v = m.vocabSize, liveTeachers = tc.cache.isEmpty ? teachers.count + (tc.selfSource != .none ? 1 : 0) : 0
        var head = 4 * (liveTeachers * rows * v + threads * (3 * v + 2 * (tc.topK + 1)))
        if bf16 && n > rows { head += 2 * 2 * v * m.dim }
        parts.append(Part(name: "LM head work", bytes: head, note: "\(liveTeachers) teacher logit chunk\(liveTeachers == 1 ? "" : "s"), rows per thread" + (bf16 && n > rows ? ", bf16 head packs" : "")))
        self.parts = parts
    }

    /// The bytes of teacher `f` a rank with `share` holds: packed tensors stay in their mappings (resident once
    /// touched); the others are copied to Floats and unmapped (a bf16 replicated run then packs dense matrices to bf16
    /// and releases their Float copy).
    static func teacherBytes(_ f: ModelFootprint, share: TeacherShare, config c: RunConfig) -> Int {
        let halved = c.train.precision == .bf16 && (c.teacher ?? TeacherConfig()).placement == .replicated
        return f.tensors.filter { share.uses($0.name) }.reduce(0) { sum, x in
            sum + (x.packed ? x.stored : x.count * (halved && x.block != nil ? 2 : 4))
        }
    }

    /// The plan's table: one line per part, then the total against `limit`.
    public func table(limit: (bytes: Int, source: String)?) -> [String] {
        func mib(_ b: Int) -> String { String(format: "%9.1f MiB", Double(b) / 1048576) }
        var lines = ["memory plan, rank \(rank) of \(ranks):"]
        for p in parts { lines.append("  \(p.name.padding(toLength: 22, withPad: " ", startingAt: 0)) \(mib(p.bytes))  \(p.note)") }
        lines.append("  \("total".padding(toLength: 22, withPad: " ", startingAt: 0)) \(mib(total))"
                     + (limit.map { "  of \(mib($0.bytes).trimmingCharacters(in: .whitespaces)) this rank can have (\($0.source))" } ?? ""))
        return lines
    }

    /// Nil when the plan fits `limit`, else the one-line error naming what would make it fit.
    public func refusal(limit: Int, config c: RunConfig) -> KDError? {
        guard total > limit else { return nil }
        let tc = c.teacher ?? TeacherConfig()
        var fixes: [String] = []
        if teacherBytes > 0 && tc.placement == .replicated && tc.sources.count == 1, let f = teachers.first {
            // the fewest pipeline stages whose largest share of the teacher fits what the rest of the plan leaves
            var piped = c
            piped.teacher?.placement = .pipelined
            let spare = limit - (total - teacherBytes)
            let stages = (2...max(2, f.config.layers)).first { S in
                (0..<S).allSatisfy { r in
                    MemoryPlan.teacherBytes(f, share: TeacherShare(config: piped, teacher: 0, layers: f.config.layers, tied: f.config.tiedEmbeddings,
                                                                   rank: r, ranks: S), config: piped) <= spare
                }
            }
            fixes.append(stages.map { "teacher.placement: pipelined on \($0) or more ranks" } ?? "teacher.placement: pipelined (its head alone does not fit what is left)")
        }
        if tc.placement == .replicated && tc.sources.count > 1 { fixes.append("teacher.placement: groups") }
        if c.optimizer.sharding == .none && ranks > 1 { fixes.append("optimizer.sharding: states (or gradients)") }
        if c.train.microBatch > 1 { fixes.append("a smaller train.micro_batch with more train.grad_accum") }
        return KDError.invalidInput(
            what: "memory plan of rank \(rank)",
            expected: String(format: "at most %.2f GiB (what this rank can have)", Double(limit) / 1073741824),
            found: String(format: "%.2f GiB planned (teachers %.2f GiB of it); try %@", Double(total) / 1073741824, Double(teacherBytes) / 1073741824,
                          fixes.isEmpty ? "a machine with more memory" : fixes.joined(separator: ", or ")))
    }
}
