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
