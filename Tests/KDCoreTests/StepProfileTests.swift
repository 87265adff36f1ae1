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
    #expect(abs(ms(.backward, .rest) - 20) < 4, "\(ms(.backward, .rest))")
    #expect(abs(ms(.backward, .gemm) - 40) < 4, "\(ms(.backward, .gemm))")
    #expect(abs(ms(.backward, .attention) - 10) < 4, "\(ms(.backward, .attention))")
    #expect(abs(ms(.exchange, .rest) - 20) < 4, "\(ms(.exchange, .rest))")
    #expect(ms(.loss, .rest) == 0 && ms(.teacherForward, .gemm) == 0)
}
