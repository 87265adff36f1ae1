// OpenBLAS picks its kernels once, when the library loads, from the CPU it recognizes. Debian's 0.3.21 does not
// recognize every CPU that has AVX-512: on a virtual "Intel(R) Xeon(R) Processor" with avx512f/bw/vl it falls back to
// its Prescott (SSE3) kernels, and sgemm runs at 17 instead of 92 GFLOP/s on one thread (measured). The choice can only
// be changed through OPENBLAS_CORETYPE before the library loads, so the executable checks at start and, when OpenBLAS
// fell back to a pre-AVX2 core on a CPU that has better, runs itself again with the variable set.
import CBLAS
import Foundation

public enum BLASCore {
    /// The kernel family OpenBLAS chose (e.g. "SkylakeX", "Haswell", "Prescott").
    public static var current: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    /// Cores whose sgemm uses at least AVX2 and FMA.
    static let modern: Set<String> = ["haswell", "skylakex", "cooperlake", "sapphirerapids", "zen", "excavator"]

    /// The OPENBLAS_CORETYPE this CPU should use when OpenBLAS fell back to an older core than its flags allow; nil when
    /// the choice is fine or already forced.
    public static func better(flags: Set<String>, current: String, environment: [String: String]) -> String? {
        guard environment["OPENBLAS_CORETYPE"] == nil, !modern.contains(current.lowercased()) else { return nil }
        if flags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512dq"]) { return "SkylakeX" }
        if flags.isSuperset(of: ["avx2", "fma"]) { return "Haswell" }
        return nil
    }

    /// Cores with AVX-512 sgemm kernels.
    static let avx512: Set<String> = ["skylakex", "cooperlake", "sapphirerapids"]

    /// When `OPENBLAS_CORETYPE` forces a core without the AVX-512 kernels this CPU has (these machines' environment sets
    /// Haswell): the core the setting forces; nil when nothing is forced or the forced core is as good as the CPU.
    public static func forcedOlder(flags: Set<String>, current: String, environment: [String: String]) -> String? {
        guard let forced = environment["OPENBLAS_CORETYPE"], !forced.isEmpty,
              flags.isSuperset(of: ["avx512f", "avx512bw", "avx512vl", "avx512dq"]), !avx512.contains(current.lowercased()) else { return nil }
        return forced
    }

    /// This CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere).
    public static func cpuFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }

    /// When OpenBLAS chose a core older than the CPU: sets OPENBLAS_CORETYPE and replaces this process with a fresh
    /// copy of itself (same arguments, same pid; before MPI starts). Returns when nothing needs changing or exec failed.
    public static func reexecIfMisdetected() {
        let env = ProcessInfo.processInfo.environment
        guard env["DISTILL_BLAS_REEXEC"] == nil, let core = better(flags: cpuFlags(), current: current, environment: env) else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        setenv("DISTILL_BLAS_REEXEC", current, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
    }
}
