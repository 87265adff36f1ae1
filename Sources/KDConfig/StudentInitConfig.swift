// The `student` section of a run config (how the student starts). Keys are snake_case, every field has a default,
// unknown keys and out-of-range values fail while decoding.

import Foundation

/// `student.init`.
public enum StudentInit: String, ConfigVocabulary {
    case random, fromTeacher = "from_teacher"
}

/// `student.bridge`: what stands in for a run of blocks a cut drops.
public enum SeamBridge: String, ConfigVocabulary {
    /// Nothing: the stream goes from the block before the run straight to the block after it.
    case none
    /// ReplaceMe (Shopkhoev et al. 2025): a linear map T from the FFN output of the kept block before the run to what
    /// the run adds to the stream (the stream after the run minus the one before that FFN), fitted by least squares on
    /// the calibration tokens and merged into that block's down projection (ffn_down ← Tᵀ·ffn_down), so the student
    /// keeps its architecture and exports as before.
    case linear
}

/// `student.select`: how the teacher blocks a cut student keeps are chosen.
public enum LayerSelect: String, ConfigVocabulary {
    /// `student.every`: blocks 0, every, 2·every, …
    case every
    /// `student.layers`: the list given.
    case layers
    /// Remove blocks one at a time, each time the one whose removal raises the calibration KL to the teacher least,
    /// until `model.layers` remain (measured on `calibration_batches` micro-batches; candidates shared across ranks).
    case greedy
    /// Gromov et al. 2024: drop the contiguous run of teacher.layers − model.layers blocks whose input and output
    /// hidden states are closest in angle (mean over the calibration tokens).
    case angular
}

/// `student.target`: the size the cut student must meet; the trainer chooses its depth and FFN width.
public struct StudentTarget: Codable, Equatable, Sendable {
    /// At most this many bytes in the GGUF the student exports to (in its QAT format, else F16), tokenizer included.
    public var bytes: Int?
    /// At most this many parameters.
    public var params: Int?
    /// At least this many times the teacher's generation speed, as ``generationCost`` estimates it (work per
    /// generated token; the same export type for both).
    public var speed: Double?

    /// With `heal_steps` > 0 the calibration KL only shortlists: `finalists` cuts spread evenly over the depths whose KL
    /// is within 1.5× the lowest (and the lowest-KL cut) are healed in a tournament — the run's objective, data,
    /// optimizer and QAT, the same batches for each, its schedule compressed to the tournament's length: all of them
    /// `heal_steps` steps, the better half by validation divergence on to twice as many, and so on until one is left.
    /// A cut's starting KL does not say how well it heals: on SmolLM2 at 62 MiB the lowest-KL cut (29 blocks × FFN
    /// 1152) is behind the 24 × 1504 cut from its 20th step on, and after 20 steps two cuts can tie that 50 separate.
    /// Default 0: the calibration KL decides.
    public var healSteps = 0
    /// How many cuts enter the heal's tournament, spread over the shortlist (both ends included). Default 3.
    public var finalists = 3

    public init(bytes: Int? = nil, params: Int? = nil, speed: Double? = nil, healSteps: Int = 0, finalists: Int = 3) {
        self.bytes = bytes; self.params = params; self.speed = speed; self.healSteps = healSteps; self.finalists = finalists
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case bytes, params, speed, healSteps = "heal_steps", finalists }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func raw(_ key: CodingKeys) -> String {
            (try? c.decode(Int.self, forKey: key)).map(String.init) ?? (try? c.decode(Double.self, forKey: key)).map { "\($0)" }
                ?? (try? c.decode(String.self, forKey: key)) ?? "?"
        }
        func quantity(_ key: CodingKeys, binary: Bool, example: String) throws -> Int? {
            guard c.contains(key) else { return nil }
            guard let v = parseQuantity(raw(key), binary: binary), v > 0 else {
                throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "expected \(example), found '\(raw(key))'")
            }
            return v
        }
        bytes = try quantity(.bytes, binary: true, example: "a size such as 62MiB, 62M or 65011712")
        params = try quantity(.params, binary: false, example: "a count such as 100M, 1.5B or 100000000")
        if c.contains(.speed) {
            // "2", "2x", "1.5×"
            var s = raw(.speed).trimmingCharacters(in: .whitespaces).lowercased()
            if s.hasSuffix("x") || s.hasSuffix("×") { s.removeLast() }
            guard let v = Double(s.trimmingCharacters(in: .whitespaces)), v.isFinite, v > 1, v <= 100 else {
                throw DecodingError.dataCorruptedError(forKey: .speed, in: c,
                                                       debugDescription: "expected a multiple of the teacher's speed above 1, such as 2 or 1.5x, found '\(raw(.speed))'")
            }
            speed = v
        }
        let given = [bytes != nil, params != nil, speed != nil].filter { $0 }.count
        try c.require(given == 1, .bytes, expected: "one of bytes, params or speed", found: given == 0 ? "none" : "\(given) of them")
        healSteps = try c.value(.healSteps, or: healSteps)
        finalists = try c.value(.finalists, or: finalists)
        try c.require((0...100_000).contains(healSteps), .healSteps, expected: "an integer in 0...100000 (0 = the calibration KL decides)", found: healSteps)
        try c.require((2...64).contains(finalists), .finalists, expected: "an integer in 2...64 (the cuts a heal compares)", found: finalists)
    }

    /// The keys given (a resolved config lists the heal only when there is one).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(bytes, forKey: .bytes)
        try c.encodeIfPresent(params, forKey: .params)
        try c.encodeIfPresent(speed, forKey: .speed)
        if healSteps > 0 {
            try c.encode(healSteps, forKey: .healSteps)
            try c.encode(finalists, forKey: .finalists)
        }
    }

    /// How the target reads in logs and the budget's key.
    public var summary: String {
        if let bytes { return String(format: "bytes %.1f MiB", Double(bytes) / 1048576) }
        if let params { return String(format: "params %.2fM", Double(params) / 1e6) }
        return String(format: "speed %.2f× the teacher", speed!)
    }
}

/// "62MiB", "62 MiB", "62M", "1.5G" or a plain number; K/M/G/T are powers of 1024 when `binary`, else of 1000 (and B
/// is 10⁹, as in "1.5B parameters"). nil for anything else.
public func parseQuantity(_ s: String, binary: Bool) -> Int? {
    var t = s.trimmingCharacters(in: .whitespaces).uppercased()
    if binary, t.hasSuffix("IB") { t.removeLast(2) } else if binary, t.hasSuffix("B"), t.count > 1, Double(t) == nil { t.removeLast() }
    t = t.trimmingCharacters(in: .whitespaces)
    let base = binary ? 1024.0 : 1000.0
    let units: [Character: Double] = ["K": base, "M": base * base, "G": base * base * base, "T": base * base * base * base]
        .merging(binary ? [:] : ["B": 1e9]) { a, _ in a }
    let unit = t.last.flatMap { units[$0] }
    guard let number = Double(unit == nil ? t : String(t.dropLast()).trimmingCharacters(in: .whitespaces)), number > 0,
          number * (unit ?? 1) < 9e18 else { return nil }
    return Int(number * (unit ?? 1))
}

/// How a training run's student starts.
public struct StudentInitConfig: Codable, Equatable, Sendable {
    /// `random` (default) or `from_teacher`: copy the teacher's embedding, final norm, head and the blocks in
    /// `layers` (depth pruning); the model section must then have the teacher's width and len(layers) blocks.
    public var initFrom = StudentInit.random
    /// Teacher blocks to keep, in order (e.g. [0, 3, 6, …]); empty with `every` set = every `every`-th block.
    public var layers: [Int] = []
    /// Keep blocks 0, every, 2·every, … (when `layers` is empty). Default 0 (unused).
    public var every = 0
    /// How the kept blocks are chosen: `every`, `layers`, `greedy` or `angular` (default: `layers` when the list is
    /// given, else `every`). The measured rules write each candidate's score to the log and to
    /// `checkpoint.dir/selection.json`, and a later run with the same teacher, data and calibration reuses it.
    public var select: LayerSelect?
    /// The teacher to cut from (default: the teacher section's path).
    public var teacher = ""
    /// Width pruning (model.ffn_dim below the teacher's, or model.heads below the teacher's with head_dim = its head
    /// size): micro-batches of the first training windows on which the teacher's FFN channels and query heads are
    /// ranked by mean |activation|. Default 4.
    public var calibrationBatches = 4
    /// Compress to a budget (`{bytes: 62MiB}` or `{params: 100M}`): the trainer tries every depth from the teacher's
    /// down to half of it, each with the widest FFN that meets the target (its blocks chosen by `select`, angular by
    /// default; FFN channels by importance), scores each cut by its calibration KL to the teacher, keeps the lowest and
    /// prints every score (with `heal_steps`, the best of a few cuts after a short heal each). `model.layers` and
    /// `model.ffn_dim` are then the chosen cut's. Default: none.
    public var target: StudentTarget?
    /// What stands in for each run of blocks a depth cut drops: `none` (default) or `linear` (a least-squares map over
    /// the run, fitted on `calibration_batches` micro-batches and merged into the down projection of the kept block
    /// before it; a run at the very start has no such block and stays as it is).
    public var bridge = SeamBridge.none

    public init() {}

    /// The rule in force: `select`, else `layers` when the list is given, else `every`.
    public var rule: LayerSelect { select ?? (target != nil ? .angular : layers.isEmpty ? .every : .layers) }

    /// Whether the kept blocks are measured on calibration batches (greedy, angular) rather than listed.
    public var measuresSelection: Bool { rule == .greedy || rule == .angular }

    enum CodingKeys: String, CodingKey, CaseIterable { case initFrom = "init", layers, every, select, teacher, calibrationBatches = "calibration_batches", target, bridge }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        initFrom = try c.value(.initFrom, or: initFrom)
        layers = try c.value(.layers, or: layers)
        every = try c.value(.every, or: every)
        select = c.contains(.select) ? try c.value(.select, or: LayerSelect.every) : nil
        teacher = try c.value(.teacher, or: teacher)
        calibrationBatches = try c.value(.calibrationBatches, or: calibrationBatches)
        target = try c.decodeIfPresent(StudentTarget.self, forKey: .target)
        bridge = try c.value(.bridge, or: bridge)
        try c.require(bridge == .none || initFrom == .fromTeacher, .bridge,
                      expected: "none with init: \(initFrom.rawValue) (a bridge stands in for blocks cut from a teacher)", found: bridge.rawValue)
        if target != nil {
            try c.require(initFrom == .fromTeacher, .target, expected: "init: from_teacher (a target is met by cutting the teacher)", found: "init: \(initFrom.rawValue)")
            try c.require(select == nil || select == .angular || select == .greedy || (select == .every && every == 1), .select,
                          expected: "angular or greedy with a target (the depth is measured), or every with every: 1 (all blocks kept, the FFN narrowed to meet it)",
                          found: "\(select.map { $0.rawValue } ?? "")\(select == .every ? " with every: \(every)" : "")")
        }
        try c.require(calibrationBatches >= 1, .calibrationBatches, expected: "an integer >= 1", found: calibrationBatches)
        try c.require(every >= 0, .every, expected: "an integer >= 0", found: every)
        try c.require(layers.allSatisfy { $0 >= 0 }, .layers, expected: "block indices >= 0", found: layers)
        switch select {
        case .greedy?, .angular?, nil where target != nil:
            let select = self.select ?? .angular
            try c.require(layers.isEmpty && every == 0, .select, expected: "\(select) alone (it chooses the blocks; drop layers/every)",
                          found: "\(select) with \(layers.isEmpty ? "every: \(every)" : "layers: \(layers)")")
        case .layers?:
            try c.require(!layers.isEmpty, .layers, expected: "the teacher blocks to keep with select: layers", found: "none")
        case .every?:
            try c.require(every > 0, .every, expected: "an integer >= 1 with select: every", found: every)
        case nil:
            if initFrom == .fromTeacher && target == nil {
                try c.require(!layers.isEmpty || every > 0, .layers,
                              expected: "the teacher blocks to keep (layers: [...], every: N, or select: greedy | angular)", found: "none")
            }
        }
    }
}
