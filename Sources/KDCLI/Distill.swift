// The `distill` executable: a command tree of nested types (swift-argument-parser), validate() apart from run().
import ArgumentParser
import Foundation
import KDCheckpoint
import KDComm
import KDConfig
import KDCore
import KDData
import KDFormats
import KDLoss
import KDModel
import KDOps
import KDQuant
import KDTrain

@main
struct Distill: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distill",
        abstract: "Distill large language models into small, quantized students (under mpirun).",
        subcommands: [Train.self, TeacherCacheCommand.self, Prepare.self, Eval.self, Generate.self, Synthesize.self, Tokenize.self, Inspect.self, Export.self, Bench.self, CheckpointCommand.self, Report.self, CommCheck.self])

    /// OpenBLAS's kernels first (BLASCore: a CPU it does not recognize gets its SSE3 kernels, 5× slower), then the command.
    static func main() {
        BLASCore.reexecIfMisdetected()
        main(nil)
    }
}

/// One rank of a job, set up once for every command that runs under mpirun: MPI when mpirun started this process
/// (else one local rank), log lines that name the rank, and kernels on this node's share of the cores.
enum Job {
    /// Runs `body` on this rank and ends MPI after it. `threads` 0 shares the node's cores among its ranks (ranks ×
    /// threads ≤ cores). A failure on any rank ends the whole job with its message instead of leaving the other
    /// ranks waiting in a collective. `precision` bf16 runs the linear layers' matmuls with bf16 operands (or in f32
    /// after one warning line on a CPU without AVX512-BF16).
    /// `products` (`teacher.products`) says where a quantized teacher's matrices multiply in 8-bit integers.
    static func run(threads: Int, precision: Precision = .f32, products: TeacherProducts = .auto,
                    _ body: (any Communicator) throws -> Void) throws {
        var comm: any Communicator = LocalCommunicator()
        do {
            if MPICommunicator.launchedByMPI { comm = try MPICommunicator.initialize() }
            KDLog.rank = comm.rank
            KDLog.worldSize = comm.worldSize
            let local = Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "1") ?? 1
            configureThreads(threads > 0 ? threads : max(1, ProcessInfo.processInfo.activeProcessorCount / max(local, 1)))
            let (kernel, warning) = try BF16.resolve(bf16: precision == .bf16, environment: ProcessInfo.processInfo.environment)
            if let warning { KDLog.info(warning) }
            try withTeacherProducts(products) { try BF16.$kernel.withValue(kernel) { try body(comm) } }
            comm.finalize()
        } catch let e as ExitCode {
            comm.finalize()
            throw e
        } catch {
            // a full disk ends the job with its own code: restarting would only redo the steps since the last checkpoint
            let code = (error as? CheckpointError)?.isDiskFull == true ? CheckpointError.diskFullExitCode : 1
            if comm.worldSize > 1 { comm.abort("error: " + oneLine(error), code: code) }
            throw fail(error, code: code)
        }
    }
}

/// Runs `body` with `teacher.products`' switches: `auto` leaves the defaults (8-bit products in bf16 runs unless
/// DISTILL_TEACHER_INT8=0; in f32 runs too with DISTILL_TEACHER_INT8=all), `int8` turns them on in f32 runs, `float` off.
func withTeacherProducts<T>(_ products: TeacherProducts, _ body: () throws -> T) rethrows -> T {
    switch products {
    case .auto: return try body()
    case .int8:
        if !QuantizedMatrix.cpuHasInt8Products {
            KDLog.info("warning: teacher.products int8 needs a CPU with AVX512-VNNI (vpdpbusd); this one has none, dequantizing the teacher's blocks")
        }
        return try QuantizedMatrix.$int8Products.withValue(true) { try QuantizedMatrix.$int8WithF32.withValue(true, operation: body) }
    case .float: return try QuantizedMatrix.$int8Products.withValue(false, operation: body)
    }
}

/// Prints `error: …` on one line and exits with `code`; used for every failure past argument validation.
func fail(_ error: any Error, code: Int32 = 1) -> ExitCode {
    KDLog.error("error: " + oneLine(error))
    return ExitCode(code)
}

/// An error's description as one printable line: control characters (a newline inside a name read from a hostile
/// file) become \u{…} escapes, and past 1,000 characters the rest is cut.
func oneLine(_ error: any Error) -> String {
    var out = ""
    for u in "\(error)".unicodeScalars {
        if u.value < 0x20 || (0x7f...0x9f).contains(u.value) { out += "\\u{\(String(u.value, radix: 16))}" } else { out.unicodeScalars.append(u) }
        if out.count > 1000 { return out + "…" }
    }
    return out
}
