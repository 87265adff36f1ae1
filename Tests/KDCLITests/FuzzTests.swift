// The CI-sized fuzz run (Launch/fuzz.py): mutants of every format the program reads, fed to the commands that read
// them. Each must be refused with a one-line message or accepted; none may crash, hang or exit without a message.
import Foundation
import KDTestSupport
import Testing

@Test func mutatedFilesAreRefusedOrAcceptedNeverCrashOrHang() throws {
    let mutants = ProcessInfo.processInfo.environment["DISTILL_FUZZ_MUTANTS"] ?? "300"
    let script = repoRoot.appendingPathComponent("Launch/fuzz.py").path
    let r = try runProcess(URL(fileURLWithPath: "/usr/bin/env"),
                           ["python3", script, "--mutants", mutants, "--distill", try distillBinary().path, "--json", "--jobs", "2"])
    let json = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: [String: Any]], "fuzz.py: \(r.err)")
    #expect(Set(json.keys) == ["gguf", "safetensors", "config", "tokenizer", "yaml", "shards", "checkpoint", "cache"])
    for (format, counts) in json {
        let n = { (k: String) in counts[k] as? Int ?? -1 }
        #expect(n("crash") == 0 && n("hang") == 0 && n("silent") == 0, "\(format): \(counts)")
        // the mutations reach the checks: most mutants of a header are refused, and some pass (a changed weight)
        #expect(n("refused") > n("runs") / 10, "\(format): \(counts)")
        #expect(n("runs") >= Int(mutants)!, "\(format): \(counts)")
    }
    #expect(r.status == 0, "fuzz.py exit \(r.status): \(r.err)")
}
