// The `student` section of a run config (how the student starts). Keys are snake_case, every field has a default,
// unknown keys and out-of-range values fail while decoding.

/// `student.init`.
public enum StudentInit: String, ConfigVocabulary {
    case random, fromTeacher = "from_teacher"
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

    public init() {}

    /// The rule in force: `select`, else `layers` when the list is given, else `every`.
    public var rule: LayerSelect { select ?? (layers.isEmpty ? .every : .layers) }

    /// Whether the kept blocks are measured on calibration batches (greedy, angular) rather than listed.
    public var measuresSelection: Bool { rule == .greedy || rule == .angular }

    enum CodingKeys: String, CodingKey, CaseIterable { case initFrom = "init", layers, every, select, teacher, calibrationBatches = "calibration_batches" }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        initFrom = try c.value(.initFrom, or: initFrom)
        layers = try c.value(.layers, or: layers)
        every = try c.value(.every, or: every)
        select = c.contains(.select) ? try c.value(.select, or: LayerSelect.every) : nil
        teacher = try c.value(.teacher, or: teacher)
        calibrationBatches = try c.value(.calibrationBatches, or: calibrationBatches)
        try c.require(calibrationBatches >= 1, .calibrationBatches, expected: "an integer >= 1", found: calibrationBatches)
        try c.require(every >= 0, .every, expected: "an integer >= 0", found: every)
        try c.require(layers.allSatisfy { $0 >= 0 }, .layers, expected: "block indices >= 0", found: layers)
        switch select {
        case .greedy?, .angular?:
            try c.require(layers.isEmpty && every == 0, .select, expected: "\(select!) alone (it chooses the blocks; drop layers/every)",
                          found: "\(select!) with \(layers.isEmpty ? "every: \(every)" : "layers: \(layers)")")
        case .layers?:
            try c.require(!layers.isEmpty, .layers, expected: "the teacher blocks to keep with select: layers", found: "none")
        case .every?:
            try c.require(every > 0, .every, expected: "an integer >= 1 with select: every", found: every)
        case nil:
            if initFrom == .fromTeacher {
                try c.require(!layers.isEmpty || every > 0, .layers,
                              expected: "the teacher blocks to keep (layers: [...], every: N, or select: greedy | angular)", found: "none")
            }
        }
    }
}
