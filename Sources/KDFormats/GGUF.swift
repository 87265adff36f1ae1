// GGUF v2/v3 reader (llama.cpp's model format, as gguf-py documents it): header, typed metadata, tensor infos,
// alignment, and memory-mapped tensor data. Every read is bounds-checked: a truncated or corrupt file throws
// a GGUFError naming what was expected and what was found.
import Foundation
import KDCore
import KDQuant

/// Everything that can be wrong with a GGUF file.
public enum GGUFError: Error, CustomStringConvertible, Equatable {
    case notFound(String)
    case badMagic(path: String, found: String)
    case unsupportedVersion(path: String, found: UInt32)
    case truncated(path: String, reading: String, offset: Int, fileSize: Int)
    case badValueType(path: String, key: String, found: UInt32)
    case badMetadata(path: String, key: String, reason: String)
    case unknownTensorType(path: String, tensor: String, found: UInt32)
    case badTensorShape(path: String, tensor: String, reason: String)
    case tensorOutOfBounds(path: String, tensor: String, end: Int, fileSize: Int)
    case missingKey(path: String, key: String)
    case missingTensor(path: String, tensor: String)
    case unsupportedArchitecture(path: String, found: String, supported: [String])
    case wrongShape(path: String, tensor: String, expected: [Int], found: [Int])

    public var description: String {
        switch self {
        case .notFound(let p): return "\(p): no such file"
        case .badMagic(let p, let f): return "\(p): not a GGUF file (expected magic 'GGUF', found \(f))"
        case .unsupportedVersion(let p, let v): return "\(p): GGUF version \(v) is not supported (expected 2 or 3)"
        case .truncated(let p, let what, let off, let size):
            return "\(p): truncated: reading \(what) at byte \(off) needs more than the file's \(size) bytes"
        case .badValueType(let p, let k, let t): return "\(p): metadata '\(k)': unknown value type \(t) (expected 0...12)"
        case .badMetadata(let p, let k, let r): return "\(p): metadata '\(k)': \(r)"
        case .unknownTensorType(let p, let t, let f):
            return "\(p): tensor '\(t)': tensor type \(f) is not supported (supported: \(GGMLType.allCases.map { "\($0)" }.joined(separator: ", ")))"
        case .badTensorShape(let p, let t, let r): return "\(p): tensor '\(t)': \(r)"
        case .tensorOutOfBounds(let p, let t, let end, let size):
            return "\(p): tensor '\(t)': data ends at byte \(end), past the end of the \(size)-byte file (truncated?)"
        case .missingKey(let p, let k): return "\(p): metadata key '\(k)' is missing"
        case .missingTensor(let p, let t): return "\(p): tensor '\(t)' is missing"
        case .unsupportedArchitecture(let p, let f, let s):
            return "\(p): architecture '\(f)' is not supported (supported: \(s.joined(separator: ", ")))"
        case .wrongShape(let p, let t, let e, let f): return "\(p): tensor '\(t)': expected shape \(e), found \(f)"
        }
    }
}

/// A metadata value.
public indirect enum GGUFValue: Equatable, Sendable {
    case uint(UInt64), int(Int64), float(Double), bool(Bool), string(String), array([GGUFValue])

    public var int: Int? {
        switch self {
        case .uint(let v): return Int(exactly: v)
        case .int(let v): return Int(exactly: v)
        default: return nil
        }
    }
    public var double: Double? {
        switch self {
        case .float(let v): return v
        case .uint(let v): return Double(v)
        case .int(let v): return Double(v)
        default: return nil
        }
    }
    public var string: String? { if case .string(let s) = self { return s } else { return nil } }
    public var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var array: [GGUFValue]? { if case .array(let a) = self { return a } else { return nil } }
}

/// One tensor's header entry.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    /// GGML order: dims[0] is the contiguous (column) axis.
    public let dims: [Int]
    public let type: GGMLType
    /// Offset from the start of the data section.
    public let offset: Int
    public var elements: Int { dims.reduce(1, *) }
    public var byteCount: Int { type.byteCount(elements: elements) }
    /// Row-major shape as Hugging Face and numpy write it (dims reversed).
    public var shape: [Int] { dims.reversed() }
}

/// A GGUF file: its header parsed, and its tensors' bytes mapped — the whole file (`mapAll`, the default), or one
/// tensor at a time through ``map(_:)`` (a teacher's loader: each rank's address space then holds the tensors it
/// uses, not the file).
public final class GGUFFile {
    public let path: String
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let keys: [String]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Byte offset of the data section.
    public let dataOffset: Int
    public let fileSize: Int
    /// The whole file, when opened with `mapAll`.
    let mapping: MappedFile?
    let byName: [String: Int]

    public init(path: String, mapAll: Bool = true) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else { throw GGUFError.notFound(path) }
        let fileSize = try MappedFile.fileSize(path)
        guard fileSize >= 4 else { throw GGUFError.badMagic(path: path, found: "a \(fileSize)-byte file") }
        self.fileSize = fileSize
        mapping = mapAll ? try MappedFile(path: path, offset: 0, length: fileSize) : nil
        // without the whole mapping, the header is read through a window of the file's start that grows until the
        // header fits in it (a tokenizer's tables are a few MiB; a truncation inside the file means a larger window)
        var window = mapping.map { _ in fileSize } ?? min(fileSize, 16 << 20), parsed: Parsed?
        while parsed == nil {
            do {
                parsed = try GGUFFile.parse(try mapping ?? MappedFile(path: path, offset: 0, length: window), fileSize: fileSize, path: path)
            } catch GGUFError.truncated(_, _, _, _) where window < fileSize {
                window = min(fileSize, window * 4)
            }
        }
        let p = parsed!
        (version, metadata, keys, tensors, alignment, dataOffset) = (p.version, p.metadata, p.keys, p.tensors, p.alignment, p.dataOffset)
        byName = Dictionary(tensors.enumerated().map { ($0.element.name, $0.offset) }, uniquingKeysWith: { a, _ in a })
    }

    struct Parsed {
        let version: UInt32
        let metadata: [String: GGUFValue]
        let keys: [String]
        let tensors: [GGUFTensorInfo]
        let alignment: Int, dataOffset: Int
    }

    /// The header in `header` (the file's first bytes); sizes are checked against the whole file's `fileSize`.
    static func parse(_ header: MappedFile, fileSize: Int, path: String) throws -> Parsed {
        var r = Reader(base: header.base, size: header.size, path: path)
        let magic = try r.bytes(4, "magic")
        guard magic == Array("GGUF".utf8) else {
            let shown = magic.allSatisfy { $0 >= 32 && $0 < 127 } ? "'\(String(decoding: magic, as: UTF8.self))'" : magic.map { String(format: "%02x", $0) }.joined(separator: " ")
            throw GGUFError.badMagic(path: path, found: shown)
        }
        let version = try r.u32("version")
        guard version == 2 || version == 3 else { throw GGUFError.unsupportedVersion(path: path, found: version) }
        let nTensors = try r.u64("tensor count"), nKV = try r.u64("metadata count")
        guard nTensors < 1 << 24, nKV < 1 << 24 else {
            throw GGUFError.badTensorShape(path: path, tensor: "(header)", reason: "implausible counts: \(nTensors) tensors, \(nKV) keys")
        }
        var md: [String: GGUFValue] = [:], keys: [String] = []
        for _ in 0..<nKV {
            let key = try r.string("metadata key")
            let t = try r.u32("value type of '\(key)'")
            md[key] = try r.value(type: t, key: key)
            keys.append(key)
        }
        var infos: [GGUFTensorInfo] = []
        for i in 0..<Int(nTensors) {
            let name = try r.string("name of tensor \(i)")
            let nd = try r.u32("dimension count of '\(name)'")
            guard (1...4).contains(nd) else {
                throw GGUFError.badTensorShape(path: path, tensor: name, reason: "expected 1 to 4 dimensions, found \(nd)")
            }
            var raw: [UInt64] = []
            for _ in 0..<nd { raw.append(try r.u64("dimensions of '\(name)'")) }
            let rawType = try r.u32("type of '\(name)'")
            guard let type = GGMLType(rawValue: rawType) else {
                throw GGUFError.unknownTensorType(path: path, tensor: name, found: rawType)
            }
            // every size from the file is checked before any arithmetic: each dimension below 2³², the element count
            // and the byte count within the file's size (so no product can overflow)
            guard raw.allSatisfy({ $0 > 0 && $0 < 1 << 32 }) else {
                throw GGUFError.badTensorShape(path: path, tensor: name, reason: "dimensions \(raw) (expected each in 1 ..< 2^32)")
            }
            let dims = raw.map { Int($0) }
            guard dims[0] % type.blockSize == 0 else {
                throw GGUFError.badTensorShape(path: path, tensor: name, reason: "dims \(dims) do not fit \(type) blocks of \(type.blockSize)")
            }
            guard let elements = checkedProduct(dims) else {
                throw GGUFError.badTensorShape(path: path, tensor: name, reason: "dims \(dims) have more elements than a 64-bit count holds")
            }
            guard elements / type.blockSize <= fileSize / type.typeSize else {
                let bytes = (elements / type.blockSize).multipliedReportingOverflow(by: type.typeSize)
                throw GGUFError.tensorOutOfBounds(path: path, tensor: name, end: bytes.overflow ? Int.max : bytes.partialValue, fileSize: fileSize)
            }
            let rawOffset = try r.u64("offset of '\(name)'")
            guard rawOffset <= UInt64(fileSize) else {
                throw GGUFError.tensorOutOfBounds(path: path, tensor: name, end: Int(clamping: rawOffset), fileSize: fileSize)
            }
            infos.append(GGUFTensorInfo(name: name, dims: dims, type: type, offset: Int(rawOffset)))
        }
        let alignmentValue = md["general.alignment"]
        let alignment = alignmentValue?.int ?? 32
        guard alignmentValue == nil || alignmentValue?.int != nil, alignment > 0, alignment <= 1 << 20, alignment & (alignment - 1) == 0 else {
            throw GGUFError.badTensorShape(path: path, tensor: "(header)", reason: "general.alignment must be a power of two up to 2^20, found \(alignmentValue.map { "\($0)" } ?? "")")
        }
        let dataOffset = (r.offset + alignment - 1) / alignment * alignment
        for t in infos {
            // offsets, sizes and the data offset are each at most the file size (checked above), so the sum cannot overflow
            let end = dataOffset + t.offset + t.byteCount
            guard t.offset % alignment == 0 else {
                throw GGUFError.badTensorShape(path: path, tensor: t.name, reason: "offset \(t.offset) is not aligned to \(alignment)")
            }
            guard end <= fileSize else { throw GGUFError.tensorOutOfBounds(path: path, tensor: t.name, end: end, fileSize: fileSize) }
        }
        return Parsed(version: version, metadata: md, keys: keys, tensors: infos, alignment: alignment, dataOffset: dataOffset)
    }

    public func tensor(_ name: String) -> GGUFTensorInfo? { byName[name].map { tensors[$0] } }

    /// The tensor's bytes inside the whole file's mapping (a file opened with `mapAll`).
    public func data(_ t: GGUFTensorInfo) -> UnsafeRawPointer {
        guard let mapping else { preconditionFailure("GGUFFile.data: \(path) was opened without mapAll; map(_:) maps one tensor") }
        return mapping.base + dataOffset + t.offset
    }

    /// A mapping of the tensor's bytes alone (its owner keeps them mapped).
    public func map(_ t: GGUFTensorInfo) throws -> MappedFile {
        try MappedFile(path: path, offset: dataOffset + t.offset, length: t.byteCount)
    }

    /// The tensor dequantized to Floats (row-major, GGML element order).
    public func floats(_ t: GGUFTensorInfo) -> [Float] {
        var out = [Float](repeating: 0, count: t.elements)
        out.withUnsafeMutableBufferPointer { dequantize(t.type, src: data(t), out: $0.baseAddress!, count: t.elements) }
        return out
    }

    public func required(_ key: String) throws -> GGUFValue {
        guard let v = metadata[key] else { throw GGUFError.missingKey(path: path, key: key) }
        return v
    }
}

/// Bounds-checked little-endian cursor over the mapping.
struct Reader {
    let base: UnsafeRawPointer, size: Int, path: String
    var offset = 0

    mutating func need(_ n: Int, _ what: String) throws {
        guard n >= 0, n <= size - offset else { throw GGUFError.truncated(path: path, reading: what, offset: offset, fileSize: size) }
    }
    mutating func load<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        try need(MemoryLayout<T>.size, what)
        defer { offset += MemoryLayout<T>.size }
        return T(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
    }
    mutating func u32(_ what: String) throws -> UInt32 { try load(UInt32.self, what) }
    mutating func u64(_ what: String) throws -> UInt64 { try load(UInt64.self, what) }
    mutating func bytes(_ n: Int, _ what: String) throws -> [UInt8] {
        try need(n, what)
        defer { offset += n }
        return Array(UnsafeRawBufferPointer(start: base + offset, count: n))
    }
    mutating func string(_ what: String) throws -> String {
        let n = try u64("length of \(what)")
        guard n <= UInt64(size - offset) else { throw GGUFError.truncated(path: path, reading: what, offset: offset, fileSize: size) }
        try need(Int(n), what)
        defer { offset += Int(n) }
        return String(decoding: UnsafeRawBufferPointer(start: base + offset, count: Int(n)), as: UTF8.self)
    }
    mutating func value(type t: UInt32, key: String, depth: Int = 0) throws -> GGUFValue {
        switch t {
        case 0: return .uint(UInt64(try load(UInt8.self, key)))
        case 1: return .int(Int64(try load(Int8.self, key)))
        case 2: return .uint(UInt64(try load(UInt16.self, key)))
        case 3: return .int(Int64(try load(Int16.self, key)))
        case 4: return .uint(UInt64(try load(UInt32.self, key)))
        case 5: return .int(Int64(try load(Int32.self, key)))
        case 6: return .float(Double(Float(bitPattern: try load(UInt32.self, key))))
        case 7: return .bool(try load(UInt8.self, key) != 0)
        case 8: return .string(try string(key))
        case 9:
            let et = try u32("element type of '\(key)'")
            // an array of arrays is legal; deeper nesting is not something a model file has, and unbounded nesting
            // would recurse once per 12 bytes of a hostile file
            guard et != 9 || depth < 2 else { throw GGUFError.badMetadata(path: path, key: key, reason: "arrays nested deeper than 3 levels") }
            let n = try u64("length of '\(key)'")
            // every element takes at least one byte: a length past the bytes left is a truncated (or hostile) file
            guard n <= UInt64(size - offset) else { throw GGUFError.truncated(path: path, reading: "\(n) elements of '\(key)'", offset: offset, fileSize: size) }
            var items: [GGUFValue] = []
            items.reserveCapacity(Int(n))
            for _ in 0..<n { items.append(try value(type: et, key: key, depth: depth + 1)) }
            return .array(items)
        case 10: return .uint(try u64(key))
        case 11: return .int(Int64(bitPattern: try u64(key)))
        case 12: return .float(Double(bitPattern: try u64(key)))
        default: throw GGUFError.badValueType(path: path, key: key, found: t)
        }
    }
}
