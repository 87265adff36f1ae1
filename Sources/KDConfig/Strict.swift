// Strict decoding helpers: unknown keys throw with their path (and the nearest known key), missing keys take
// defaults, range violations say what was expected and what was found.

/// A coding key for any string, used to list the keys a YAML mapping actually has.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// Throws if the mapping being decoded has a key that `Keys` does not list.
public func rejectUnknownKeys<Keys: CodingKey & CaseIterable>(_ decoder: any Decoder, _: Keys.Type) throws {
    let container = try decoder.container(keyedBy: AnyKey.self)
    let known = Keys.allCases.map(\.stringValue)
    for key in container.allKeys where !known.contains(key.stringValue) {
        let near = known.min { editDistance($0, key.stringValue) < editDistance($1, key.stringValue) }
        var hint = "expected one of: \(known.joined(separator: ", "))"
        if let near, editDistance(near, key.stringValue) <= 3 { hint = "did you mean '\(near)'? (\(hint))" }
        throw DecodingError.dataCorrupted(
            .init(codingPath: decoder.codingPath + [key], debugDescription: "unknown key '\(key.stringValue)'; \(hint)"))
    }
}

func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var prev = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var cur = [i] + [Int](repeating: 0, count: b.count)
        for j in 1...max(b.count, 1) where !b.isEmpty {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        prev = cur
    }
    return a.isEmpty ? b.count : prev[b.count]
}

extension KeyedDecodingContainer {
    /// The value at `key`, or `fallback` when the key is absent.
    func value<T: Decodable>(_ key: Key, or fallback: T) throws -> T {
        try decodeIfPresent(T.self, forKey: key) ?? fallback
    }

    /// Throws `expected …, found …` at `key` unless `ok`.
    func require(_ ok: Bool, _ key: Key, expected: String, found: Any) throws {
        guard ok else {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "expected \(expected), found \(found)")
        }
    }
}

/// A word of the config vocabulary (`objective: rkl`, `placement: groups`, …): decoded once from its string; an
/// unknown value fails with every valid one listed, and code switches over the cases exhaustively.
public protocol ConfigVocabulary: RawRepresentable, CaseIterable, Codable, Sendable, Hashable, CustomStringConvertible where RawValue == String {}

extension ConfigVocabulary {
    /// The word as the config spells it (what messages and logs print).
    public var description: String { rawValue }

    /// "'a', 'b' or 'c'" — the valid values, for messages.
    public static var choices: String {
        let all = allCases.map { "'\($0.rawValue)'" }
        return all.count < 2 ? all.joined() : all.dropLast().joined(separator: ", ") + " or " + all.last!
    }
}

extension KeyedDecodingContainer {
    /// The vocabulary word at `key`, or `fallback` when the key is absent; anything else names the valid values.
    func value<V: ConfigVocabulary>(_ key: Key, or fallback: V) throws -> V {
        guard let raw = try decodeIfPresent(String.self, forKey: key) else { return fallback }
        guard let v = V(rawValue: raw) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "expected \(V.choices), found '\(raw)'")
        }
        return v
    }
}
