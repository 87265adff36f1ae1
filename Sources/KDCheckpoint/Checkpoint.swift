// Checkpoints: rank 0 writes, every rank can read. A checkpoint is a directory
//   model.safetensors + config.json   the student, Hugging Face names (the folder loads as a HF model)
//   optimizer.safetensors             AdamW first and second moments, same names
//   state.json                        step, global sample cursor, LR, world size, config, teacher manifest
//   checksums.json                    size and checksum of every file above — written last
// built under a temporary name, fsynced, renamed to step_XXXXXXXX, then the `latest` pointer moves. A directory
// without checksums.json, or whose files do not match it, is torn or corrupt: skipped on resume, never loaded.
import Foundation
import KDConfig
import KDCore
import KDFormats
import KDModel

public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case notACheckpoint(String)
    case corrupt(dir: String, reason: String)
    case versionUnsupported(dir: String, found: Int)
    case teacherMismatch(dir: String, expected: String, found: String)
    case shapeMismatch(dir: String, reason: String)
    case noneFound(String)
    /// No space (ENOSPC, EDQUOT) for a checkpoint: nothing of it is left; the exit code is ``CheckpointError/diskFullExitCode``.
    case diskFull(dir: String, step: Int, needed: Int, free: Int, reason: String)

    /// The exit code of a run stopped by a full disk (EX_IOERR); Launch/restart.sh does not restart it.
    public static let diskFullExitCode: Int32 = 74

    public var isDiskFull: Bool { if case .diskFull = self { return true } else { return false } }

    public var description: String {
        switch self {
        case .notACheckpoint(let d): return "\(d): not a checkpoint (expected \(CheckpointFile.state) and \(CheckpointFile.checksums))"
        case .corrupt(let d, let r): return "\(d): corrupt checkpoint: \(r)"
        case .versionUnsupported(let d, let v): return "\(d): checkpoint format \(v) is not supported (expected \(TrainingState.currentFormat))"
        case .teacherMismatch(let d, let e, let f):
            return "\(d): teachers differ from the checkpoint's (checkpoint: \(f); now: \(e)); pass --allow-teacher-change to resume anyway"
        case .shapeMismatch(let d, let r): return "\(d): \(r)"
        case .noneFound(let root): return "\(root): no checkpoint that verifies"
        case .diskFull(let d, let step, let needed, let free, let r):
            return String(format: "%@: no space for the checkpoint of step %ld (%@): it needs about %.1f MiB, the filesystem has %.1f MiB free; "
                          + "nothing of it was kept and earlier checkpoints are intact: free space there (or set checkpoint.dir elsewhere) and resume with --resume auto",
                          d, step, r, Double(needed) / 1048576, Double(free) / 1048576)
        }
    }
}

/// The names of a checkpoint folder's files: spelled here and nowhere else.
public enum CheckpointFile {
    /// The student (full precision) and its Hugging Face config: the folder loads as a HF model.
    public static let model = HFFolder.weights, hfConfig = HFFolder.config
    /// AdamW moments, tensors named `exp_avg.NAME` / `exp_avg_sq.NAME`.
    public static let optimizer = "optimizer.safetensors"
    public static let firstMoment = "exp_avg.", secondMoment = "exp_avg_sq."
    /// ``TrainingState`` as JSON.
    public static let state = "state.json"
    /// Size and checksum of every other file; written last, so its presence marks a complete checkpoint.
    public static let checksums = "checksums.json"
    /// QAT's explicit scales (and learned ones' moments).
    public static let qatScales = "qat_scales.safetensors"
    /// QAT's importance matrix (`qat.importance`): one weight per input column of each matrix it weighs.
    public static let qatImportance = "qat_importance.safetensors"
    /// distillm's replay buffer.
    public static let replay = "replay.bin"
    /// The hidden-state loss's learned projections between widths (weights and moments).
    public static let hiddenProjection = "hidden_projection.safetensors"
    /// The data's tokenizer, when the student speaks the teacher's tokens.
    public static let tokenizer = HFFolder.tokenizer
    /// The EMA self-teacher's weights (student layout): written as NAME.safetensors.
    public static let emaTeacher = "ema_teacher"
    /// In the run directory: the name of the newest complete checkpoint.
    public static let latest = "latest"
    /// Files every checkpoint has.
    public static let core = [model, hfConfig, optimizer, state]
    /// The file holding weights saved under `name`.
    public static func weights(_ name: String) -> String { name + ".safetensors" }
}

/// distillm's adaptive state (`policy.mode: distillm`).
public struct OnPolicyCheckpoint: Codable, Equatable, Sendable {
    /// Probability of a student-generated step.
    public var threshold: Float
    /// Validation loss at the last evaluation (nil before the first).
    public var lastValidationLoss: Double?
    public init(threshold: Float, lastValidationLoss: Double?) { self.threshold = threshold; self.lastValidationLoss = lastValidationLoss }
}

/// One teacher file a run depends on.
public struct TeacherManifestEntry: Codable, Equatable, Sendable {
    public var path: String
    public var bytes: Int
    public var checksum: String
    public init(path: String) throws {
        self.path = path
        bytes = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        checksum = try fileChecksum(path: path)
    }
}

/// Everything besides tensors that a resumed run needs.
public struct TrainingState: Codable, Equatable, Sendable {
    public static let currentFormat = 1
    public var format = TrainingState.currentFormat
    /// Optimizer steps completed.
    public var step: Int
    /// Next global sample index.
    public var sampleCursor: Int
    /// World size that wrote it (a resume may use another).
    public var worldSize: Int
    /// Learning rate of the last step.
    public var lr: Float
    /// The run's config as YAML.
    public var config: String
    public var teachers: [TeacherManifestEntry] = []
    /// distillm's threshold and last validation loss (its replay buffer is ``CheckpointFile/replay``).
    public var onPolicy: OnPolicyCheckpoint?

    public init(step: Int, sampleCursor: Int, worldSize: Int, lr: Float, config: String, teachers: [TeacherManifestEntry] = []) {
        self.step = step; self.sampleCursor = sampleCursor; self.worldSize = worldSize; self.lr = lr; self.config = config
        self.teachers = teachers
    }
}

/// The AdamW moments a checkpoint writes: whole slabs, or produced in pieces as they arrive (sharded state gathered
/// on rank 0 piece by piece): every first moment in layout order, then every second moment.
public enum MomentsToWrite {
    case slabs(m: Slab, v: Slab)
    case stream((_ emit: (UnsafeRawBufferPointer) throws -> Void) throws -> Void)
}

/// Where a resume puts the AdamW moments it reads: whole slabs, or a visitor that receives every tensor's first and
/// then second moment, tensor by tensor in layout order (rank 0 hands each rank its range).
public enum MomentsToRead {
    case slabs(m: Slab, v: Slab)
    case visit((_ second: Bool, _ entry: ParameterLayout.Entry, _ data: UnsafePointer<Float>) throws -> Void)
}

/// Writes, finds, verifies and loads the checkpoints of one run directory.
public struct CheckpointStore {
    public let root: String
    /// Checkpoints kept; older ones are deleted after a new one is complete.
    public let keep: Int

    public init(root: String, keep: Int) {
        self.root = root
        self.keep = keep
    }

    public static func name(step: Int) -> String { String(format: "step_%08d", step) }


    /// Writes a complete checkpoint for `state.step` and moves `latest`; returns its directory.
    @discardableResult
    /// `extraFiles` (e.g. the tokenizer.json of the shards' tokenizer) are written beside the tensors and checksummed;
    /// `extraWeights` are more slabs with the model's layout (an EMA teacher), each written as NAME.safetensors.
    public func save(model: Transformer, adamM: Slab, adamV: Slab, state: TrainingState, extraFiles: [String: Data] = [:],
                     extraWeights: [String: Slab] = [:]) throws -> String {
        try save(model: model, moments: .slabs(m: adamM, v: adamV), state: state, extraFiles: extraFiles, extraWeights: extraWeights)
    }

    /// ``save(model:adamM:adamV:state:extraFiles:extraWeights:)`` with the moments given as slabs or as a stream.
    @discardableResult
    public func save(model: Transformer, moments: MomentsToWrite, state: TrainingState, extraFiles: [String: Data] = [:],
                     extraWeights: [String: Slab] = [:]) throws -> String {
        let fm = FileManager.default
        try fm.createDirectory(atPath: root, withIntermediateDirectories: true)
        let final = (root as NSString).appendingPathComponent(CheckpointStore.name(step: state.step))
        let tmp = final + ".tmp-\(getpid())"
        try? fm.removeItem(atPath: tmp)
        do {
            try saveHFModel(model, dir: tmp, metadata: ["step": "\(state.step)"])
            // every first moment, then every second moment: the data is the two slabs, each in layout order
            let entries = model.layout.entries
            let shapes = [CheckpointFile.firstMoment, CheckpointFile.secondMoment].flatMap { p in entries.map { (name: p + $0.name, shape: $0.shape) } }
            crashForTestIfAsked(step: state.step)
            if ProcessInfo.processInfo.environment["DISTILL_ENOSPC_STEP"].flatMap(Int.init) == state.step {
                throw POSIXError(.ENOSPC)  // the full-disk test's hook, where the machine cannot mount a small filesystem
            }
            slowWriteForTestIfAsked()
            try writeSafetensors(path: (tmp as NSString).appendingPathComponent(CheckpointFile.optimizer), shapes: shapes) { emit in
                switch moments {
                case .slabs(let m, let v):
                    for slab in [m, v] { try emit(UnsafeRawBufferPointer(start: slab.base, count: model.layout.count * 4)) }
                case .stream(let produce):
                    try produce(emit)
                }
            }
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            let stateData = try enc.encode(state)
            try atomicWrite(path: (tmp as NSString).appendingPathComponent(CheckpointFile.state)) { try $0.write(contentsOf: stateData) }
            var extras = extraFiles.keys.sorted()
            for (name, slab) in extraWeights.sorted(by: { $0.key < $1.key }) {
                let entries = model.layout.entries.map { SafetensorsEntry(name: $0.name, shape: $0.shape, data: slab.base + $0.offset) }
                try writeSafetensors(path: (tmp as NSString).appendingPathComponent(CheckpointFile.weights(name)), tensors: entries)
                extras.append(CheckpointFile.weights(name))
            }
            for (name, data) in extraFiles {
                try atomicWrite(path: (tmp as NSString).appendingPathComponent(name)) { try $0.write(contentsOf: data) }
            }
            var sums: [String: [String: String]] = [:]
            for f in CheckpointFile.core + extras {
                let p = (tmp as NSString).appendingPathComponent(f)
                let size = (try fm.attributesOfItem(atPath: p)[.size] as? Int) ?? 0
                sums[f] = ["bytes": "\(size)", "checksum": try fileChecksum(path: p)]
            }
            let sumData = try enc.encode(sums)
            try atomicWrite(path: (tmp as NSString).appendingPathComponent(CheckpointFile.checksums)) { try $0.write(contentsOf: sumData) }
            syncDirectory(tmp)
            if fm.fileExists(atPath: final) { try fm.removeItem(atPath: final) }
            guard rename(tmp, final) == 0 else { throw KDError.unreadable(path: final, reason: "rename failed: \(String(cString: strerror(errno)))") }
            syncDirectory(root)
        } catch {
            try? fm.removeItem(atPath: tmp)
            // a full disk (or quota) says so, with the size it needed; the partial folder is gone, so is its space
            let needed = 4 * model.layout.count * (3 + extraWeights.count) + extraFiles.values.reduce(0) { $0 + $1.count } + (1 << 16)
            let free = freeBytes(root)
            if isOutOfSpace(error) || free < needed {
                throw CheckpointError.diskFull(dir: root, step: state.step, needed: needed, free: free, reason: "\(error)")
            }
            throw error
        }
        let name = CheckpointStore.name(step: state.step)
        try atomicWrite(path: (root as NSString).appendingPathComponent(CheckpointFile.latest)) { try $0.write(contentsOf: Data((name + "\n").utf8)) }
        syncDirectory(root)
        // unfinished folders of writers that are gone; one whose process still runs is left to it (the rank 0 of a job
        // whose mpirun was killed can outlive it for a moment, and its write must not lose its folder — nor ours)
        let stale = unfinished().filter { name in
            guard let pid = name.split(separator: "-").last.flatMap({ Int32($0) }), pid != getpid() else { return true }
            return kill(pid, 0) != 0 && errno == ESRCH
        }
        for old in completeCheckpoints().dropLast(keep) + stale { try? fm.removeItem(atPath: (root as NSString).appendingPathComponent(old)) }
        return final
    }

    /// Names of step directories (not temporaries), oldest first.
    public func completeCheckpoints() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return names.filter { $0.hasPrefix("step_") && !$0.contains(".tmp") }.sorted()
    }

    /// Checks every file against checksums.json and returns the state.
    public static func verify(dir: String) throws -> TrainingState {
        let fm = FileManager.default
        let sumsPath = (dir as NSString).appendingPathComponent(CheckpointFile.checksums)
        guard fm.fileExists(atPath: sumsPath), fm.fileExists(atPath: (dir as NSString).appendingPathComponent(CheckpointFile.state)) else {
            throw CheckpointError.notACheckpoint(dir)
        }
        guard let sums = try? JSONDecoder().decode([String: [String: String]].self, from: Data(contentsOf: URL(fileURLWithPath: sumsPath))) else {
            throw CheckpointError.corrupt(dir: dir, reason: "\(CheckpointFile.checksums) is not readable")
        }
        for f in Set(CheckpointFile.core).union(sums.keys).sorted() {
            guard let want = sums[f] else { throw CheckpointError.corrupt(dir: dir, reason: "\(CheckpointFile.checksums) lists no \(f)") }
            let p = (dir as NSString).appendingPathComponent(f)
            guard fm.fileExists(atPath: p) else { throw CheckpointError.corrupt(dir: dir, reason: "\(f) is missing") }
            let size = (try? fm.attributesOfItem(atPath: p)[.size] as? Int) ?? -1
            guard "\(size)" == want["bytes"] else {
                throw CheckpointError.corrupt(dir: dir, reason: "\(f) has \(size) bytes, expected \(want["bytes"] ?? "?")")
            }
            let sum = try fileChecksum(path: p)
            guard sum == want["checksum"] else {
                throw CheckpointError.corrupt(dir: dir, reason: "\(f) checksum \(sum), expected \(want["checksum"] ?? "?")")
            }
        }
        let state: TrainingState
        do {
            state = try JSONDecoder().decode(TrainingState.self, from: Data(contentsOf: URL(fileURLWithPath: (dir as NSString).appendingPathComponent(CheckpointFile.state))))
        } catch {
            throw CheckpointError.corrupt(dir: dir, reason: "\(CheckpointFile.state): \(error)")
        }
        guard state.format == TrainingState.currentFormat else { throw CheckpointError.versionUnsupported(dir: dir, found: state.format) }
        // the position travels as Doubles between ranks and back to Int: exact below 2⁵³, and never negative
        guard (0..<(1 << 53)).contains(state.step), (0..<(1 << 53)).contains(state.sampleCursor), (1...(1 << 24)).contains(state.worldSize),
              state.lr.isFinite else {
            throw CheckpointError.corrupt(dir: dir, reason: "\(CheckpointFile.state): step \(state.step), sample cursor \(state.sampleCursor), world size \(state.worldSize), lr \(state.lr) (expected steps and cursor in 0..<2^53, a world size in 1...2^24, a finite lr)")
        }
        return state
    }

    /// The newest checkpoint that verifies; `report` hears about every one skipped and why.
    public func newestValid(report: (String) -> Void = { _ in }) -> (dir: String, state: TrainingState)? {
        for t in unfinished() { report("ignoring unfinished \(t) (a write that did not complete)") }
        for name in completeCheckpoints().reversed() {
            let dir = (root as NSString).appendingPathComponent(name)
            do { return (dir, try CheckpointStore.verify(dir: dir)) } catch { report("skipping \(name): \(error)") }
        }
        return nil
    }

    /// Temporary folders of checkpoint writes that never finished.
    public func unfinished() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { $0.hasPrefix("step_") && $0.contains(".tmp-") }.sorted()
    }

    /// Reads a verified checkpoint's tensors into the model and the AdamW moments.
    public static func load(dir: String, model: Transformer, adamM: Slab, adamV: Slab) throws {
        try load(dir: dir, model: model, moments: .slabs(m: adamM, v: adamV))
    }

    /// ``load(dir:model:adamM:adamV:)`` with the moments going to slabs or to a visitor.
    public static func load(dir: String, model: Transformer, moments: MomentsToRead) throws {
        let m = try SafetensorsFile(path: (dir as NSString).appendingPathComponent(CheckpointFile.model))
        let o = try SafetensorsFile(path: (dir as NSString).appendingPathComponent(CheckpointFile.optimizer))
        for e in model.layout.entries {
            try m.read(checked(m, e.name, e, dir: dir), into: model.params.base + e.offset)
            for (second, prefix) in [(false, CheckpointFile.firstMoment), (true, CheckpointFile.secondMoment)] {
                let t = try checked(o, prefix + e.name, e, dir: dir)
                switch moments {
                case .slabs(let am, let av):
                    try o.read(t, into: (second ? av : am).base + e.offset)
                case .visit(let take):
                    // F32 data of a file we wrote: Float-aligned (the header pads the data to 8 bytes)
                    try take(second, e, o.data(t).assumingMemoryBound(to: Float.self))
                }
            }
        }
    }

    /// Reads the slab a checkpoint saved as `name` (`extraWeights` of ``save(model:moments:state:extraFiles:extraWeights:)``)
    /// with the student's `layout` into `slab`.
    public static func loadWeights(dir: String, name: String, layout: ParameterLayout, into slab: Slab) throws {
        let p = (dir as NSString).appendingPathComponent(CheckpointFile.weights(name))
        guard FileManager.default.fileExists(atPath: p) else {
            throw CheckpointError.shapeMismatch(dir: dir, reason: "\(CheckpointFile.weights(name)) is missing (the run needs it to resume)")
        }
        let file = try SafetensorsFile(path: p)
        for e in layout.entries { try file.read(checked(file, e.name, e, dir: dir), into: slab.base + e.offset) }
    }

    static func checked(_ file: SafetensorsFile, _ name: String, _ e: ParameterLayout.Entry, dir: String) throws -> SafetensorsTensor {
        guard let t = file.tensor(name) else { throw CheckpointError.shapeMismatch(dir: dir, reason: "tensor '\(name)' is missing") }
        guard t.shape == e.shape, t.dtype == .f32 else {
            throw CheckpointError.shapeMismatch(dir: dir, reason: "tensor '\(name)': expected F32 \(e.shape), found \(t.dtype) \(t.shape)")
        }
        return t
    }
}

/// Fault injection for Launch/chaos.sh: with DISTILL_CHECKPOINT_WRITE_DELAY=SECONDS set, every checkpoint write pauses
/// that long halfway (weights written, optimizer state not), so a kill lands inside a write often.
func slowWriteForTestIfAsked() {
    guard let s = ProcessInfo.processInfo.environment["DISTILL_CHECKPOINT_WRITE_DELAY"].flatMap(Double.init), s > 0 else { return }
    Thread.sleep(forTimeInterval: s)
}

/// fsync of a directory, so a rename inside it is durable.
func syncDirectory(_ path: String) {
    let fd = open(path, O_RDONLY)
    if fd >= 0 {
        fsync(fd)
        close(fd)
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `path` (Int.max when unknown).
func freeBytes(_ path: String) -> Int {
    var st = statvfs()
    guard statvfs(path, &st) == 0 else { return Int.max }
    return Int(clamping: UInt64(st.f_bavail) &* UInt64(st.f_frsize))
}

/// Whether `error` (or an error under it) is ENOSPC or EDQUOT, as Foundation reports a failed write.
func isOutOfSpace(_ error: any Error) -> Bool {
    let ns = error as NSError
    if ns.domain == NSPOSIXErrorDomain, ns.code == Int(ENOSPC) || ns.code == Int(EDQUOT) { return true }
    if ns.domain == NSCocoaErrorDomain, ns.code == CocoaError.fileWriteOutOfSpace.rawValue { return true }
    if let under = ns.userInfo[NSUnderlyingErrorKey] as? any Error { return isOutOfSpace(under) }
    return "\(error)".contains("No space left on device")
}

/// Fault injection for the crash tests: with DISTILL_CRASH_ONCE=FILE set and FILE absent, the writer of the
/// checkpoint for step DISTILL_CRASH_STEP (any step if unset) creates FILE and kills its own process with SIGKILL
/// halfway through (weights written, optimizer state not).
func crashForTestIfAsked(step: Int) {
    let env = ProcessInfo.processInfo.environment
    guard let marker = env["DISTILL_CRASH_ONCE"], !FileManager.default.fileExists(atPath: marker) else { return }
    if let s = env["DISTILL_CRASH_STEP"].flatMap(Int.init), s != step { return }
    FileManager.default.createFile(atPath: marker, contents: Data())
    kill(getpid(), SIGKILL)
}
