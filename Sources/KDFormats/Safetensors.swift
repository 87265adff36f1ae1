// safetensors (Hugging Face's tensor file): an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {…}}, then the raw data. Reads are memory-mapped
// and bounds-checked; writes go to a temporary file that is fsynced and renamed, so no half-written file remains.
import Foundation
import KDCore
import KDQuant

public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
    case notFound(String)
    case badHeader(path: String, reason: String)
    case unsupportedDType(path: String, tensor: String, found: String)
    case outOfBounds(path: String, tensor: String, end: Int, dataSize: Int)
    case sizeMismatch(path: String, tensor: String, expected: Int, found: Int)

    public var description: String {
        switch self {
        case .notFound(let p): return "\(p): no such file"
        case .badHeader(let p, let r): return "\(p): not a safetensors file: \(r)"
        case .unsupportedDType(let p, let t, let d): return "\(p): tensor '\(t)': dtype \(d) is not supported (supported: F32, F16, BF16)"
        case .outOfBounds(let p, let t, let end, let size): return "\(p): tensor '\(t)': data ends at byte \(end) of a \(size)-byte data section (truncated?)"
        case .sizeMismatch(let p, let t, let e, let f): return "\(p): tensor '\(t)': shape needs \(e) bytes, data_offsets give \(f)"
        }
    }
}

/// One tensor of a safetensors file.
public struct SafetensorsTensor: Sendable {
    public let name: String
    public let dtype: GGMLType  // .f32, .f16 or .bf16
    public let shape: [Int]
    public let begin: Int, end: Int
    public var elements: Int { shape.reduce(1, *) }
}

/// A safetensors file: its header parsed, its data mapped whole (`mapAll`, the default: checkpoints, which read
/// everything) or one tensor at a time (``map(_:)``: a teacher's share, so a rank's address space holds the tensors it
/// uses and not the whole file).
public final class SafetensorsFile {
    public let path: String
    public let tensors: [SafetensorsTensor]
    public let metadata: [String: String]
    let fileSize: Int
    /// Byte offset of the data section (a tensor's data_offsets count from here).
    public let dataStart: Int
    /// The whole file, when opened with `mapAll`.
    let mapping: MappedFile?
    let byName: [String: Int]

    public init(path: String, mapAll: Bool = true) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else { throw SafetensorsError.notFound(path) }
        let fileSize = try MappedFile.fileSize(path)
        guard fileSize >= 8 else {
            throw SafetensorsError.badHeader(path: path, reason: "\(fileSize) bytes is shorter than the 8-byte header length")
        }
        self.fileSize = fileSize
        mapping = mapAll ? try MappedFile(path: path, offset: 0, length: fileSize) : nil
        // a mapping is read only while a reference holds it (ARC may end a local's life at its last use)
        let first = try mapping ?? MappedFile(path: path, offset: 0, length: 8)
        let rawLength = withExtendedLifetime(first) { UInt64(littleEndian: first.base.loadUnaligned(as: UInt64.self)) }
        guard rawLength > 1, rawLength <= UInt64(fileSize - 8) else {
            throw SafetensorsError.badHeader(path: path, reason: "header length \(rawLength) does not fit the \(fileSize)-byte file")
        }
        let n = Int(rawLength)
        dataStart = 8 + n
        let header = try mapping ?? MappedFile(path: path, offset: 0, length: dataStart)
        let json = withExtendedLifetime(header) { Data(bytes: header.base + 8, count: n) }
        guard let obj = try? JSONSerialization.jsonObject(with: json) as? [String: Any] else {
            throw SafetensorsError.badHeader(path: path, reason: "header is not a JSON object")
        }
        var list: [SafetensorsTensor] = [], meta: [String: String] = [:]
        for (name, value) in obj {
            if name == "__metadata__" {
                meta = (value as? [String: String]) ?? [:]
                continue
            }
            guard let d = value as? [String: Any], let dt = d["dtype"] as? String, let shape = d["shape"] as? [Int],
                  let offs = d["data_offsets"] as? [Int], offs.count == 2 else {
                throw SafetensorsError.badHeader(path: path, reason: "entry '\(name)' lacks dtype, shape or data_offsets")
            }
            let type: GGMLType
            switch dt {
            case "F32": type = .f32
            case "F16": type = .f16
            case "BF16": type = .bf16
            default: throw SafetensorsError.unsupportedDType(path: path, tensor: name, found: dt)
            }
            let t = SafetensorsTensor(name: name, dtype: type, shape: shape, begin: offs[0], end: offs[1])
            guard t.end >= t.begin, t.begin >= 0 else { throw SafetensorsError.badHeader(path: path, reason: "'\(name)' has data_offsets \(offs)") }
            // the offsets are checked against the data section before any sum, the shape's product without overflow
            guard t.end <= fileSize - dataStart else {
                throw SafetensorsError.outOfBounds(path: path, tensor: name, end: t.end, dataSize: fileSize - dataStart)
            }
            guard shape.count <= 8, let elements = checkedProduct(shape), elements <= fileSize / type.typeSize else {
                throw SafetensorsError.badHeader(path: path, reason: "'\(name)' has shape \(shape) (expected at most 8 dimensions, each ≥ 0, within the file's \(fileSize) bytes)")
            }
            guard t.end - t.begin == elements * type.typeSize else {
                throw SafetensorsError.sizeMismatch(path: path, tensor: name, expected: elements * type.typeSize, found: t.end - t.begin)
            }
            list.append(t)
        }
        tensors = list.sorted { $0.begin < $1.begin }
        metadata = meta
        byName = Dictionary(tensors.enumerated().map { ($0.element.name, $0.offset) }, uniquingKeysWith: { a, _ in a })
    }

    public func tensor(_ name: String) -> SafetensorsTensor? { byName[name].map { tensors[$0] } }

    /// The tensor's bytes inside the whole file's mapping (a file opened with `mapAll`).
    public func data(_ t: SafetensorsTensor) -> UnsafeRawPointer {
        guard let mapping else { preconditionFailure("SafetensorsFile.data: \(path) was opened without mapAll; map(_:) maps one tensor") }
        return mapping.base + dataStart + t.begin
    }

    /// A mapping of the tensor's bytes alone (its owner keeps them mapped).
    public func map(_ t: SafetensorsTensor) throws -> MappedFile {
        try MappedFile(path: path, offset: dataStart + t.begin, length: t.end - t.begin)
    }

    /// The tensor (or its first `count` elements) as Floats into `out` (F16/BF16 widened exactly); without the whole
    /// file's mapping, through a mapping of the tensor's bytes for the time of the copy.
    public func read(_ t: SafetensorsTensor, into out: UnsafeMutablePointer<Float>, count: Int? = nil) throws {
        let n = min(count ?? t.elements, t.elements)
        let own = mapping == nil ? try map(t) : nil
        let src = own?.base ?? data(t)
        if t.dtype == .f32 {
            memcpy(out, src, n * 4)  // data may be unaligned
        } else {
            dequantize(t.dtype, src: src, out: out, count: n)
        }
        withExtendedLifetime(own) {}
    }
}

/// A tensor to write: Float data at `data` with `shape`, stored as F32.
public struct SafetensorsEntry {
    public let name: String
    public let shape: [Int]
    public let data: UnsafePointer<Float>
    public init(name: String, shape: [Int], data: UnsafePointer<Float>) {
        self.name = name
        self.shape = shape
        self.data = data
    }
}

/// Writes F32 tensors (in the given order) and string metadata atomically: temp file, fsync, rename.
public func writeSafetensors(path: String, tensors: [SafetensorsEntry], metadata: [String: String] = [:]) throws {
    let header = try safetensorsHeader(tensors: tensors, metadata: metadata)
    try atomicWrite(path: path) { fh in
        try fh.write(contentsOf: header)
        for t in tensors {
            // no copy: a checkpoint's largest tensor (the embedding) would otherwise add its size to the peak
            try fh.write(contentsOf: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: t.data), count: t.shape.reduce(1, *) * 4, deallocator: .none))
        }
    }
}

/// Writes F32 tensors whose data `stream` produces in the given order (through the `emit` it receives, in pieces of
/// any size), atomically; throws unless exactly the tensors' bytes were emitted. Nothing needs to be in memory at
/// once (rank 0 writes sharded optimizer state as it arrives).
public func writeSafetensors(path: String, shapes: [(name: String, shape: [Int])], metadata: [String: String] = [:],
                             stream: (_ emit: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
    let placeholder = UnsafePointer<Float>(bitPattern: MemoryLayout<Float>.alignment)!  // never read: the header needs shapes only
    let header = try safetensorsHeader(tensors: shapes.map { SafetensorsEntry(name: $0.name, shape: $0.shape, data: placeholder) }, metadata: metadata)
    let want = shapes.reduce(0) { $0 + $1.shape.reduce(1, *) * 4 }
    try atomicWrite(path: path) { fh in
        try fh.write(contentsOf: header)
        var written = 0
        try stream { bytes in
            // no copy: a whole slab may come in one piece
            if let base = bytes.baseAddress, bytes.count > 0 {
                try fh.write(contentsOf: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: base), count: bytes.count, deallocator: .none))
            }
            written += bytes.count
        }
        guard written == want else {
            throw KDError.invalidInput(what: "\(path) tensor data", expected: "\(want) bytes", found: "\(written) bytes")
        }
    }
}

/// A whole safetensors file in memory (small files: QAT scales).
public func safetensorsData(tensors: [SafetensorsEntry], metadata: [String: String] = [:]) throws -> Data {
    var d = try safetensorsHeader(tensors: tensors, metadata: metadata)
    for t in tensors { d.append(Data(bytes: t.data, count: t.shape.reduce(1, *) * 4)) }
    return d
}

/// The 8-byte length and the JSON header, padded so the data starts 8-byte aligned (as HF pads).
func safetensorsHeader(tensors: [SafetensorsEntry], metadata: [String: String]) throws -> Data {
    var header: [String: Any] = [:]
    if !metadata.isEmpty { header["__metadata__"] = metadata }
    var offset = 0
    for t in tensors {
        let bytes = t.shape.reduce(1, *) * 4
        header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
        offset += bytes
    }
    var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
    while (8 + json.count) % 8 != 0 { json.append(0x20) }
    var n = UInt64(json.count).littleEndian
    return Data(bytes: &n, count: 8) + json
}

/// Writes through `body` into `path.tmp-<pid>`, fsyncs, renames over `path`; on any error the temp file is removed.
public func atomicWrite(path: String, _ body: (FileHandle) throws -> Void) throws {
    let tmp = path + ".tmp-\(getpid())"
    guard FileManager.default.createFile(atPath: tmp, contents: nil) else {
        throw KDError.unwritable(path: path, reason: "cannot create \((tmp as NSString).lastPathComponent) there (missing folder or no permission?)")
    }
    do {
        let fh = try FileHandle(forWritingTo: URL(fileURLWithPath: tmp))
        defer { try? fh.close() }
        try body(fh)
        try fh.synchronize()
        guard rename(tmp, path) == 0 else { throw KDError.unreadable(path: path, reason: "rename failed: \(String(cString: strerror(errno)))") }
    } catch {
        unlink(tmp)
        throw error
    }
}
