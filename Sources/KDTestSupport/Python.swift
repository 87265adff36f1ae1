// Running the independent Python references (PyPI gguf, safetensors, tokenizers, numpy) from tests.
import Foundation

/// Runs `python3 script args…` and returns its stdout; throws with stderr when it exits non-zero.
public func runPython(_ script: String, _ args: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", script] + args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
        throw PythonError(message: "python3 \(script) failed: " + String(decoding: e, as: UTF8.self))
    }
    return String(decoding: o, as: UTF8.self)
}

public struct PythonError: Error, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// A fresh temporary directory, removed by the caller.
public func temporaryDirectory(_ prefix: String) throws -> URL {
    let u = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
    return u
}
