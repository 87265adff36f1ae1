// Checkpoint store: write → verify → load round trip bit-exact; retention; torn and corrupt checkpoints skipped.
import Foundation
import KDCheckpoint
import KDCore
import KDModel
import KDTestSupport
import Testing

func tinyStudent(seed: UInt64) -> (Transformer, Slab, Slab) {
    let model = Transformer(config: tinyModelConfig(tied: false), needsGrad: true)
    model.initialize(seed: seed)
    let m = Slab(count: model.layout.count), v = Slab(count: model.layout.count)
    for i in 0..<m.count { m.base[i] = Float(i % 13) * 1e-3; v.base[i] = Float(i % 7) * 1e-6 }
    return (model, m, v)
}

@Test func roundTripIsBitExactAndRetentionKeepsTheNewest() throws {
    let root = try temporaryDirectory("distill-ckpt")
    defer { try? FileManager.default.removeItem(at: root) }
    let store = CheckpointStore(root: root.path, keep: 2)
    let (model, m, v) = tinyStudent(seed: 1)
    for step in [1, 2, 3] {
        try store.save(model: model, adamM: m, adamV: v, state: TrainingState(step: step, sampleCursor: 8 * step, worldSize: 2, lr: 1e-3, config: "x: 1\n"))
    }
    #expect(store.completeCheckpoints() == ["step_00000002", "step_00000003"])
    #expect(try String(contentsOf: root.appendingPathComponent("latest"), encoding: .utf8) == "step_00000003\n")
    let (dir, state) = try #require(store.newestValid())
    #expect(state.step == 3 && state.sampleCursor == 24 && state.worldSize == 2 && state.config == "x: 1\n")
    let (other, m2, v2) = tinyStudent(seed: 2)
    try CheckpointStore.load(dir: dir, model: other, adamM: m2, adamV: v2)
    #expect(other.params.toArray().map(\.bitPattern) == model.params.toArray().map(\.bitPattern))
    #expect(m2.toArray() == m.toArray() && v2.toArray() == v.toArray())
}

@Test func tornAndCorruptCheckpointsAreSkipped() throws {
    let root = try temporaryDirectory("distill-ckpt-bad")
    defer { try? FileManager.default.removeItem(at: root) }
    let store = CheckpointStore(root: root.path, keep: 5)
    let (model, m, v) = tinyStudent(seed: 1)
    for step in [1, 2] { try store.save(model: model, adamM: m, adamV: v, state: TrainingState(step: step, sampleCursor: step, worldSize: 1, lr: 0, config: "")) }
    // step 2 corrupted: a flipped byte in the weights
    let weights = root.appendingPathComponent("step_00000002/model.safetensors")
    var bytes = try Data(contentsOf: weights)
    bytes[bytes.count / 2] ^= 0x01
    try bytes.write(to: weights)
    // step 3 torn: no checksums.json
    try FileManager.default.copyItem(at: root.appendingPathComponent("step_00000001"), to: root.appendingPathComponent("step_00000003"))
    try FileManager.default.removeItem(at: root.appendingPathComponent("step_00000003/checksums.json"))
    var reports: [String] = []
    let (dir, state) = try #require(store.newestValid { reports.append($0) })
    #expect(state.step == 1 && dir.hasSuffix("step_00000001"))
    #expect(reports.count == 2)
    #expect(reports.contains { $0.contains("step_00000003") && $0.contains("not a checkpoint") })
    #expect(reports.contains { $0.contains("step_00000002") && $0.contains("model.safetensors checksum") })
    #expect(throws: CheckpointError.self) { try CheckpointStore.verify(dir: root.appendingPathComponent("step_00000002").path) }
}

@Test func extraFilesAreWrittenAndChecksummed() throws {
    let root = try temporaryDirectory("distill-ckpt-extra")
    defer { try? FileManager.default.removeItem(at: root) }
    let (model, m, v) = tinyStudent(seed: 1)
    let dir = try CheckpointStore(root: root.path, keep: 1).save(
        model: model, adamM: m, adamV: v, state: TrainingState(step: 1, sampleCursor: 1, worldSize: 1, lr: 0, config: ""),
        extraFiles: ["tokenizer.json": Data("{\"model\": {}}".utf8)])
    #expect(try String(contentsOfFile: dir + "/tokenizer.json", encoding: .utf8) == "{\"model\": {}}")
    #expect(try CheckpointStore.verify(dir: dir).step == 1)
    try Data("{\"model\": 1}".utf8).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
    #expect(throws: CheckpointError.self) { try CheckpointStore.verify(dir: dir) }
}

/// A state.json whose checksums were made to match but whose position cannot be real (the long fuzz run's 19
/// crashes: a cursor of 2^63 − 1 traps where the position is converted from the Double that carries it between
/// ranks): refused when verified, with the numbers.
@Test func aCheckpointPositionOutOfRangeIsRefused() throws {
    let root = try temporaryDirectory("distill-ckpt-position")
    defer { try? FileManager.default.removeItem(at: root) }
    let store = CheckpointStore(root: root.path, keep: 5)
    let (model, m, v) = tinyStudent(seed: 1)
    for (step, cursor, world, lr) in [(Int.max, 1, 1, Float(1e-3)), (2, Int.max, 1, 1e-3), (-1, 1, 1, 1e-3), (2, 1, 0, 1e-3)] {  // (JSON has no NaN)
        let dir = try store.save(model: model, adamM: m, adamV: v, state: TrainingState(step: step, sampleCursor: cursor, worldSize: world, lr: lr, config: ""))
        #expect(throws: CheckpointError.self, "step \(step), cursor \(cursor), world \(world), lr \(lr)") { try CheckpointStore.verify(dir: dir) }
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// A save removes the unfinished folders of writers that are gone, and leaves one whose process still runs (found by
/// `Launch/chaos.sh 50`: rank 0 of a job whose mpirun was killed outlived it, finished its write and then removed the
/// restarted job's folder mid-write).
@Test func aSaveLeavesTheUnfinishedFolderOfALiveWriter() throws {
    let root = try temporaryDirectory("distill-ckpt-live")
    defer { try? FileManager.default.removeItem(at: root) }
    let store = CheckpointStore(root: root.path, keep: 2)
    let (model, m, v) = tinyStudent(seed: 1)
    let live = "step_00000007.tmp-\(getppid())", gone = "step_00000007.tmp-2147483646"
    for name in [live, gone] { try FileManager.default.createDirectory(at: root.appendingPathComponent(name), withIntermediateDirectories: false) }
    try store.save(model: model, adamM: m, adamV: v, state: TrainingState(step: 8, sampleCursor: 8, worldSize: 1, lr: 1e-3, config: ""))
    #expect(store.unfinished() == [live])
}
