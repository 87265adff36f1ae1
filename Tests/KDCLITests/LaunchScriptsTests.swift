// Launch/: what a user runs at the top, everything else (comparisons, benchmarks, reference makers) in Launch/lab/.
// Every script a README or another script runs is executable (a missing run bit fails "Permission denied" only when
// someone runs it), and names follow one style.
import Foundation
import Testing

/// Every file under Launch/, relative to it.
func launchFiles() throws -> [String] {
    let root = repoRoot.appendingPathComponent("Launch")
    let all = FileManager.default.enumerator(atPath: root.path)?.compactMap { $0 as? String } ?? []
    return all.filter { !$0.hasPrefix(".") && !isDirectory(root.appendingPathComponent($0)) }.sorted()
}

func isDirectory(_ url: URL) -> Bool {
    var dir: ObjCBool = false
    return FileManager.default.fileExists(atPath: url.path, isDirectory: &dir) && dir.boolValue
}

@Test func everyLaunchScriptWithAShebangIsExecutableAndEveryOtherIsSourced() throws {
    let files = try launchFiles()
    #expect(files.contains("distill_mpi.sh") && files.contains("lab/compare_common.sh"))
    for f in files where f.hasSuffix(".sh") || f.hasSuffix(".py") || f.hasSuffix(".sbatch") {
        let path = repoRoot.appendingPathComponent("Launch/\(f)").path
        let first = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n", maxSplits: 1).first.map(String.init) ?? ""
        if first.hasPrefix("#!") {
            #expect(FileManager.default.isExecutableFile(atPath: path), "Launch/\(f) starts with \(first) but has no run bit (chmod +x)")
        } else {
            // a helper sourced by other scripts says so on its first line and is not run on its own
            #expect(first.hasPrefix("# Sourced"), "Launch/\(f): neither a script (#!) nor a sourced helper ('# Sourced by ...')")
            #expect(!FileManager.default.isExecutableFile(atPath: path), "Launch/\(f) is sourced, not run: no run bit")
        }
    }
}

@Test func launchHoldsWhatAUserRunsAndLabTheRest() throws {
    let top = try launchFiles().filter { !$0.contains("/") }
    let userFacing: Set = ["quickstart.sh", "test.sh", "setup.sh", "fetch_teacher.sh", "fetch_heldout.sh", "distill_mpi.sh", "restart.sh",
                           "slurm.sbatch", "recipe.sh", "chaos.sh", "sigint_default.sh", "fuzz.py", "synthetic_teacher.py", "frontier.sh", "frontier.py",
                           "fetch_corpus.sh"]
    #expect(Set(top) == userFacing, "Launch/ top level: \(top.sorted()); move experiments, benchmarks and reference makers to Launch/lab/")
    for f in try launchFiles() {
        let name = (f as NSString).lastPathComponent
        #expect(!name.contains("-"), "Launch/\(f): names use underscores (one style)")
    }
}
