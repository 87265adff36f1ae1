// `distill report`: one self-contained HTML page (inline SVG, no script, no network) from the files a run leaves in
// its directory: metrics.jsonl (training and validation records), evaluation.jsonl (side-by-side evaluations
// appended by `distill eval --append-to`) and the newest checkpoint's config.
import ArgumentParser
import Foundation
import KDCore
import KDTrain

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write an HTML report (loss curves, throughput, validation, teacher vs student) of one or more runs.")
    @Argument(help: "Run directories (checkpoint.dir of a config); a folder of run directories counts as each of them.")
    var runs: [String]
    @Option(help: "Output HTML file (default: report.html inside the first run directory).") var out: String?
    @Option(help: "Page title.") var title = "distill run report"

    func validate() throws {
        if runs.isEmpty { throw ValidationError("give at least one run directory") }
    }

    func run() throws {
        do {
            var loaded: [RunRecords] = []
            for dir in runs { loaded += try RunRecords.load(dir) }
            let html = renderReport(loaded, title: title)
            let path = out ?? (runs[0] as NSString).appendingPathComponent("report.html")
            do { try Data(html.utf8).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
                throw KDError.unwritable(path: path, reason: "\(error.localizedDescription)")
            }
            print("report: wrote \(path) (\(loaded.count) run\(loaded.count == 1 ? "" : "s"): \(loaded.map(\.name).joined(separator: ", ")))")
        } catch { throw fail(error) }
    }
}

/// What a run directory holds for a report.
struct RunRecords {
    var name: String
    var dir: String
    /// step → values of "train" records, and the "eval" records, in file order.
    var train: [(step: Int, values: [String: Double])] = []
    var eval: [(step: Int, values: [String: Double])] = []
    /// Lines of evaluation.jsonl.
    var evaluations: [[String: Any]] = []
    /// The newest checkpoint's config (YAML), if any.
    var config: String?

    /// The run in `dir`, or each run directory directly inside it.
    static func load(_ dir: String) throws -> [RunRecords] {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else { throw KDError.fileNotFound(path: dir) }
        let own = (dir as NSString).appendingPathComponent("metrics.jsonl")
        if fm.fileExists(atPath: own) { return [try RunRecords(dir: dir)] }
        let children = ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).sorted()
            .map { (dir as NSString).appendingPathComponent($0) }
            .filter { fm.fileExists(atPath: ($0 as NSString).appendingPathComponent("metrics.jsonl")) }
        guard !children.isEmpty else {
            throw KDError.invalidInput(what: dir, expected: "a run directory with metrics.jsonl (written by distill train), or a folder of them",
                                       found: "no metrics.jsonl in it or its subfolders")
        }
        return try children.map { try RunRecords(dir: $0) }
    }

    init(dir: String) throws {
        self.dir = dir
        name = ((dir as NSString).standardizingPath as NSString).lastPathComponent
        let path = (dir as NSString).appendingPathComponent("metrics.jsonl")
        for (i, obj) in try RunRecords.jsonLines(path).enumerated() {
            guard let step = obj["step"] as? Int, let kind = (obj["kind"] as? String).flatMap(MetricKind.init(rawValue:)) else {
                throw KDError.invalidInput(what: "\(path) line \(i + 1)", expected: "\"step\" and \"kind\" (\(MetricKind.allCases.map(\.rawValue).joined(separator: " or "))) fields",
                                           found: "\(obj.keys.sorted())")
            }
            var values: [String: Double] = [:]
            for (k, v) in obj where k != "step" && k != "kind" && k != "time" { if let d = v as? Double { values[k] = d } }
            switch kind {
            case .eval: eval.append((step, values))
            case .train: train.append((step, values))
            }
        }
        let ev = (dir as NSString).appendingPathComponent("evaluation.jsonl")
        if FileManager.default.fileExists(atPath: ev) { evaluations = try RunRecords.jsonLines(ev) }
        let steps = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasPrefix("step_") }.sorted()
        if let newest = steps.last,
           let d = FileManager.default.contents(atPath: "\(dir)/\(newest)/state.json"),
           let state = try? JSONSerialization.jsonObject(with: d) as? [String: Any] {
            config = state["config"] as? String
        }
    }

    /// One JSON object per non-empty line; a malformed line names its file and number.
    static func jsonLines(_ path: String) throws -> [[String: Any]] {
        guard let data = FileManager.default.contents(atPath: path) else { throw KDError.unreadable(path: path, reason: "cannot open it") }
        var out: [[String: Any]] = []
        for (i, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated()
        where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw KDError.invalidInput(what: "\(path) line \(i + 1)", expected: "one JSON object", found: "'\(line.prefix(60))'")
            }
            out.append(obj)
        }
        return out
    }

    func series(_ key: String, eval: Bool = false) -> [(Double, Double)] {
        (eval ? self.eval : train).compactMap { r in r.values[key].map { (Double(r.step), $0) } }
    }
}

// MARK: - HTML

func htmlEscape(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
}

func renderReport(_ runs: [RunRecords], title: String) -> String {
    let several = runs.count > 1
    func label(_ r: RunRecords, _ what: String) -> String { several ? "\(r.name) \(what)" : what }
    let divergences = Set(runs.flatMap { $0.train.flatMap { $0.values.keys } })
        .subtracting(["loss", "ce", "agreement", "lr", "grad_norm", "tokens_per_s", "step_seconds", "peak_rss_mib", "comm_exposed_ms", "reward"])
        .sorted()
    var body = ""
    // training loss and its parts: each run's total; for a single run also the cross-entropy and each divergence
    var lossSeries: [(String, [(Double, Double)])] = runs.map { (label($0, "loss"), $0.series("loss")) }
    if !several, let r = runs.first {
        lossSeries.append(("cross-entropy", r.series("ce")))
        for d in divergences { lossSeries.append((d, r.series(d))) }
    }
    body += svgPlot(title: "Training loss", yLabel: "loss per token", series: lossSeries)
    if several {
        for d in divergences {
            body += svgPlot(title: "Training divergence: \(d)", yLabel: d, series: runs.map { ($0.name, $0.series(d)) })
        }
    }
    body += svgPlot(title: "Validation cross-entropy", yLabel: "nats per token", series: runs.map { (label($0, "val ce"), $0.series("ce", eval: true)) })
    let valDiv = runs.flatMap { r in divergences.map { (label(r, "val \($0)"), r.series($0, eval: true)) } }
    if valDiv.contains(where: { !$0.1.isEmpty }) { body += svgPlot(title: "Validation divergence from the teacher", yLabel: "nats per token", series: valDiv) }
    let agree = runs.flatMap { r in [(label(r, "train"), r.series("agreement").map { ($0.0, 100 * $0.1) }),
                                       (label(r, "validation"), r.series("agreement", eval: true).map { ($0.0, 100 * $0.1) })] }
    if agree.contains(where: { !$0.1.isEmpty }) { body += svgPlot(title: "Top-1 agreement with the teacher", yLabel: "%", series: agree) }
    body += svgPlot(title: "Throughput", yLabel: "tokens/s (all ranks)", series: runs.map { (label($0, "tokens/s"), $0.series("tokens_per_s")) })
    body += svgPlot(title: "Learning rate", yLabel: "lr", series: runs.map { (label($0, "lr"), $0.series("lr")) })
    body += svgPlot(title: "Gradient norm (before clipping)", yLabel: "‖g‖", series: runs.map { (label($0, "grad norm"), $0.series("grad_norm")) })
    body += svgPlot(title: "Peak memory of rank 0", yLabel: "MiB", series: runs.map { (label($0, "peak RSS"), $0.series("peak_rss_mib")) })

    // summary table
    var summary = "<h2>Runs</h2><table><tr><th>run</th><th>steps</th><th>final loss</th><th>last val ce</th><th>last val agreement</th><th>median tokens/s</th><th>peak RSS</th></tr>"
    for r in runs {
        let tps = r.series("tokens_per_s").map(\.1).sorted()
        let med = tps.isEmpty ? "–" : String(format: "%.0f", tps[tps.count / 2])
        let lastEval = r.eval.last?.values
        summary += "<tr><td>\(htmlEscape(r.name))</td><td>\(r.train.last?.step ?? 0)</td>"
            + "<td>\(r.train.last?.values["loss"].map { String(format: "%.4f", $0) } ?? "–")</td>"
            + "<td>\(lastEval?["ce"].map { String(format: "%.4f", $0) } ?? "–")</td>"
            + "<td>\(lastEval?["agreement"].map { String(format: "%.1f%%", 100 * $0) } ?? "–")</td>"
            + "<td>\(med)</td><td>\(r.series("peak_rss_mib").map(\.1).max().map { String(format: "%.0f MiB", $0) } ?? "–")</td></tr>"
    }
    summary += "</table>"

    // teacher vs student, from evaluation.jsonl
    var versus = ""
    let evals = runs.flatMap { r in r.evaluations.map { (r, $0) } }
    if !evals.isEmpty {
        versus = "<h2>Teacher vs student</h2><table><tr><th>model</th><th>size on disk</th><th>val NLL</th><th>KL(teacher‖model)</th><th>top-1 agreement</th><th>tokens/s</th></tr>"
        func num(_ o: [String: Any], _ k: String) -> Double? { (o[k] as? NSNumber)?.doubleValue }
        var teacherShown = Set<String>()
        for (r, e) in evals {
            if let tn = num(e, "teacher_mean_nll"), let teacher = e["teacher"] as? String ?? Optional("teacher"), !teacherShown.contains(teacher) {
                teacherShown.insert(teacher)
                versus += "<tr><td>teacher</td><td>\(num(e, "teacher_size_bytes").map { String(format: "%.1f MiB", $0 / 1048576) } ?? "–")</td>"
                    + String(format: "<td>%.4f</td><td>–</td><td>–</td>", tn)
                    + "<td>\(num(e, "teacher_tokens_per_s").map { String(format: "%.0f", $0) } ?? "–")</td></tr>"
            }
            let name = (several ? r.name + ": " : "") + ((e["label"] as? String) ?? (e["model"] as? String) ?? "?")
            versus += "<tr><td>\(htmlEscape(name))</td><td>\(num(e, "size_bytes").map { String(format: "%.1f MiB", $0 / 1048576) } ?? "–")</td>"
                + "<td>\(num(e, "mean_nll").map { String(format: "%.4f", $0) } ?? "–")</td>"
                + "<td>\(num(e, "kl_teacher_model").map { String(format: "%.4f", $0) } ?? "–")</td>"
                + "<td>\(num(e, "top1_agreement").map { String(format: "%.1f%%", 100 * $0) } ?? "–")</td>"
                + "<td>\(num(e, "tokens_per_s").map { String(format: "%.0f", $0) } ?? "–")</td></tr>"
        }
        versus += "</table>"
    }
    var configs = ""
    for r in runs { if let c = r.config { configs += "<h3>\(htmlEscape(r.name)) config</h3><pre>\(htmlEscape(c))</pre>" } }
    let style = """
    body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
    .plots{display:flex;flex-wrap:wrap;gap:12px} svg.plot{background:#fff;border:1px solid #ddd}
    table{border-collapse:collapse;margin:1em 0} td,th{border:1px solid #ccc;padding:4px 10px;text-align:right} td:first-child,th:first-child{text-align:left}
    pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}
    """
    let generated = ISO8601DateFormatter().string(from: Date())
    return "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>\(htmlEscape(title))</title><style>\(style)</style></head><body>"
        + "<h1>\(htmlEscape(title))</h1><p>\(runs.map { htmlEscape($0.dir) }.joined(separator: ", ")) · generated \(generated) by distill report</p>"
        + summary + versus + "<h2>Curves</h2><div class=\"plots\">\(body)</div>" + configs + "</body></html>\n"
}

let plotColors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

/// A line chart as inline SVG: one polyline (class "series") per non-empty series, axes with ticks, a legend.
func svgPlot(title: String, yLabel: String, series: [(String, [(Double, Double)])]) -> String {
    let shown = series.filter { !$0.1.isEmpty }
    let w = 660.0, h = 320.0, left = 70.0, right = 16.0, top = 34.0, bottom = 46.0
    var svg = "<svg class=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\">"
    svg += "<text x=\"\(w / 2)\" y=\"20\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">\(htmlEscape(title))</text>"
    guard !shown.isEmpty else {
        return svg + "<text x=\"\(w / 2)\" y=\"\(h / 2)\" text-anchor=\"middle\" fill=\"#888\">no data</text></svg>"
    }
    let xs = shown.flatMap { $0.1.map(\.0) }, ys = shown.flatMap { $0.1.map(\.1) }.filter(\.isFinite)
    var x0 = xs.min()!, x1 = xs.max()!, y0 = ys.min() ?? 0, y1 = ys.max() ?? 1
    if x1 <= x0 { x0 -= 1; x1 += 1 }
    if y1 <= y0 { let pad = max(abs(y0) * 0.05, 1e-6); y0 -= pad; y1 += pad }
    let yt = niceTicks(y0, y1), xt = niceTicks(x0, x1, integer: true)
    y0 = min(y0, yt.first!); y1 = max(y1, yt.last!)
    let pw = w - left - right, ph = h - top - bottom
    func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * pw }
    func py(_ y: Double) -> Double { top + (1 - (y - y0) / (y1 - y0)) * ph }
    svg += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(pw)\" height=\"\(ph)\" fill=\"none\" stroke=\"#999\"/>"
    for t in yt where t >= y0 && t <= y1 {
        svg += String(format: "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>", left, left + pw, py(t), py(t))
        svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%@</text>", left - 5, py(t) + 4, tickLabel(t))
    }
    for t in xt where t >= x0 && t <= x1 {
        svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">%@</text>", px(t), top + ph + 16, tickLabel(t))
    }
    svg += "<text x=\"\(left + pw / 2)\" y=\"\(h - 8)\" text-anchor=\"middle\" font-size=\"12\">step</text>"
    svg += String(format: "<text transform=\"translate(14,%.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">%@</text>", top + ph / 2, htmlEscape(yLabel))
    for (i, (name, pts)) in shown.enumerated() {
        let color = plotColors[i % plotColors.count]
        let coords = pts.filter { $0.1.isFinite }.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
        if pts.count == 1 {
            svg += String(format: "<circle class=\"series\" cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%@\"/>", px(pts[0].0), py(pts[0].1), color)
        } else {
            svg += "<polyline class=\"series\" data-name=\"\(htmlEscape(name))\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.6\" points=\"\(coords)\"/>"
        }
        let ly = top + 14 + Double(i) * 15
        svg += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"3\" fill=\"%@\"/>", left + pw - 180, ly - 4, color)
        svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">%@</text>", left + pw - 164, ly, htmlEscape(name))
    }
    return svg + "</svg>"
}

/// About five round tick values covering [lo, hi]; whole numbers only with `integer` (steps).
func niceTicks(_ lo: Double, _ hi: Double, integer: Bool = false) -> [Double] {
    let span = hi - lo
    let raw = span / 5, mag = Foundation.pow(10, Foundation.floor(Foundation.log10(raw)))
    var step = [1.0, 2, 2.5, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? 10 * mag
    if integer { step = max(1, step.rounded(.up)) }
    var t = Foundation.floor(lo / step) * step, out: [Double] = []
    while t <= hi + step * 1e-9 { out.append(t); t += step }
    if out.last! < hi { out.append(t) }
    return out
}

func tickLabel(_ v: Double) -> String {
    let a = abs(v)
    if a != 0 && (a < 1e-2 || a >= 1e5) { return String(format: "%.1e", v) }
    if v == v.rounded() { return String(format: "%.0f", v) }
    return String(format: "%g", (v * 1000).rounded() / 1000)
}
