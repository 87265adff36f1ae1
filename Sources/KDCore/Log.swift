// Logging and process facts shared by every target: one writer to stderr, peak RSS from /proc.
import Foundation
import Synchronization

/// Minimal logger: only rank 0 prints progress; errors from any rank carry a `[rank r/w]` prefix.
public enum KDLog {
    static let rankValue = Atomic<Int>(0), worldSizeValue = Atomic<Int>(1)
    static let quietValue = Atomic<Bool>(false)
    /// A progress line is on screen without its newline (``progress(_:)``).
    static let progressShown = Atomic<Bool>(false)

    /// This process's rank and the job's size, set once when the job starts (messages name them).
    public static var rank: Int {
        get { rankValue.load(ordering: .relaxed) }
        set { rankValue.store(newValue, ordering: .relaxed) }
    }
    public static var worldSize: Int {
        get { worldSizeValue.load(ordering: .relaxed) }
        set { worldSizeValue.store(newValue, ordering: .relaxed) }
    }
    /// No informational lines at all (tests, benchmarks).
    public static var quiet: Bool {
        get { quietValue.load(ordering: .relaxed) }
        set { quietValue.store(newValue, ordering: .relaxed) }
    }

    /// Standard output is a terminal: progress lines are redrawn in place (DISTILL_PROGRESS=plain turns it off).
    public static var interactive: Bool {
        isatty(STDOUT_FILENO) != 0 && ProcessInfo.processInfo.environment["DISTILL_PROGRESS"] != "plain"
    }

    /// Progress and informational lines; printed by rank 0 only, to stdout. Replaces a progress line on screen.
    public static func info(_ message: @autoclosure () -> String) {
        guard rank == 0, !quiet else { return }
        if progressShown.exchange(false, ordering: .relaxed) { print("\r\u{1B}[2K", terminator: "") }
        print(message())
        fflush(nil)
    }

    /// A line redrawn in place on a terminal (carriage return, erase line, no newline); rank 0 only.
    public static func progress(_ line: String) {
        guard rank == 0, !quiet else { return }
        print("\r\u{1B}[2K" + line, terminator: "")
        progressShown.store(true, ordering: .relaxed)
        fflush(nil)
    }

    /// Errors and warnings; every rank prints, to stderr, prefixed with its rank when there are several.
    public static func error(_ message: String) {
        let prefix = worldSize > 1 ? "[rank \(rank)/\(worldSize)] " : ""
        FileHandle.standardError.write(Data((prefix + message + "\n").utf8))
    }
}

#if os(Linux)
/// glibc's `int malloc_trim(size_t pad)` (malloc.h is outside the Glibc module).
@_silgen_name("malloc_trim") private func glibcMallocTrim(_ pad: Int) -> Int32
#endif

/// Memory facts of this process, read from /proc (Linux).
public enum ProcessMemory {
    /// Peak resident set size in bytes (VmHWM), or 0 where /proc is unavailable.
    public static func peakRSSBytes() -> Int { readStatusKB("VmHWM:") * 1024 }

    /// This machine's physical memory in bytes (sysconf), or Int.max where it cannot be read.
    public static var physicalBytes: Int {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, size > 0 else { return Int.max }
        return pages.multipliedReportingOverflow(by: size).overflow ? Int.max : pages * size
    }

    /// Resets the peak RSS to the current RSS (writes 5 to /proc/self/clear_refs), so peaks can be measured per phase.
    @discardableResult
    public static func resetPeak() -> Bool {
        guard let fh = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? fh.close() }
        do { try fh.write(contentsOf: Data("5".utf8)) } catch { return false }
        return true
    }

    /// Gives the heap's free pages back to the system (glibc's malloc_trim): after a phase that allocated and freed
    /// much (file headers, hashing, JSON), so that resident memory is what the process holds.
    public static func returnFreedMemory() {
        #if os(Linux)
        _ = glibcMallocTrim(0)
        #endif
    }

    /// Peak address space in bytes (VmPeak): what `ulimit -v` limits.
    public static func peakAddressSpaceBytes() -> Int { readStatusKB("VmPeak:") * 1024 }

    /// Address space now, in bytes (VmSize).
    public static func addressSpaceBytes() -> Int { readStatusKB("VmSize:") * 1024 }

    /// Resident set size now, in bytes (VmRSS), or 0 where /proc is unavailable.
    public static func currentRSSBytes() -> Int { readStatusKB("VmRSS:") * 1024 }

    /// The memory one rank of this program can have: its cgroup's limit (v2 `memory.max`, v1
    /// `memory.limit_in_bytes`) divided among the processes of this program in that cgroup, else the node's
    /// MemAvailable divided among `ranksOnNode`. `source` says which, for the memory plan's line.
    public static func rankLimit(ranksOnNode: Int) -> (bytes: Int, source: String) {
        if let (dir, limit) = cgroupLimit() {
            let mine = (try? String(contentsOfFile: "/proc/self/comm", encoding: .utf8)) ?? ""
            let procs = ((try? String(contentsOfFile: dir + "/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n")
            let sharing = max(1, procs.filter { (try? String(contentsOfFile: "/proc/\($0)/comm", encoding: .utf8)) == mine }.count)
            return (limit / sharing, String(format: "cgroup limit %.2f GiB", Double(limit) / 1073741824)
                        + (sharing > 1 ? " shared by \(sharing) processes" : "") + " (\(dir))")
        }
        let available = readKB(file: "/proc/meminfo", "MemAvailable:") * 1024, ranks = max(1, ranksOnNode)
        return (available / ranks, String(format: "MemAvailable %.2f GiB", Double(available) / 1073741824)
                    + (ranks > 1 ? " / \(ranks) ranks on this node" : ""))
    }

    /// The folder and limit of this process's memory cgroup, when a limit below the machine's memory is set.
    static func cgroupLimit() -> (String, Int)? {
        guard let lines = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
        for line in lines.split(separator: "\n") {
            let f = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            guard f.count == 3 else { continue }
            let (dir, file) = f[0] == "0" && f[1].isEmpty ? ("/sys/fs/cgroup" + f[2], "memory.max")
                : f[1].split(separator: ",").contains("memory") ? ("/sys/fs/cgroup/memory" + f[2], "memory.limit_in_bytes") : ("", "")
            guard !dir.isEmpty, let text = try? String(contentsOfFile: dir + "/" + file, encoding: .utf8),
                  let limit = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), limit < physicalBytes else { continue }
            return (dir, limit)
        }
        return nil
    }

    static func readStatusKB(_ key: String) -> Int { readKB(file: "/proc/self/status", key) }

    static func readKB(file: String, _ key: String) -> Int {
        guard let s = try? String(contentsOfFile: file, encoding: .utf8) else { return 0 }
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
