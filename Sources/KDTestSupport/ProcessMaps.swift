// What this process has mapped of a file, for tests that check a loader maps only what it uses.
import Foundation

/// The byte ranges of the file at `path` that this process has mapped (from /proc/self/maps: file offset and length of
/// every mapping of it).
public func mappedRanges(ofFile path: String) throws -> [Range<Int>] {
    let real = (path as NSString).resolvingSymlinksInPath
    // read to the end (procfs reports no size: a one-shot read returns the first page of lines)
    guard let handle = FileHandle(forReadingAtPath: "/proc/self/maps") else { return [] }
    let text = String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
    return text.split(separator: "\n").filter { $0.hasSuffix(real) }.map { line in
        let cols = line.split(separator: " ", omittingEmptySubsequences: true)
        let span = cols[0].split(separator: "-").map { Int($0, radix: 16)! }, offset = Int(cols[2], radix: 16)!
        return offset..<(offset + span[1] - span[0])
    }
}
