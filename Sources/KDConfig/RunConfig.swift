// A whole run's YAML: one struct per section (each in its own file, with its keys, defaults and rules), loaded with
// `base:` inheritance, decoded strictly (unknown keys rejected, ranges checked while decoding) and validated across
// sections before anything is allocated.
import Foundation
import Yams

/// A whole run: one struct per YAML section.
public struct RunConfig: Codable, Equatable, Sendable {
    /// The student (for now: the model being trained).
    public var model = ModelConfig()
    public var train = TrainConfig()
    public var optimizer = OptimizerConfig()
    public var data = DataConfig()
    public var checkpoint = CheckpointConfig()
    /// Absent: plain cross-entropy training.
    public var teacher: TeacherConfig?
    public var distill = DistillConfig()
    /// Corpus or on-policy sequences.
    public var policy = PolicyConfig()
    public var qat = QATConfig()
    public var student = StudentInitConfig()

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case model, train, optimizer, data, checkpoint, teacher, distill, policy, qat, student }

    public init(from decoder: any Decoder) throws {
        try rejectUnknownKeys(decoder, CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.value(.model, or: model)
        train = try c.value(.train, or: train)
        optimizer = try c.value(.optimizer, or: optimizer)
        checkpoint = try c.value(.checkpoint, or: checkpoint)
        teacher = try c.decodeIfPresent(TeacherConfig.self, forKey: .teacher)
        distill = try c.value(.distill, or: distill)
        policy = try c.value(.policy, or: policy)
        qat = try c.value(.qat, or: qat)
        student = try c.value(.student, or: student)
        guard c.contains(.data) else {
            throw ConfigError.invalid("data", expected: "a data section with a 'train' list of text files", found: "none")
        }
        data = try c.decode(DataConfig.self, forKey: .data)
    }

    /// Cross-field rules, checked before anything is allocated.
    public func validate() throws {
        try model.validate()
        guard train.seqLen <= model.maxSeqLen else {
            throw ConfigError.invalid("train.seq_len", expected: "<= model.max_seq_len (\(model.maxSeqLen))", found: "\(train.seqLen)")
        }
        if data.tokenizer == .bytes, model.vocabSize < 256 {
            throw ConfigError.invalid("model.vocab_size", expected: ">= 256 for the bytes tokenizer", found: "\(model.vocabSize)")
        }
        if qat.scheme.isBlockFormat {
            // GGUF block formats quantize rows in blocks of 32
            for (name, v) in [("model.dim", model.dim), ("model.ffn_dim", model.ffnDim)] where v % 32 != 0 {
                throw ConfigError.invalid(name, expected: "a multiple of 32 with qat.scheme \(qat.scheme.rawValue) (rows are quantized in blocks of 32)", found: "\(v)")
            }
        }
        if policy.mode != .off {
            guard teacher != nil else {
                throw ConfigError.invalid("policy.mode", expected: "a teacher section with on-policy distillation (\(policy.mode.rawValue))", found: "no teacher")
            }
            guard policy.promptTokens < train.seqLen else {
                throw ConfigError.invalid("policy.prompt_tokens", expected: "< train.seq_len (\(train.seqLen)) so the student generates", found: "\(policy.promptTokens)")
            }
        }
        if policy.mode != .off, let c = teacher?.cache, !c.isEmpty {
            throw ConfigError.invalid("teacher.cache", expected: "a live teacher with policy.mode \(policy.mode.rawValue) (the cache only covers corpus windows)", found: "'\(c)'")
        }
        if policy.mode == .minillm {
            guard distill.objective == .rkl else {
                throw ConfigError.invalid("distill.objective", expected: "rkl with policy.mode minillm (its single-step term is the reverse KL)", found: "'\(distill.objective.rawValue)'")
            }
            guard teacher?.placement == .replicated else {
                throw ConfigError.invalid("teacher.placement", expected: "replicated with policy.mode minillm (teacher-mixed sampling needs the teacher on every rank)",
                                          found: "'\(teacher?.placement.rawValue ?? "")'")
            }
        }
        if policy.mode == .distillm, train.evalEvery == 0 {
            throw ConfigError.invalid("train.eval_every", expected: "> 0 with policy.mode distillm (the threshold adapts at evaluations)", found: "0")
        }
        guard optimizer.warmupSteps <= train.steps else {
            throw ConfigError.invalid("optimizer.warmup_steps", expected: "<= train.steps (\(train.steps))", found: "\(optimizer.warmupSteps)")
        }
    }

    /// Decodes and validates YAML text.
    public static func parse(yaml: String, source: String = "config") throws -> RunConfig {
        let config: RunConfig
        let node: Node?
        do { node = try Yams.compose(yaml: yaml) } catch { throw ConfigError.syntax(source: source, message: oneLine(error)) }
        if let node { try rejectDuplicateKeys(node, source: source) }
        do {
            config = try YAMLDecoder().decode(RunConfig.self, from: yaml)
        } catch let e as DecodingError {
            throw ConfigError(decoding: e, source: source, found: { describeValue(at: $0, in: node) })
        } catch let e as ConfigError {
            throw e
        } catch {
            throw ConfigError.syntax(source: source, message: "\(error)")
        }
        try config.validate()
        return config
    }

    /// Reads, decodes and validates a YAML file. A top-level `base: OTHER.yaml` (relative to this file) is read first
    /// and this file's keys are merged over it, section by section (mappings merge, everything else replaces).
    public static func load(path: String) throws -> RunConfig {
        let node = try loadNode(path: path, seen: [])
        let text: String
        do { text = try Yams.serialize(node: node) } catch { throw ConfigError.syntax(source: path, message: "\(error)") }
        return try parse(yaml: text, source: path)
    }

    static func loadNode(path: String, seen: [String]) throws -> Node {
        guard FileManager.default.fileExists(atPath: path) else { throw ConfigError.fileNotFound(path) }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigError.syntax(source: path, message: "not readable as UTF-8 text")
        }
        let parsed: Node?
        do { parsed = try Yams.compose(yaml: text) } catch { throw ConfigError.syntax(source: path, message: oneLine(error)) }
        if let parsed { try rejectDuplicateKeys(parsed, source: path) }
        guard var node = parsed, var map = node.mapping else { return parsed ?? Node("") }
        guard let baseValue = map["base"] else { return node }
        guard let base = baseValue.string else { throw ConfigError.invalid("base", expected: "the path of another config file", found: "\(baseValue)") }
        let basePath = base.hasPrefix("/") ? base : ((path as NSString).deletingLastPathComponent as NSString).appendingPathComponent(base)
        let canonical = (basePath as NSString).standardizingPath
        guard !seen.contains(canonical) else {
            throw ConfigError.invalid("base", expected: "a chain of config files without a cycle", found: (seen + [canonical]).joined(separator: " → "))
        }
        map["base"] = nil
        node = .mapping(map)
        return merge(try loadNode(path: basePath, seen: seen + [(path as NSString).standardizingPath, canonical]), node)
    }

    /// Yams reports over several lines (with a caret under the spot): one line is enough.
    static func oneLine(_ error: any Error) -> String {
        "\(error)".split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && $0 != "^" }.joined(separator: " ")
    }

    /// Throws at the first key that appears twice in one mapping (YAML forbids it; a decoder would keep the last
    /// silently), naming its path and both lines.
    static func rejectDuplicateKeys(_ node: Node, source: String, path: String = "") throws {
        if let map = node.mapping {
            var lines: [String: Int] = [:]
            for (k, v) in map {
                let key = k.string ?? "\(k)", here = path.isEmpty ? key : path + "." + key, line = k.mark?.line ?? 0
                if let first = lines[key] {
                    throw ConfigError.at(source: source, path: here, message: "the key appears twice in one mapping (lines \(first) and \(line)); keep one")
                }
                lines[key] = line
                try rejectDuplicateKeys(v, source: source, path: here)
            }
        } else if let list = node.sequence {
            for (i, v) in list.enumerated() { try rejectDuplicateKeys(v, source: source, path: path + "[\(i)]") }
        }
    }

    /// What the YAML has at a decoder's coding path, for messages: `'ten'`, `null`, `a list`, `a mapping`.
    static func describeValue(at keys: [any CodingKey], in root: Node?) -> String? {
        var node = root
        for k in keys {
            if let i = k.intValue { node = node?.sequence.flatMap { i < $0.count ? $0[i] : nil } } else { node = node?.mapping?[k.stringValue] }
        }
        guard let node else { return nil }
        if let scalar = node.scalar {
            return ["", "~", "null", "Null", "NULL"].contains(scalar.string) ? "null" : "'\(scalar.string)'"
        }
        return node.sequence != nil ? "a list" : node.mapping != nil ? "a mapping" : nil
    }

    /// `over` merged onto `under`: mappings key by key (recursively), anything else replaced.
    /// Mappings at the paths of `replacedWhole` are replaced, not merged. `path` is `under`'s and `over`'s key path.
    static func merge(_ under: Node, _ over: Node, path: String = "") -> Node {
        guard var a = under.mapping, let b = over.mapping, !replacedWhole.contains(path) else { return over }
        for (k, v) in b {
            let sub = path.isEmpty ? k.string ?? "" : path + "." + (k.string ?? "")
            a[k] = a[k].map { merge($0, v, path: sub) } ?? v
        }
        return .mapping(a)
    }

    /// Mappings that say one thing as a whole (`student.target` is one of bytes, params or speed): a config's own
    /// replaces its base's instead of merging into it.
    static let replacedWhole: Set<String> = ["student.target"]

    /// The config as YAML (stored beside checkpoints and printed by `distill train --dry-run`).
    public func yaml() throws -> String { try YAMLEncoder().encode(self) }
}
