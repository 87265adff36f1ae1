// Counter-based randomness: every draw is a pure function of (seed, purpose, counters), never of call order
// or rank, so runs are reproducible and resumable at any world size. Mixing follows SplitMix64 (Steele et al.).

import Foundation

/// What a random stream is used for; keeps streams for different purposes independent.
public enum RandomPurpose: UInt64, Sendable {
    case parameterInit = 1, dataSample = 2, sampling = 3, bench = 4, test = 5
    /// on-policy training: the per-step corpus/student choice, rollout tokens, replay-buffer picks
    case policyChoice = 6, rollout = 7, replay = 8
    /// Tokens drawn from a teacher's distribution for a sampled teacher cache.
    case teacherSampling = 9
}

/// A stateless counter-based generator: `value(a, b)` depends only on the seed, the purpose and the counters.
public struct CounterRNG: Sendable, Equatable {
    public let seed: UInt64
    public let purpose: RandomPurpose

    public init(seed: UInt64, purpose: RandomPurpose) {
        self.seed = seed
        self.purpose = purpose
    }

    @inline(__always)
    static func mix(_ z0: UInt64) -> UInt64 {
        var z = z0 &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// 64 random bits for the counter pair (a, b), e.g. (step, sample index) or (tensor index, element).
    @inline(__always)
    public func bits(_ a: UInt64, _ b: UInt64 = 0) -> UInt64 {
        let k = CounterRNG.mix(seed ^ CounterRNG.mix(purpose.rawValue))
        return CounterRNG.mix(CounterRNG.mix(k ^ a) ^ (b &* 0xD6E8_FEB8_6659_FD93))
    }

    /// Uniform in [0, 1) with 24 random bits.
    @inline(__always)
    public func uniform(_ a: UInt64, _ b: UInt64 = 0) -> Float {
        Float(bits(a, b) >> 40) * (1.0 / 16_777_216.0)
    }

    /// Standard normal by Box-Muller from two independent uniforms derived from (a, b).
    @inline(__always)
    public func normal(_ a: UInt64, _ b: UInt64 = 0) -> Float {
        let r = bits(a, b)
        let u1 = (Double(r >> 40) + 0.5) * (1.0 / 16_777_216.0)
        let u2 = Double((r >> 16) & 0xFF_FFFF) * (1.0 / 16_777_216.0)
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    /// Uniform integer in 0..<n.
    @inline(__always)
    public func index(_ n: Int, _ a: UInt64, _ b: UInt64 = 0) -> Int {
        precondition(n > 0, "CounterRNG.index: n must be > 0, got \(n)")
        return Int(bits(a, b).multipliedFullWidth(by: UInt64(n)).high)
    }
}

