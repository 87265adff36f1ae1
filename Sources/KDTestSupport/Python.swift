// Running the independent Python references (PyPI gguf, safetensors, tokenizers, numpy) from tests.
import Foundation
import Synchronization

/// Runs a program to completion: the parent's environment plus `env`, `stdin` written then closed; stdout and
/// stderr are read before waiting (a full pipe would deadlock otherwise). `mergeOutput` sends both to `out`.
public func runProcess(_ executable: URL, _ args: [String], in dir: URL? = nil, env: [String: String] = [:],
                       stdin: String? = nil, mergeOutput: Bool = false) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = executable
    p.arguments = args
    if let dir { p.currentDirectoryURL = dir }
    p.environment = ProcessInfo.processInfo.environment.merging(env) { _, new in new }
    let out = Pipe(), err = mergeOutput ? out : Pipe(), inp = Pipe()
    p.standardOutput = out
    p.standardError = err
    if stdin != nil { p.standardInput = inp }
    try p.run()
    if let stdin {
        inp.fileHandleForWriting.write(Data(stdin.utf8))
        try inp.fileHandleForWriting.close()
    }
    // stderr drains on its own thread (a full pipe would block the child); reads retry on EINTR, which Foundation's
    // readDataToEndOfFile turns into a crash
    let errData = Mutex(Data())
    let errDone = DispatchSemaphore(value: 0)
    if !mergeOutput {
        let fd = err.fileHandleForReading.fileDescriptor
        Thread.detachNewThread {
            let d = readToEnd(fd)
            errData.withLock { $0 = d }
            errDone.signal()
        }
    } else {
        errDone.signal()
    }
    let o = readToEnd(out.fileHandleForReading.fileDescriptor)
    errDone.wait()
    let e = errData.withLock { $0 }
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

func readToEnd(_ fd: Int32) -> Data {
    var out = Data(), buf = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        if n > 0 { out.append(contentsOf: buf[0..<n]); continue }
        if n < 0 && errno == EINTR { continue }
        return out
    }
}

/// Runs `python3 script args…` and returns its stdout; throws with stderr when it exits non-zero.
public func runPython(_ script: String, _ args: [String]) throws -> String {
    let r = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", script] + args)
    guard r.status == 0 else { throw PythonError(message: "python3 \(script) failed: " + r.err) }
    return r.out
}

public struct PythonError: Error, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// A fresh temporary directory, removed by the caller.
public func temporaryDirectory(_ prefix: String, removeAtExit: Bool = false) throws -> URL {
    let u = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
    if removeAtExit {
        exitCleanup.withLock { dirs in
            if dirs.isEmpty { atexit { exitCleanup.withLock { for d in $0 { try? FileManager.default.removeItem(atPath: d) } } } }
            dirs.append(u.path)
        }
    }
    return u
}

/// Folders that live as long as the test process (fixtures made once), removed when it exits.
let exitCleanup = Mutex<[String]>([])
