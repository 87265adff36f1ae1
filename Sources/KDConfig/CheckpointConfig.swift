// The `checkpoint` section of a run config (where and how often rank 0 writes). Keys are snake_case, every field has a default,
// unknown keys and out-of-range values fail while decoding.

/// Where and how often rank 0 writes checkpoints.
public struct CheckpointConfig: Codable, Equatable, Sendable {
    /// Run directory; checkpoints are its step_XXXXXXXX folders. Default Checkpoints/run.
    public var dir = "Checkpoints/run"
    /// Write one every this many steps, and always after the last; 0 = only after the last. Default 0.
    public var every = 0
    /// Also write one when this many minutes have passed since the last (rank 0's clock decides, so every rank
    /// agrees); 0 = off. Default 0.
    public var everyMinutes = 0.0
    /// Checkpoints kept (older ones are deleted once a newer one is complete). Default 3.
    public var keep = 3

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case dir, every, everyMinutes = "every_minutes", keep }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dir = try c.value(.dir, or: dir)
        every = try c.value(.every, or: every)
        everyMinutes = try c.value(.everyMinutes, or: everyMinutes)
        keep = try c.value(.keep, or: keep)
        try c.require(everyMinutes >= 0 && everyMinutes.isFinite, .everyMinutes, expected: "a number of minutes >= 0 (0 = off)", found: everyMinutes)
        try c.require(!dir.isEmpty, .dir, expected: "a folder path", found: "an empty string")
        try c.require(every >= 0, .every, expected: "an integer >= 0 (0 = only at the end)", found: every)
        try c.require(keep >= 1, .keep, expected: "an integer >= 1", found: keep)
    }
}
