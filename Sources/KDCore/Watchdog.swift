// A hung rank must not hang the job forever. MPI has no timeouts: a rank stopped by SIGSTOP, or a collective that
// never completes, blocks every other rank inside its next collective. The watchdog is a thread of each training
// process that checks, once a second, when the trainer last marked progress (a finished step, a written checkpoint);
// after `timeout` seconds without it, it prints which rank, which step and what the rank was waiting in, and exits the
// process with ``Watchdog/exitCode``. mpirun then ends the job (a rank exited non-zero) and Launch/restart.sh
// relaunches it from the newest checkpoint that verifies. Time this process itself did not run is not a hang: when a
// check comes seconds later than its one-second sleep (the whole job suspended — Ctrl-Z, `scontrol suspend`, SIGSTOP
// to every rank — or the machine asleep), the clock moves on by that gap, so a resumed job carries on; a rank stopped
// alone still ends the job through the others, whose checks keep time.
import Foundation
import Synchronization

public enum Watchdog {
    /// The exit code of a process the watchdog ended (EX_TEMPFAIL: try again).
    public static let exitCode: Int32 = 75

    static let lastProgress = Atomic<UInt64>(0)  // monotonic nanoseconds
    static let currentStep = Atomic<Int>(0)
    /// The MPI call this process is inside (a StaticString's address), 0 when none.
    static let waitingIn = Atomic<UInt>(0)
    static let waitingLength = Atomic<Int>(0)
    static let started = Atomic<Bool>(false)
    /// A check this many seconds later than its sleep means the process was stopped (a busy machine delays a thread
    /// by milliseconds, not seconds).
    static let stoppedAfter = 3.0

    /// Starts the watchdog thread of this process (once; later calls do nothing). `timeout` ≤ 0 leaves it off.
    public static func start(timeout: Double, rank: Int) {
        guard timeout > 0, started.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        lastProgress.store(now(), ordering: .relaxed)
        let limit = UInt64(timeout * 1e9), tick = min(1.0, timeout / 10)
        Thread.detachNewThread {
            var last = now()
            while true {
                usleep(useconds_t(tick * 1e6))
                let t = now(), gap = t &- last
                last = t
                if gap > UInt64((tick + stoppedAfter) * 1e9) {  // this process was not running: not a hang
                    lastProgress.wrappingAdd(gap, ordering: .relaxed)
                    continue
                }
                let progressAt = lastProgress.load(ordering: .relaxed)
                let idle = t > progressAt ? t - progressAt : 0
                guard idle > limit else { continue }
                let step = currentStep.load(ordering: .relaxed), at = waitingIn.load(ordering: .relaxed)
                let call = at == 0 ? "computing, not in an MPI call"
                    : "waiting in \(String(decoding: UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: at), count: waitingLength.load(ordering: .relaxed)), as: UTF8.self)) (another rank stopped or hung?)"
                let line = String(format: "error: rank %ld: no progress for %.0f s in step %ld, %@; ending this rank with exit code %d so the job can restart from its last checkpoint (train.hang_timeout)\n",
                                  rank, Double(idle) / 1e9, step + 1, call, exitCode)
                FileHandle.standardError.write(Data(line.utf8))
                _exit(exitCode)
            }
        }
    }

    /// The trainer finished something (a step, a checkpoint): the clock restarts. `step` = steps done.
    public static func progress(step: Int) {
        currentStep.store(step, ordering: .relaxed)
        lastProgress.store(now(), ordering: .relaxed)
    }

    /// Runs `body` (an MPI call) marked as waiting in `call`, so a timeout says where the rank was.
    @inline(__always)
    public static func waiting<T>(in call: StaticString, _ body: () throws -> T) rethrows -> T {
        waitingLength.store(call.utf8CodeUnitCount, ordering: .relaxed)
        waitingIn.store(UInt(bitPattern: call.utf8Start), ordering: .relaxed)
        defer { waitingIn.store(0, ordering: .relaxed) }
        return try body()
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
