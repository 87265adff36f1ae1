// Where a training step's time goes, for `distill bench --breakdown`: call sites name the phase they run in (teacher
// forward, student forward, loss, backward, exchange, optimizer, QAT) and the kernels name their op class (GEMM,
// attention); every frame keeps only its own time (exclusive: a GEMM inside the backward phase counts as the
// backward's GEMM, not twice), and a phase's time outside any named kernel is its "rest" (norms, RoPE, activations,
// copies; in the loss: softmax, divergence and cross-entropy rows). Off unless a breakdown runs: one atomic load per
// call site. Only the thread that started the recording records (the step's own; kernels' worker threads are inside
// the frames that spawn them, and other threads of the process — tests running beside it — are not counted).
import Foundation
import Synchronization

/// A part of a training step.
public enum StepPhase: Int, CaseIterable, Sendable {
    case teacherForward, studentForward, loss, backward, exchange, optimizer, qat

    public var label: String {
        switch self {
        case .teacherForward: return "teacher forward"
        case .studentForward: return "student forward"
        case .loss: return "loss (heads, softmax, divergence)"
        case .backward: return "backward (blocks, embedding)"
        case .exchange: return "gradient exchange"
        case .optimizer: return "optimizer (clip, AdamW)"
        case .qat: return "QAT"
        }
    }
}

/// What a kernel is, inside a phase.
public enum OpClass: Int, CaseIterable, Sendable {
    case gemm, attention
    /// Everything of the phase outside GEMMs and attention.
    case rest

    public var label: String {
        switch self {
        case .gemm: return "GEMM"
        case .attention: return "attention"
        case .rest: return "rest"
        }
    }
}

public enum StepProfile {
    static let on = Atomic<Bool>(false)
    /// The recording thread.
    static let owner = Atomic<UInt>(0)
    static let state = Mutex(Recorder())

    @inline(__always) static var recording: Bool {
        on.load(ordering: .relaxed) && owner.load(ordering: .relaxed) == UInt(pthread_self())
    }

    struct Frame { var phase: StepPhase?, op: OpClass? }

    /// Accumulated seconds by (phase, op class) and the stack of open frames.
    struct Recorder: ~Copyable {
        var seconds = [Double](repeating: 0, count: StepPhase.allCases.count * OpClass.allCases.count)
        var stack: [Frame] = []
        var since = 0.0

        /// The phase and op class the innermost frame charges.
        func bucket() -> Int? {
            guard let top = stack.last else { return nil }
            guard let phase = stack.last(where: { $0.phase != nil })?.phase else { return nil }
            return phase.rawValue * OpClass.allCases.count + (top.op ?? .rest).rawValue
        }

        mutating func charge(now: Double) {
            if let b = bucket() { seconds[b] += now - since }
            since = now
        }
    }

    /// Runs `body` as phase `phase` (a phase inside another replaces it for its duration).
    @inline(__always)
    public static func phase<T>(_ phase: StepPhase, _ body: () throws -> T) rethrows -> T {
        guard recording else { return try body() }
        enter(Frame(phase: phase, op: nil))
        defer { exit() }
        return try body()
    }

    /// Runs `body` as a kernel of class `op` inside the current phase.
    @inline(__always)
    public static func op<T>(_ op: OpClass, _ body: () throws -> T) rethrows -> T {
        guard recording else { return try body() }
        enter(Frame(phase: nil, op: op))
        defer { exit() }
        return try body()
    }

    static func enter(_ f: Frame) {
        let now = monotonicSeconds()
        state.withLock { r in
            r.charge(now: now)
            // an op inside an op stays the outer op's (a GEMM inside a quantized panel multiply is that multiply's)
            r.stack.append(f.op != nil && r.stack.last?.op != nil ? Frame(phase: nil, op: r.stack.last!.op) : f)
        }
    }

    static func exit() {
        let now = monotonicSeconds()
        state.withLock { r in
            r.charge(now: now)
            _ = r.stack.popLast()
        }
    }

    /// Seconds by phase and op class spent inside `body`, which runs with recording on.
    public static func record(_ body: () throws -> Void) rethrows -> [StepPhase: [OpClass: Double]] {
        state.withLock { r in r = Recorder() }
        owner.store(UInt(pthread_self()), ordering: .relaxed)
        on.store(true, ordering: .relaxed)
        defer { on.store(false, ordering: .relaxed) }
        try body()
        return state.withLock { r in
            var out: [StepPhase: [OpClass: Double]] = [:]
            for p in StepPhase.allCases {
                for o in OpClass.allCases { out[p, default: [:]][o] = r.seconds[p.rawValue * OpClass.allCases.count + o.rawValue] }
            }
            return out
        }
    }
}
