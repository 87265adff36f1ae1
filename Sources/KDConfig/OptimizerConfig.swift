// The `optimizer` section of a run config (AdamW, its schedule and the sharding of its state). Keys are snake_case, every field has a default,
// unknown keys and out-of-range values fail while decoding.
import Foundation

/// How the student's optimizer state and gradients are split across ranks (`optimizer.sharding`).
public enum Sharding: String, ConfigVocabulary {
    case none, states, gradients
}

/// AdamW and the learning-rate schedule (linear warmup, then cosine decay to min_lr_ratio·lr).
public struct OptimizerConfig: Codable, Equatable, Sendable {
    /// Peak learning rate. Default 3e-4.
    public var lr: Float = 3e-4
    /// Final learning rate as a fraction of lr. Default 0.1.
    public var minLRRatio: Float = 0.1
    /// Steps of linear warmup from 0 to lr. Default 10.
    public var warmupSteps = 10
    /// Decoupled weight decay, applied to matrices only (not norms). Default 0.1.
    public var weightDecay: Float = 0.1
    /// Adam β1. Default 0.9.
    public var beta1: Float = 0.9
    /// Adam β2. Default 0.95.
    public var beta2: Float = 0.95
    /// Adam ε. Default 1e-8.
    public var eps: Float = 1e-8
    /// Global gradient-norm clip; 0 disables. Default 1.
    public var gradClip: Float = 1
    /// Student state split across ranks: `none` (every rank holds all of it), `states` (ZeRO-1: each rank keeps the
    /// AdamW moments and QAT masters of its 1/N of the parameters, updates that range and all-gathers the weights) or
    /// `gradients` (ZeRO-2: as states, and gradients are reduce-scattered instead of all-reduced). Default none.
    public var sharding = Sharding.none

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case lr, minLRRatio = "min_lr_ratio", warmupSteps = "warmup_steps", weightDecay = "weight_decay"
        case beta1, beta2, eps, gradClip = "grad_clip", sharding
    }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        lr = try c.value(.lr, or: lr)
        minLRRatio = try c.value(.minLRRatio, or: minLRRatio)
        warmupSteps = try c.value(.warmupSteps, or: warmupSteps)
        weightDecay = try c.value(.weightDecay, or: weightDecay)
        beta1 = try c.value(.beta1, or: beta1)
        beta2 = try c.value(.beta2, or: beta2)
        eps = try c.value(.eps, or: eps)
        gradClip = try c.value(.gradClip, or: gradClip)
        sharding = try c.value(.sharding, or: sharding)
        try c.require(lr > 0 && lr < 1, .lr, expected: "a number in (0, 1)", found: lr)
        try c.require((0...1).contains(minLRRatio), .minLRRatio, expected: "a number in [0, 1]", found: minLRRatio)
        try c.require(warmupSteps >= 0, .warmupSteps, expected: "an integer >= 0", found: warmupSteps)
        try c.require(weightDecay >= 0, .weightDecay, expected: "a number >= 0", found: weightDecay)
        try c.require(beta1 >= 0 && beta1 < 1, .beta1, expected: "a number in [0, 1)", found: beta1)
        try c.require(beta2 >= 0 && beta2 < 1, .beta2, expected: "a number in [0, 1)", found: beta2)
        try c.require(eps > 0, .eps, expected: "a number > 0", found: eps)
        try c.require(gradClip >= 0, .gradClip, expected: "a number >= 0 (0 = off)", found: gradClip)
    }

    /// Learning rate at 0-based `step` of `total`: linear warmup to lr, then cosine to minLRRatio·lr.
    public func learningRate(step: Int, total: Int) -> Float {
        if step < warmupSteps { return lr * Float(step + 1) / Float(warmupSteps) }
        let span = max(1, total - warmupSteps)
        let progress = min(1, Double(step - warmupSteps) / Double(span))
        let cosine = 0.5 * (1 + Foundation.cos(Double.pi * progress))
        return lr * (minLRRatio + (1 - minLRRatio) * Float(cosine))
    }
}
