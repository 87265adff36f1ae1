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

    /// Turns a DecodingError into `file: a.b.c: message`; `found` describes the value the file has at a coding path
    /// (the decoder's own errors do not say: Yams reports the string `ten` under an Int key as "null").
    public init(decoding e: DecodingError, source: String, found: ([any CodingKey]) -> String? = { _ in nil }) {
        func path(_ keys: [any CodingKey]) -> String {
            keys.reduce("") { acc, k in k.intValue.map { acc + "[\($0)]" } ?? (acc.isEmpty ? k.stringValue : acc + "." + k.stringValue) }
        }
        switch e {
        case .dataCorrupted(let ctx):
            // Yams wraps an error thrown inside a decoder as "not valid YAML": say what that error says
            if let inner = ctx.underlyingError as? ConfigError, case .invalid(let p, let expected, let found) = inner {
                self = .at(source: source, path: p, message: "expected \(expected), found \(found)")
            } else if let inner = ctx.underlyingError as? DecodingError {
                self = ConfigError(decoding: inner, source: source, found: found)
            } else {
                self = .at(source: source, path: path(ctx.codingPath), message: ctx.debugDescription)
            }
        case .keyNotFound(let key, let ctx):
            self = .at(source: source, path: path(ctx.codingPath + [key]), message: "required key is missing")
        case .typeMismatch(let type, let ctx):
            self = .at(source: source, path: path(ctx.codingPath), message: "expected \(ConfigError.describe(type)), found \(found(ctx.codingPath) ?? "something else")")
        case .valueNotFound(let type, let ctx):
            self = .at(source: source, path: path(ctx.codingPath), message: "expected \(ConfigError.describe(type)), found \(found(ctx.codingPath) ?? "null")")
        @unknown default:
            self = .syntax(source: source, message: "\(e)")
        }
    }
}

extension ConfigError {
    /// A Swift type as a config value ("an integer", "a number", "a list of …").
    static func describe(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type, is Int32.Type, is Int64.Type, is UInt64.Type, is UInt.Type, is UInt32.Type: return "an integer"
        case is Float.Type, is Double.Type: return "a number"
        case is Bool.Type: return "true or false"
        case is String.Type: return "a string"
        default:
            let name = "\(type)"
            // Yams names the node kind it wanted
            if let kind = ["Scalar": "a single value", "Mapping": "a mapping", "Sequence": "a list"][name] { return kind }
            return name.hasPrefix("Array<") || name.hasPrefix("[") ? "a list (\(name))" : name.hasPrefix("Dictionary<") ? "a mapping" : "a value of type \(name)"
        }
    }
}
