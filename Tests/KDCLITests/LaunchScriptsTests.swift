// Launch/: what a user runs at the top, everything else (comparisons, benchmarks, reference makers) in Launch/lab/.
// Every script a README or another script runs is executable (a missing run bit fails "Permission denied" only when
// someone runs it), and names follow one style.
import Foundation
import KDData
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
                           "fetch_corpus.sh", "llamacpp_tools.sh"]
    #expect(Set(top) == userFacing, "Launch/ top level: \(top.sorted()); move experiments, benchmarks and reference makers to Launch/lab/")
    for f in try launchFiles() {
        let name = (f as NSString).lastPathComponent
        #expect(!name.contains("-"), "Launch/\(f): names use underscores (one style)")
    }
}

/// Launch/fetch_corpus.sh books+teacher adds text sampled from the teacher (kept beside the corpus, and reused) to the
/// books: one more file in the corpus, its bytes included; without a model to sample it says so in one line.
@Test func theBooksAndTeacherCorpusAddsTheTeachersSample() throws {
    let dir = try scratchDir()
    defer { try? FileManager.default.removeItem(at: dir) }
    let out = dir.appendingPathComponent("books-teacher")
    let env = ["SAMPLE_TOKENS": "64", "SAMPLE_BATCH": "2", "SAMPLE_LENGTH": "32"]
    let r = try launch("fetch_corpus.sh", ["books+teacher", teacher, out.path], env: env)
    #expect(r.status == 0, "\(r.out)")
    let sample = try String(contentsOf: dir.appendingPathComponent("books-teacher.sample.jsonl"), encoding: .utf8)
    let texts = sample.split(separator: "\n").compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: String])?["text"] }
    #expect(!texts.isEmpty)
    let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("prepare.json"))) as? [String: Any])
    let fortunes = try FileManager.default.contentsOfDirectory(atPath: "/usr/share/games/fortunes").filter { !$0.hasSuffix(".dat") && !$0.hasSuffix(".u8") }
    #expect(summary["files"] as? Int == fortunes.count + 6 + 1, "\(summary)")
    #expect((summary["bytesRead"] as? Int ?? 0) > 4_000_000 + texts.map(\.utf8.count).reduce(0, +))
    let bad = try launch("fetch_corpus.sh", ["books+teacher", "bytes", dir.appendingPathComponent("b").path])
    #expect(bad.status != 0 && bad.out.contains("books+teacher samples a model: expected a GGUF file or Hugging Face folder"), "\(bad.out)")
}

/// Launch/fetch_corpus.sh books reads Jane Austen's six novels out of Debian's r-cran-janeaustenr (its R data file,
/// without R) whole: prepared with the byte tokenizer, the shards hold the text itself — every novel's first and last
/// sentence is there, and the corpus is the fortunes' bytes plus the novels' 4.03 MB (the shortest is 0.43 MB: a novel lost, or cut short,
/// fails both).
@Test func theBooksCorpusHoldsAustensSixNovelsWhole() throws {
    let dir = try scratchDir()
    defer { try? FileManager.default.removeItem(at: dir) }
    var bytes: [String: Int] = [:]
    for corpus in ["books", "fortunes"] {
        let out = dir.appendingPathComponent(corpus)
        let r = try launch("fetch_corpus.sh", [corpus, "bytes", out.path])
        #expect(r.status == 0, "\(r.out)")
        let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("prepare.json"))) as? [String: Any]
        bytes[corpus] = summary?["bytesRead"] as? Int ?? 0
    }
    let added = (bytes["books"] ?? 0) - (bytes["fortunes"] ?? 0)
    #expect(added > 3_950_000 && added < 4_100_000, "the novels added \(added) bytes to the fortunes' \(bytes["fortunes"] ?? 0)")
    var text = [UInt8]()
    for split in ["train.bin", "validation.bin"] {
        let shard = try TokenShard.read(path: dir.appendingPathComponent("books/\(split)").path)
        text += shard.tokens.compactMap { $0 >= 0 && $0 < 256 ? UInt8($0) : nil }
    }
    let corpus = String(decoding: text, as: UTF8.self)
    let lines = ["Emma Woodhouse, handsome, clever, and rich", "About thirty years ago Miss Maria Ward",
                 "No one who had ever seen Catherine Morland", "Sir Walter Elliot, of Kellynch Hall",
                 "It is a truth universally acknowledged", "The family of Dashwood had long been settled",
                 "in the perfect happiness of the union", "had been the means of uniting them",
                 "within the view and patronage of Mansfield Park", "more distinguished in its domestic virtues",
                 "producing coolness between their husbands"]
    let missing = lines.filter { !corpus.contains($0) }  // (not the corpus itself in the message: 6.6 MB)
    #expect(missing.isEmpty, "missing from the books corpus: \(missing)")
}
