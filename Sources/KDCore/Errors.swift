// The shared error vocabulary for edges (files, data, CLI): each case says what was expected and what was found.

/// Errors raised at input edges that are not specific to one format or module.
public enum KDError: Error, CustomStringConvertible, Equatable {
    case fileNotFound(path: String)
    case unreadable(path: String, reason: String)
    case invalidInput(what: String, expected: String, found: String)
    case nonFinite(what: String, step: Int)
    case unwritable(path: String, reason: String)

    public var description: String {
        switch self {
        case .fileNotFound(let path): return "file not found: \(path)"
        case .unreadable(let path, let reason): return "cannot read \(path): \(reason)"
        case .invalidInput(let what, let expected, let found): return "\(what): expected \(expected), found \(found)"
        case .unwritable(let path, let reason): return "cannot write \(path): \(reason)"
        case .nonFinite(let what, let step): return "\(what) is not finite at step \(step) (NaN or Inf); stopping"
        }
    }
}
