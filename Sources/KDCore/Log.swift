// Logging and process facts shared by every target: one writer to stderr, peak RSS from /proc.
import Foundation

/// Minimal logger: only rank 0 prints progress; errors from any rank carry a `[rank r/w]` prefix.
public enum KDLog {
    nonisolated(unsafe) public static var rank = 0
    nonisolated(unsafe) public static var worldSize = 1
    nonisolated(unsafe) public static var quiet = false
    /// A progress line is on screen without its newline (``progress(_:)``).
    nonisolated(unsafe) static var progressShown = false

    /// Standard output is a terminal: progress lines are redrawn in place (DISTILL_PROGRESS=plain turns it off).
    public static var interactive: Bool {
        isatty(STDOUT_FILENO) != 0 && ProcessInfo.processInfo.environment["DISTILL_PROGRESS"] != "plain"
    }

    /// Progress and informational lines; printed by rank 0 only, to stdout. Replaces a progress line on screen.
    public static func info(_ message: @autoclosure () -> String) {
        guard rank == 0, !quiet else { return }
        if progressShown { print("\r\u{1B}[2K", terminator: ""); progressShown = false }
        print(message())
        fflush(stdout)
    }

    /// A line redrawn in place on a terminal (carriage return, erase line, no newline); rank 0 only.
    public static func progress(_ line: String) {
        guard rank == 0, !quiet else { return }
        print("\r\u{1B}[2K" + line, terminator: "")
        progressShown = true
        fflush(stdout)
    }

    /// Errors and warnings; every rank prints, to stderr, prefixed with its rank when there are several.
    public static func error(_ message: String) {
        let prefix = worldSize > 1 ? "[rank \(rank)/\(worldSize)] " : ""
        FileHandle.standardError.write(Data((prefix + message + "\n").utf8))
    }
}

/// Memory facts of this process, read from /proc (Linux).
public enum ProcessMemory {
    /// Peak resident set size in bytes (VmHWM), or 0 where /proc is unavailable.
    public static func peakRSSBytes() -> Int { readStatusKB("VmHWM:") * 1024 }

    /// Resets the peak RSS to the current RSS (writes 5 to /proc/self/clear_refs), so peaks can be measured per phase.
    @discardableResult
    public static func resetPeak() -> Bool {
        guard let fh = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? fh.close() }
        do { try fh.write(contentsOf: Data("5".utf8)) } catch { return false }
        return true
    }

    static func readStatusKB(_ key: String) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix(key) {
            let digits = line.dropFirst(key.count).filter { $0.isNumber }
            return Int(digits) ?? 0
        }
        return 0
    }
}

/// Monotonic wall clock in seconds.
@inlinable
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
