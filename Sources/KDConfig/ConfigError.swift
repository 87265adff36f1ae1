// Config errors as one line each: where (file and key path), what was expected, what was found.

public enum ConfigError: Error, CustomStringConvertible, Equatable {
    case fileNotFound(String)
    case syntax(source: String, message: String)
    case invalid(String, expected: String, found: String)
    case at(source: String, path: String, message: String)

    public var description: String {
        switch self {
        case .fileNotFound(let p): return "config file not found: \(p)"
        case .syntax(let s, let m): return "\(s): not valid YAML: \(m)"
        case .invalid(let path, let expected, let found): return "config \(path): expected \(expected), found \(found)"
        case .at(let s, let path, let m): return "\(s): \(path.isEmpty ? "top level" : path): \(m)"
        }
    }

    /// Turns a DecodingError into `file: a.b.c: message`.
    public init(decoding e: DecodingError, source: String) {
        func path(_ keys: [any CodingKey]) -> String {
            keys.reduce("") { acc, k in k.intValue.map { acc + "[\($0)]" } ?? (acc.isEmpty ? k.stringValue : acc + "." + k.stringValue) }
        }
        switch e {
        case .dataCorrupted(let ctx):
            // Yams wraps an error thrown inside a decoder as "not valid YAML": say what that error says
            if let inner = ctx.underlyingError as? ConfigError, case .invalid(let p, let expected, let found) = inner {
                self = .at(source: source, path: p, message: "expected \(expected), found \(found)")
            } else if let inner = ctx.underlyingError as? DecodingError {
                self = ConfigError(decoding: inner, source: source)
            } else {
                self = .at(source: source, path: path(ctx.codingPath), message: ctx.debugDescription)
            }
        case .keyNotFound(let key, let ctx):
            self = .at(source: source, path: path(ctx.codingPath + [key]), message: "required key is missing")
        case .typeMismatch(let type, let ctx):
            self = .at(source: source, path: path(ctx.codingPath), message: "expected a value of type \(type), found something else")
        case .valueNotFound(let type, let ctx):
            self = .at(source: source, path: path(ctx.codingPath), message: "expected a value of type \(type), found null")
        @unknown default:
            self = .syntax(source: source, message: "\(e)")
        }
    }
}
