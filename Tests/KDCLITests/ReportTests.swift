// The numbers a run leaves behind: metrics.jsonl, TensorBoard event files (read by TensorBoard's own reader), and
// the HTML report (rendered by a headless Chromium).
import Foundation
import KDTestSupport
import Testing

/// Parses metrics.jsonl into (kind, step, values) records.
func metricRecords(_ path: URL) throws -> [(kind: String, step: Int, values: [String: Double])] {
    try String(contentsOf: path, encoding: .utf8).split(separator: "\n").map { line in
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        var v: [String: Double] = [:]
        for (k, x) in obj { if let d = x as? Double { v[k] = d } }
        return (try #require(obj["kind"] as? String), try #require(obj["step"] as? Int), v)
    }
}

@Suite(.serialized) struct RunRecordsAndReport {
    /// A distillation run of the tiny config against a tiny teacher: 6 steps, evaluations every 2, checkpoints every 3.
    func distillRun(_ dir: URL) throws -> (config: String, out: String) {
        try saveTinyTeacher(dir.appendingPathComponent("teacher"), layers: 2, seed: 7)
        let section = "teacher:\n  path: \(dir.appendingPathComponent("teacher").path)\ndistill:\n  objective: skew_rkl\n"
        let cfg = try tinyYAML(dir, "run", edits: [("steps: 10", "steps: 6\n  eval_every: 2\n  eval_batches: 1"), ("every: 5", "every: 3"),
                                                   ("keep: 2", "keep: 3"), ("data:\n", section + "data:\n")])
        let r = try runDistill(["train", "--config", cfg, "--sample-tokens", "0"])
        #expect(r.status == 0, "\(r.err)")
        return (cfg, r.out)
    }

    @Test func metricsGoToJSONLinesAndTensorBoardAndSurviveAResume() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (cfg, out) = try distillRun(dir)
        let run = dir.appendingPathComponent("run")
        let records = try metricRecords(run.appendingPathComponent("metrics.jsonl"))
        let train = records.filter { $0.kind == "train" }, eval = records.filter { $0.kind == "eval" }
        #expect(train.map(\.step) == [1, 2, 3, 4, 5, 6])
        #expect(eval.map(\.step) == [0, 2, 4, 6])
        for key in ["loss", "ce", "skew_rkl", "agreement", "lr", "grad_norm", "tokens_per_s", "peak_rss_mib"] {
            #expect(train.allSatisfy { $0.values[key] != nil }, "train records lack \(key)")
        }
        #expect(eval.allSatisfy { $0.values["agreement"].map { (0...1).contains($0) } ?? false })
        // the logged losses are the printed ones
        let printed = out.split(separator: "\n").filter { $0.hasPrefix("step") }.compactMap { line -> Double? in
            guard let r = line.range(of: "loss ") else { return nil }
            return Double(line[r.upperBound...].prefix { $0 != " " })
        }
        #expect(printed.count == 6)
        for (p, t) in zip(printed, train) { #expect(abs(p - t.values["loss"]!) < 6e-5) }

        // TensorBoard's own reader sees the same scalars
        let script = repoRoot.appendingPathComponent("Tests/KDCLITests/Scripts/read_tensorboard.py").path
        let tb = try #require(try JSONSerialization.jsonObject(with: Data(try runPython(script, [run.appendingPathComponent("tensorboard").path]).utf8)) as? [String: [[Double]]])
        let tbLoss = try #require(tb["train/loss"])
        #expect(tbLoss.map { Int($0[0]) } == [1, 2, 3, 4, 5, 6])
        for (a, b) in zip(tbLoss, train) { #expect(abs(a[1] - b.values["loss"]!) <= 1e-6 * max(1, abs(a[1]))) }
        #expect(tb["eval/agreement"]?.map { Int($0[0]) } == [0, 2, 4, 6])
        #expect(tb["train/skew_rkl"]?.count == 6 && tb["train/lr"]?.count == 6)

        // resuming from step 3 drops the records of steps 4–6 before training them again: each step appears once
        let again = try runDistill(["train", "--config", cfg, "--sample-tokens", "0", "--resume", run.appendingPathComponent("step_00000003").path])
        #expect(again.status == 0, "\(again.err)")
        let after = try metricRecords(run.appendingPathComponent("metrics.jsonl"))
        #expect(after.filter { $0.kind == "train" }.map(\.step) == [1, 2, 3, 4, 5, 6])
        #expect(after.filter { $0.kind == "eval" }.map(\.step) == [0, 2, 4, 6])
        // resume is exact, so the retrained steps log the same losses
        for (a, b) in zip(after.filter { $0.kind == "train" }, train) { #expect(a.values["loss"] == b.values["loss"]) }
        // TensorBoard too sees every step once (the second event file restarts the session at step 4)
        let files = try FileManager.default.contentsOfDirectory(atPath: run.appendingPathComponent("tensorboard").path)
        #expect(files.count == 2, "\(files)")
        let tb2 = try #require(try JSONSerialization.jsonObject(with: Data(try runPython(script, [run.appendingPathComponent("tensorboard").path]).utf8)) as? [String: [[Double]]])
        #expect(tb2["train/loss"]?.map { Int($0[0]) } == [1, 2, 3, 4, 5, 6])
        #expect(tb2["eval/agreement"]?.map { Int($0[0]) } == [0, 2, 4, 6])
    }

    @Test func theReportRendersItsPlotsInAHeadlessBrowser() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try distillRun(dir)
        let run = dir.appendingPathComponent("run")
        // a side-by-side evaluation line, as the quickstart appends
        let ev = try runDistill(["eval", "--model", run.appendingPathComponent("step_00000006").path, "--teacher", dir.appendingPathComponent("teacher").path,
                                 "--text", repoRoot.appendingPathComponent("Tests/KDTrainTests/Fixtures/fortunes-sample.txt").path,
                                 "--context", "64", "--max-windows", "4", "--append-to", run.appendingPathComponent("evaluation.jsonl").path, "--label", "student"])
        #expect(ev.status == 0, "\(ev.err)")
        let r = try runDistill(["report", run.path])
        #expect(r.status == 0, "\(r.err)")
        let html = try String(contentsOf: run.appendingPathComponent("report.html"), encoding: .utf8)
        #expect(html.contains("Teacher vs student") && html.contains("<td>student</td>"))
        #expect(!html.contains("<script") && !html.contains("src=") && !html.contains("href="))  // self-contained

        // Chromium lays the page out; a probe appended to a copy measures every curve's rendered box
        let probe = """
        <script>
        const out = [...document.querySelectorAll('svg.plot')].map(svg => {
          const title = svg.querySelector('text').textContent;
          const box = svg.getBoundingClientRect();
          const curves = [...svg.querySelectorAll('.series')].map(p => { const b = p.getBBox(); return [b.x, b.y, b.width, b.height]; });
          return {title, w: box.width, h: box.height, curves};
        });
        const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
        </script>
        """
        let probed = dir.appendingPathComponent("probe.html")
        try html.replacingOccurrences(of: "</body>", with: probe + "</body>").write(to: probed, atomically: true, encoding: .utf8)
        let chrome = try runProcess(URL(fileURLWithPath: "/usr/bin/env"),
                                    ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", probed.absoluteString])
        #expect(chrome.status == 0, "\(chrome.err)")
        let json = try #require(chrome.out.components(separatedBy: "<pre id=\"probe\">").dropFirst().first?.components(separatedBy: "</pre>").first)
        let plots = try #require(try JSONSerialization.jsonObject(with: Data(json.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">").replacingOccurrences(of: "&amp;", with: "&").utf8)) as? [[String: Any]])
        let titles = plots.compactMap { $0["title"] as? String }
        for t in ["Training loss", "Validation cross-entropy", "Top-1 agreement with the teacher", "Throughput"] { #expect(titles.contains(t), "\(titles)") }
        for p in plots {
            let curves = try #require(p["curves"] as? [[Double]])
            #expect((p["w"] as? Double ?? 0) > 300 && (p["h"] as? Double ?? 0) > 200, "\(p)")
            #expect(!curves.isEmpty, "\(p["title"]!): no curve drawn")
            // every curve spans the plot area horizontally and stays inside the picture
            for c in curves {
                #expect(c[2] > 200 && c[0] >= 0 && c[1] >= 0 && c[0] + c[2] <= 660 && c[1] + c[3] <= 320, "\(p["title"]!): curve box \(c)")
            }
        }
    }

    @Test func reportErrorsNameTheProblemAndWriteNothing() throws {
        let dir = try scratchDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = try runDistill(["report", dir.appendingPathComponent("nope").path])
        #expect(missing.status != 0 && missing.err.contains("file not found"), "\(missing.err)")
        let empty = try runDistill(["report", dir.path])
        #expect(empty.status != 0 && empty.err.contains("expected a run directory with metrics.jsonl"), "\(empty.err)")
        try "{\"step\":1,\"kind\":\"train\",\"loss\":2.0}\n{\"step\":2,\"kind\n".write(to: dir.appendingPathComponent("metrics.jsonl"), atomically: true, encoding: .utf8)
        let bad = try runDistill(["report", dir.path])
        #expect(bad.status != 0 && bad.err.contains("metrics.jsonl line 2: expected one JSON object"), "\(bad.err)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("report.html").path))
    }
}
