// `distill checkpoint verify`: a checkpoint's files against its checksums.
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
import KDTrain

struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "checkpoint", abstract: "Work with checkpoints.",
                                                    subcommands: [Verify.self])

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a checkpoint's files against its checksums (exit 0 / 1).")
        @Argument(help: "A step_XXXXXXXX folder.") var dir: String

        func run() throws {
            do {
                let s = try CheckpointStore.verify(dir: dir)
                print("ok: \(dir): step \(s.step), sample cursor \(s.sampleCursor), written by \(s.worldSize) rank\(s.worldSize == 1 ? "" : "s")")
            } catch { throw fail(error) }
        }
    }
}
