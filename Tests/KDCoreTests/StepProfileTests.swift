// The step breakdown's bookkeeping: every frame keeps only its own time, an op inside an op stays the outer op's, a
// phase inside a phase replaces it, and nothing is recorded when no breakdown runs.
import Foundation
import KDCore
import Testing

@Test func theBreakdownChargesEachFrameItsOwnTime() {
    func busy(_ s: Double) { let t0 = monotonicSeconds(); while monotonicSeconds() - t0 < s {} }
    StepProfile.phase(.loss) { busy(0.01) }  // not recording: nothing kept
    let parts = StepProfile.record {
        StepProfile.phase(.backward) {
            busy(0.02)                                               // backward's rest
            StepProfile.op(.gemm) {
                busy(0.03)
                StepProfile.op(.attention) { busy(0.01) }            // inside a GEMM: still the GEMM's
            }
            StepProfile.phase(.exchange) { busy(0.02) }              // a phase inside a phase
            StepProfile.op(.attention) { busy(0.01) }
        }
    }
    func ms(_ p: StepPhase, _ o: OpClass) -> Double { 1000 * (parts[p]?[o] ?? 0) }
    // each frame's own busy time, give or take a preemption on a loaded machine (the tests run in parallel)
    func about(_ got: Double, _ want: Double) -> Bool { got >= want - 0.5 && got < want + 25 }
    #expect(about(ms(.backward, .rest), 20), "\(ms(.backward, .rest))")
    #expect(about(ms(.backward, .gemm), 40), "\(ms(.backward, .gemm))")
    #expect(about(ms(.backward, .attention), 10), "\(ms(.backward, .attention))")
    #expect(about(ms(.exchange, .rest), 20), "\(ms(.exchange, .rest))")
    #expect(ms(.loss, .rest) == 0 && ms(.teacherForward, .gemm) == 0)
}
