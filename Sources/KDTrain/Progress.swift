// What a run prints and records as it goes: a progress line per step (redrawn on a terminal, kept every
// `log_every` steps), an evaluation line, and the same figures as metrics records (rank 0's JSONL and TensorBoard).
import Foundation
import KDCore
import KDModel

/// The progress of one `run` call: tokens and time since it began.
struct ProgressLog {
    unowned let trainer: Trainer
    let begin = monotonicSeconds()
    var tokensSeen = 0, steps = 0

    init(trainer: Trainer) { self.trainer = trainer }

    /// A step's line and metrics record.
    mutating func step(_ s: StepStats) {
        let tr = trainer, t = tr.config.train, objective = tr.kdLabel
        tokensSeen += s.tokens
        steps += 1
        let elapsed = monotonicSeconds() - begin
        let hidden = tr.hidden != nil
        if let metrics = tr.metrics {
            var v: [(String, Double)] = [("loss", s.loss)]
            if tr.hasTeacher { v += [("ce", s.ce), (objective, s.kd), ("agreement", s.agreement)] }
            if hidden { v.append(("hidden", s.hidden)) }
            v += [("lr", Double(s.lr)), ("grad_norm", s.gradNorm), ("tokens_per_s", Double(s.tokens) / s.seconds),
                  ("step_seconds", s.seconds), ("peak_rss_mib", Double(ProcessMemory.peakRSSBytes()) / 1048576)]
            if tr.comm.worldSize > 1 { v.append(("comm_exposed_ms", 1000 * s.exposedCommSeconds)) }
            if s.source == .rollout { v.append(("reward", s.reward)) }
            metrics.write(MetricRecord(step: s.step, kind: .train, values: v))
        }
        let logged = s.step % t.logEvery == 0 || s.step == 1 || s.step == t.steps
        guard logged || KDLog.interactive else { return }
        let eta = elapsed / Double(steps) * Double(t.steps - s.step)
        let comm = tr.comm.worldSize > 1 ? String(format: " | comm exposed %.0f ms", 1000 * s.exposedCommSeconds) : ""
        var parts = tr.hasTeacher ? String(format: " (ce %.4f, %@ %.4f, agree %.1f%%%@)", s.ce, objective, s.kd, 100 * s.agreement,
                                           hidden ? String(format: ", hidden %.4f", s.hidden) : "") : ""
        if s.source != .corpus { parts += " [\(s.source.rawValue)\(s.source == .rollout ? String(format: ", reward %.3f", s.reward) : "")]" }
        let line = String(format: "step %5d/%d | loss %.4f%@ | lr %.2e | grad norm %.3f | %.0f tok/s | ETA %@%@",
                          s.step, t.steps, s.loss, parts, s.lr, s.gradNorm, Double(tokensSeen) / elapsed, formatDuration(eta), comm)
        // on a terminal the line is redrawn every step; a plain line stays behind every log_every steps
        if KDLog.interactive && !logged { KDLog.progress(line) } else { KDLog.info(line) }
    }

    /// An evaluation's line and metrics record.
    func evaluation(_ v: LossSum) {
        let tr = trainer, objective = tr.kdLabel
        let kd = tr.hasTeacher ? String(format: " | val %@ %.4f | agree %.1f%%", objective, v.kdMean, 100 * v.agreement) : ""
        KDLog.info(String(format: "eval  step %5d | val ce %.4f | val ppl %.2f%@", tr.step, v.mean, Foundation.exp(v.mean), kd))
        var vals: [(String, Double)] = [("ce", v.mean), ("ppl", Foundation.exp(v.mean))]
        if tr.hasTeacher { vals += [(objective, v.kdMean), ("agreement", v.agreement)] }
        tr.metrics?.write(MetricRecord(step: tr.step, kind: .eval, values: vals))
    }
}

/// "1h02m", "3m05s", "12s".
public func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    if s >= 3600 { return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60) }
    if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
    return "\(s)s"
}
