// A graceful stop for long runs: the first SIGINT, SIGTERM or SIGUSR1 asks the trainer to finish its step, write a
// checkpoint and exit cleanly; a second one exits at once (status 130), and so does a process still running `grace`
// seconds after the first (SIGALRM), so a rank stuck in a collective never outlives its job. Under mpirun, SIGUSR1
// sent to mpirun reaches every rank (mpirun forwards it); SIGINT/SIGTERM make mpirun kill the ranks 1 s later
// unless its odls_base_sigkill_timeout is raised.
import Foundation
import Synchronization

public enum StopSignal {
    // lock-free atomics: the only state a signal handler may touch
    static let count = Atomic<Int32>(0)
    static let grace = Atomic<UInt32>(600)

    /// Installs the handlers (once per process); `grace` seconds after the first signal the process exits regardless.
    public static func install(grace: UInt32 = 600) {
        StopSignal.grace.store(grace, ordering: .relaxed)
        // a parent may have started us with these blocked (a test runner's worker thread does): unblock them here, so
        // this thread and every thread started later can take them
        var set = sigset_t()
        sigemptyset(&set)
        for sig in [SIGINT, SIGTERM, SIGUSR1, SIGALRM] { sigaddset(&set, sig) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        for sig in [SIGINT, SIGTERM, SIGUSR1] {
            signal(sig) { _ in
                let (_, now) = StopSignal.count.add(1, ordering: .relaxed)
                if now >= 2 { _exit(130) }
                alarm(StopSignal.grace.load(ordering: .relaxed))
            }
        }
    }

    /// Whether a stop was asked of this process.
    public static var requested: Bool { count.load(ordering: .relaxed) > 0 }
}
