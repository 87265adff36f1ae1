// The `data` section of a run config (where the training text comes from). Keys are snake_case, every field has a default,
// unknown keys and out-of-range values fail while decoding.

/// `data.tokenizer` of plain text files (prepared shards carry their own tokenizer).
public enum TextTokenizer: String, ConfigVocabulary {
    case bytes
}

/// Where the training text comes from and how it is tokenized.
public struct DataConfig: Codable, Equatable, Sendable {
    /// Text files or folders (read recursively, tokenized as bytes), or one folder written by `distill prepare`
    /// (its shards carry their tokenizer), relative to the working directory. Required.
    public var train: [String] = []
    /// Tokenizer: `bytes` (UTF-8 bytes, vocabulary 256). Default bytes.
    public var tokenizer = TextTokenizer.bytes
    /// File-name endings skipped inside folders (e.g. fortune's `.dat` indexes). Default [".dat"].
    public var excludeSuffixes: [String] = [".dat"]
    /// Fraction of documents held out for validation. Default 0.05.
    public var valFraction: Double = 0.05

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case train, tokenizer, excludeSuffixes = "exclude_suffixes", valFraction = "val_fraction"
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let one = try? c.decode(String.self, forKey: .train) { train = [one] } else { train = try c.value(.train, or: train) }
        tokenizer = try c.value(.tokenizer, or: tokenizer)
        excludeSuffixes = try c.value(.excludeSuffixes, or: excludeSuffixes)
        valFraction = try c.value(.valFraction, or: valFraction)
        try c.require(!train.isEmpty, .train, expected: "at least one text file or folder", found: "none")
        try c.require(valFraction >= 0 && valFraction < 1, .valFraction, expected: "a number in [0, 1)", found: valFraction)
    }
}
