// Where a run's numbers go besides the terminal: `metrics.jsonl` (one JSON object per training step and per
// evaluation) and TensorBoard event files, both in the run directory and written by rank 0 only.
import Foundation
import KDCore

/// What a metrics record is about (its `kind` field in metrics.jsonl, its TensorBoard tag prefix).
public enum MetricKind: String, Sendable, CaseIterable {
    /// One optimizer step.
    case train
    /// A validation pass.
    case eval
}

/// One record of the metrics log: a step number, what kind of record it is, named values.
public struct MetricRecord: Sendable, Equatable {
    public var step: Int
    public var kind: MetricKind
    public var values: [(String, Double)]

    public init(step: Int, kind: MetricKind, values: [(String, Double)]) { self.step = step; self.kind = kind; self.values = values }

    public static func == (a: MetricRecord, b: MetricRecord) -> Bool {
        a.step == b.step && a.kind == b.kind && a.values.elementsEqual(b.values) { $0.0 == $1.0 && $0.1 == $1.1 }
    }

    /// `{"step":12,"kind":"train","time":…,"loss":…}` with the values in their given order; non-finite values as null.
    func jsonLine(time: Double) -> String {
        var s = "{\"step\":\(step),\"kind\":\"\(kind.rawValue)\",\"time\":\(String(format: "%.3f", time))"
        for (k, v) in values { s += ",\"\(k)\":" + (v.isFinite ? "\(v)" : "null") }
        return s + "}\n"
    }
}

/// Appends records to `RUN_DIR/metrics.jsonl` and `RUN_DIR/tensorboard/events.out.tfevents.*`.
public final class MetricsLog {
    public let dir: String
    let jsonl: FileHandle
    let events: FileHandle

    /// Opens the logs of run directory `dir`. A run resumed at `resumedStep` first drops the records of later steps
    /// (they are about to be trained again); a fresh run (step 0) starts an empty `metrics.jsonl`. Each launch writes
    /// a new TensorBoard event file; a resumed one opens it with a session restart, so TensorBoard drops the same steps.
    public init(dir: String, resumedStep: Int) throws {
        self.dir = dir
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/tensorboard", withIntermediateDirectories: true)
        let path = dir + "/metrics.jsonl"
        var kept = ""
        if resumedStep > 0, let old = try? String(contentsOfFile: path, encoding: .utf8) {
            for line in old.split(separator: "\n") {
                if let s = MetricsLog.step(ofLine: line), s <= resumedStep { kept += line + "\n" }
            }
        }
        try Data(kept.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        guard let j = FileHandle(forWritingAtPath: path) else { throw KDError.unwritable(path: path, reason: "cannot open it for appending") }
        j.seekToEndOfFile()
        jsonl = j
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        let now = Date().timeIntervalSince1970
        let eventsPath = dir + "/tensorboard/events.out.tfevents.\(Int(now)).\(String(cString: host)).\(getpid())"
        guard fm.createFile(atPath: eventsPath, contents: nil), let e = FileHandle(forWritingAtPath: eventsPath) else {
            throw KDError.unwritable(path: eventsPath, reason: "cannot create the TensorBoard event file")
        }
        events = e
        // the first event names the file format version, as TensorFlow's writers do
        var first = ProtoWriter()
        first.double(1, now)
        first.bytes(3, Array("brain.Event:2".utf8))
        e.write(Data(TFRecord.frame(first.bytes)))
        if resumedStep > 0 {
            // SessionLog START at the first retrained step: TensorBoard drops the older files' records from there on
            var session = ProtoWriter()
            session.varint(1, 1)
            var restart = ProtoWriter()
            restart.double(1, now)
            restart.varint(2, UInt64(resumedStep + 1))
            restart.bytes(7, session.bytes)
            e.write(Data(TFRecord.frame(restart.bytes)))
        }
    }

    deinit {
        try? jsonl.close()
        try? events.close()
    }

    static func step(ofLine line: Substring) -> Int? {
        guard let r = line.range(of: "\"step\":") else { return nil }
        return Int(line[r.upperBound...].prefix { $0.isNumber })
    }

    /// Writes one record to both logs (scalars under the tag `kind/name`).
    public func write(_ r: MetricRecord) {
        let now = Date().timeIntervalSince1970
        jsonl.write(Data(r.jsonLine(time: now).utf8))
        var summary = ProtoWriter()
        for (k, v) in r.values where v.isFinite {
            var value = ProtoWriter()
            value.bytes(1, Array("\(r.kind.rawValue)/\(k)".utf8))
            value.float(2, Float(v))
            summary.bytes(1, value.bytes)
        }
        var event = ProtoWriter()
        event.double(1, now)
        event.varint(2, UInt64(r.step))
        event.bytes(5, summary.bytes)
        events.write(Data(TFRecord.frame(event.bytes)))
    }
}

/// The few protobuf wire-format encoders a TensorBoard `Event` needs.
struct ProtoWriter {
    var bytes: [UInt8] = []

    mutating func rawVarint(_ v: UInt64) {
        var v = v
        while v >= 0x80 { bytes.append(UInt8(v & 0x7f) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }
    mutating func varint(_ field: Int, _ v: UInt64) { rawVarint(UInt64(field << 3)); rawVarint(v) }
    mutating func double(_ field: Int, _ v: Double) {
        rawVarint(UInt64(field << 3 | 1))
        withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 }
    }
    mutating func float(_ field: Int, _ v: Float) {
        rawVarint(UInt64(field << 3 | 5))
        withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 }
    }
    mutating func bytes(_ field: Int, _ b: [UInt8]) {
        rawVarint(UInt64(field << 3 | 2))
        rawVarint(UInt64(b.count))
        bytes += b
    }
}

/// TensorFlow's record framing: length, masked CRC-32C of the length, data, masked CRC-32C of the data.
public enum TFRecord {
    public static func frame(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        withUnsafeBytes(of: UInt64(data.count).littleEndian) { out += $0 }
        let lenCRC = masked(crc32c(out))
        withUnsafeBytes(of: lenCRC.littleEndian) { out += $0 }
        out += data
        withUnsafeBytes(of: masked(crc32c(data)).littleEndian) { out += $0 }
        return out
    }

    static func masked(_ crc: UInt32) -> UInt32 { ((crc >> 15) | (crc << 17)) &+ 0xa282_ead8 }

    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82f6_3b78 : c >> 1 }
        return c
    }

    /// CRC-32C (Castagnoli), as TFRecord uses.
    public static func crc32c<C: Collection>(_ data: C) -> UInt32 where C.Element == UInt8 {
        var c: UInt32 = 0xffff_ffff
        for b in data { c = table[Int((c ^ UInt32(b)) & 0xff)] ^ (c >> 8) }
        return c ^ 0xffff_ffff
    }
}
