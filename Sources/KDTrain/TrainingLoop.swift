// The loop around the step: evaluation on cadence, progress lines, metrics, checkpoints on cadence or on a stop
// signal, and distillm's threshold that adapts at evaluations.
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDData
import KDFormats
import KDModel
import KDLoss
import KDOps
import KDQuant

extension Trainer {
    /// Validation cross-entropy and (with a teacher) divergence over `evalBatches` sequential micro-batches.
    public func evaluateDetailed() throws -> LossSum? {
        guard let validation else { return nil }
        let t = config.train
        var total = LossSum()
        for i in 0..<t.evalBatches {
            validation.fillSequential(inputs: inputs, targets: targets, first: i * t.microBatch, count: t.microBatch)
            if routing { validation.fillRoutes(routeBuffer, first: i * t.microBatch, count: t.microBatch, sequential: true) }
            let target = try distillTarget(TeacherBatch(tokens: inputs, b: t.microBatch, t: t.seqLen,
                                                        windows: (0..<t.microBatch).map { (i * t.microBatch + $0) % validation.windows },
                                                        validation: true, route: routing ? UnsafePointer(routeBuffer) : nil,
                                                        targets: targets))
            model.forward(tokens: inputs, b: t.microBatch, t: t.seqLen)
            total = total + (target.map { model.distillLoss(targets: targets, target: $0) } ?? model.loss(targets: targets))
        }
        return total
    }

    /// ``evaluateDetailed()`` at the current step, printed and written to the metrics log.
    @discardableResult
    public func evaluateAndLog() throws -> LossSum? {
        guard let v = try evaluateDetailed() else { return nil }
        let objective = kdLabel
        let kd = hasTeacher ? String(format: " | val %@ %.4f | agree %.1f%%", objective, v.kdMean, 100 * v.agreement) : ""
        KDLog.info(String(format: "eval  step %5d | val ce %.4f | val ppl %.2f%@", step, v.mean, Foundation.exp(v.mean), kd))
        var vals: [(String, Double)] = [("ce", v.mean), ("ppl", Foundation.exp(v.mean))]
        if hasTeacher { vals += [(objective, v.kdMean), ("agreement", v.agreement)] }
        metrics?.write(MetricRecord(step: step, kind: "eval", values: vals))
        return v
    }

    /// Mean cross-entropy over `config.train.evalBatches` sequential validation micro-batches (nil without a split).
    public func evaluate() -> Double? {
        guard let validation else { return nil }
        let t = config.train
        var total = LossSum()
        for i in 0..<t.evalBatches {
            validation.fillSequential(inputs: inputs, targets: targets, first: i * t.microBatch, count: t.microBatch)
            model.forward(tokens: inputs, b: t.microBatch, t: t.seqLen)
            total = total + model.loss(targets: targets)
        }
        return total.mean
    }

    /// distillm: the threshold adapts to the validation loss of this evaluation.
    func adaptPolicy(validationLoss: Double) { distillm?.adapt(validationLoss: validationLoss) }

    /// Runs the remaining steps, logging every `log_every` steps and evaluating on cadence; returns every step's stats.
    /// `checkpoints` writes them on the config's cadence; `stopAfter` ends the call after that many steps (a stop
    /// mid-run, for tests and for `distill train --stop-after`).
    @discardableResult
    public func run(checkpoints: Bool = false, stopAfter: Int? = nil, onStep: (StepStats) -> Void = { _ in }) throws -> [StepStats] {
        let t = config.train
        var history: [StepStats] = []
        let begin = monotonicSeconds()
        var tokensSeen = 0
        let interactive = KDLog.interactive
        while step < t.steps {
            let s = try trainStep()
            history.append(s)
            tokensSeen += s.tokens
            onStep(s)
            let elapsed = monotonicSeconds() - begin
            let tps = Double(tokensSeen) / elapsed
            let objective = kdLabel
            if let metrics {
                var v: [(String, Double)] = [("loss", s.loss)]
                if hasTeacher { v += [("ce", s.ce), (objective, s.kd), ("agreement", s.agreement)] }
                if !hiddenPairs.isEmpty { v.append(("hidden", s.hidden)) }
                v += [("lr", Double(s.lr)), ("grad_norm", s.gradNorm), ("tokens_per_s", Double(s.tokens) / s.seconds),
                      ("step_seconds", s.seconds), ("peak_rss_mib", Double(ProcessMemory.peakRSSBytes()) / 1048576)]
                if comm.worldSize > 1 { v.append(("comm_exposed_ms", 1000 * s.exposedCommSeconds)) }
                if s.source == .rollout { v.append(("reward", s.reward)) }
                metrics.write(MetricRecord(step: s.step, kind: "train", values: v))
            }
            let logged = s.step % t.logEvery == 0 || s.step == 1 || s.step == t.steps
            if logged || interactive {
                let eta = elapsed / Double(history.count) * Double(t.steps - s.step)
                let comm = self.comm.worldSize > 1 ? String(format: " | comm exposed %.0f ms", 1000 * s.exposedCommSeconds) : ""
                var parts = hasTeacher ? String(format: " (ce %.4f, %@ %.4f, agree %.1f%%%@)", s.ce, objective, s.kd, 100 * s.agreement,
                                                hiddenPairs.isEmpty ? "" : String(format: ", hidden %.4f", s.hidden)) : ""
                if s.source != .corpus { parts += " [\(s.source.rawValue)\(s.source == .rollout ? String(format: ", reward %.3f", s.reward) : "")]" }
                let line = String(format: "step %5d/%d | loss %.4f%@ | lr %.2e | grad norm %.3f | %.0f tok/s | ETA %@%@",
                                  s.step, t.steps, s.loss, parts, s.lr, s.gradNorm, tps, formatDuration(eta), comm)
                // on a terminal the line is redrawn every step; a plain line stays behind every log_every steps
                if interactive && !logged { KDLog.progress(line) } else { KDLog.info(line) }
            }
            if t.evalEvery > 0, s.step % t.evalEvery == 0, let v = try evaluateAndLog() {
                adaptPolicy(validationLoss: hasTeacher ? Double(1 - config.distill.kdRatio) * v.mean + Double(config.distill.kdRatio) * v.kdMean : v.mean)
            }
            let onCadence = config.checkpoint.every > 0 && s.step % config.checkpoint.every == 0
            let written = checkpoints && (onCadence || s.step == t.steps || s.checkpointDue)
            if written { try saveCheckpoint() }
            if stopRequested, step < t.steps {
                if checkpoints, !written { try saveCheckpoint() }
                KDLog.info("stopped by a signal after step \(step) of \(t.steps)\(checkpoints ? " (checkpoint written)" : "")")
                break
            }
            if let stopAfter, history.count >= stopAfter, step < t.steps {
                if checkpoints, !written { try saveCheckpoint() }
                break
            }
        }
        return history
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
