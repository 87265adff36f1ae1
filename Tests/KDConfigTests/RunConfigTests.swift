// Decoding YAML literals: defaults, unknown keys with their path, invalid values with expected vs found.
import KDConfig
import KDCore
import Foundation
import Testing

@Test func missingKeysTakeDefaults() throws {
    let c = try RunConfig.parse(yaml: "data:\n  train: [corpus.txt]\nmodel:\n  dim: 64\n  heads: 8\n")
    #expect(c.model.dim == 64)
    #expect(c.model.heads == 8)
    #expect(c.model.kvHeads == 8)  // defaults to heads
    #expect(c.model.layers == ModelConfig().layers)
    #expect(c.train == TrainConfig())
    #expect(c.optimizer == OptimizerConfig())
    #expect(c.data.train == ["corpus.txt"])
    #expect(c.data.excludeSuffixes == [".dat"])
}

@Test func unknownKeyFailsWithItsPath() {
    do {
        _ = try RunConfig.parse(yaml: "data:\n  train: [a]\noptimizer:\n  learnig_rate: 0.1\n", source: "x.yaml")
        Issue.record("an unknown key was accepted")
    } catch {
        let s = "\(error)"
        #expect(s.contains("x.yaml"))
        #expect(s.contains("optimizer.learnig_rate"))
        #expect(s.contains("unknown key"))
    }
    #expect(throws: ConfigError.self) { try RunConfig.parse(yaml: "data:\n  train: [a]\nmodell: {}\n") }
}

@Test func typoSuggestsTheNearestKey() {
    #expect(throws: ConfigError.at(source: "config", path: "model.kv_head",
                                   message: "unknown key 'kv_head'; did you mean 'kv_heads'? (expected one of: layers, dim, heads, head_dim, kv_heads, ffn_dim, vocab_size, max_seq_len, rope_theta, rope_style, rms_eps, tied_embeddings, init_std, family, sliding_window, sliding_pattern, rope_theta_local, global_layers, rope_freq_factors)")) {
        try RunConfig.parse(yaml: "data: {train: [a]}\nmodel:\n  kv_head: 2\n")
    }
}

@Test(arguments: [
    ("optimizer: {lr: -1}", "optimizer.lr", "expected a number in (0, 1), found -1.0"),
    ("train: {micro_batch: 0}", "train.micro_batch", "expected an integer >= 1, found 0"),
    ("model: {rope_style: sideways}", "model.rope_style", "expected 'half' or 'adjacent', found 'sideways'"),
    ("model: {dim: notanumber}", "model.dim", "expected an integer, found 'notanumber'"),
    ("train: {steps: ten}", "train.steps", "expected an integer, found 'ten'"),
    ("optimizer: {lr: fast}", "optimizer.lr", "expected a number, found 'fast'"),
    ("distill: {t2_scale: maybe}", "distill.t2_scale", "expected true or false, found 'maybe'"),
    ("train: {steps: [1, 2]}", "train.steps", "expected a single value, found a list"),
    ("model: 3", "model", "expected a mapping, found '3'"),
    ("teacher: {members: [{path: a, weight: heavy}]}", "teacher.members[0].weight", "expected a number, found 'heavy'"),
    ("teacher: {path: a.gguf, members: [{path: b.gguf}]}", "teacher.path", "expected either path (one teacher) or members (several), not both, found both"),
    ("teacher: {placement: groups, path: a.gguf}", "teacher.placement", "expected groups only with two or more members, found 0 teacher"),
    ("teacher: {self: ema, path: a.gguf}", "teacher.path", "expected no teacher files with self: ema (the student is its own teacher), found 'a.gguf'"),
    ("teacher: {self: mine}", "teacher.self", "expected 'none', 'initial', 'ema' or 'checkpoint', found 'mine'"),
    ("teacher: {members: [{path: a, weight: -1}]}", "teacher.members[0].weight", "expected a number >= 0, found -1.0"),
    ("teacher: {path: a, combine: average}", "teacher.combine", "expected 'mixture' or 'logits', found 'average'"),
    ("student: {init: from_teacher, select: greedy, layers: [0, 2]}", "student.select", "expected greedy alone"),
    ("distill: {hidden_layers: [[0]]}", "distill.hidden_layers", "expected 'auto', 'seams' or a list of [student, teacher] block pairs"),
    ("distill: {hidden_layers: seam}", "distill.hidden_layers", "expected 'auto', 'seams' or a list of [student, teacher] block pairs, found 'seam'"),
    ("policy: {mode: onpolicy}", "policy.mode", "expected 'off', 'gkd', 'distillm' or 'minillm', found 'onpolicy'"),
    ("policy: {mode: gkd}", "policy.mode", "expected a teacher section with on-policy distillation (gkd), found no teacher"),
    ("teacher: {path: a}\npolicy: {mode: minillm}", "distill.objective", "expected rkl with policy.mode minillm"),
    ("teacher: {path: a}\npolicy: {mode: distillm}", "train.eval_every", "expected > 0 with policy.mode distillm"),
    ("teacher: {path: a}\ntrain: {seq_len: 16}\npolicy: {mode: gkd, prompt_tokens: 16}", "policy.prompt_tokens", "expected < train.seq_len (16)"),
    ("student: {init: from_teacher, target: {bytes: lots}}", "student.target.bytes", "expected a size such as 62MiB, 62M or 65011712, found 'lots'"),
    ("student: {init: random, target: {bytes: 62MiB}}", "student.target", "expected init: from_teacher"),
    ("student: {init: from_teacher, target: {}}", "student.target.bytes", "expected one of bytes, params or speed, found none"),
    ("student: {init: from_teacher, target: {bytes: 1G, params: 1B}}", "student.target.bytes", "expected one of bytes, params or speed, found 2 of them"),
    ("student: {init: from_teacher, target: {speed: 0.5}}", "student.target.speed", "expected a multiple of the teacher's speed above 1, such as 2 or 1.5x, found '0.5'"),
    ("student: {init: from_teacher, target: {speed: fast}}", "student.target.speed", "found 'fast'"),
    ("student: {init: from_teacher, select: every, every: 2, target: {params: 100M}}", "student.select", "expected angular or greedy with a target (the depth is measured), or every with every: 1 (all blocks kept, the FFN narrowed to meet it), found every with every: 2"),
    ("student: {init: from_teacher, target: {speed: 2, latency: 1}}", "student.target", "unknown key 'latency'"),
    ("student: {init: random, bridge: linear}", "student.bridge", "expected none with init: random (a bridge stands in for blocks cut from a teacher), found linear"),
    ("student: {init: from_teacher, every: 2, bridge: affine}", "student.bridge", "expected 'none' or 'linear', found 'affine'"),
    ("qat: {scheme: q4_0, embedding_scheme: q8_0}", "qat.embedding_scheme", "expected embeddings: true with it"),
    ("qat: {scheme: int4_channel, embeddings: true, embedding_scheme: q8_0}", "qat.embedding_scheme", "expected a block format (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, mxfp4) beside a block-format scheme, found 'q8_0' beside scheme 'int4_channel'"),
    ("qat: {scheme: q4_0, embeddings: true, embedding_scheme: q8_0, scales: learned}", "qat.embedding_scheme", "expected scheme's own format with learned or frozen scales"),
    ("qat: {scheme: q4_0, embeddings: true, embedding_scheme: q5_kk}", "qat.embedding_scheme", "expected 'none', 'q8_0'"),
    ("qat: {scheme: q4_k, scales: learned}", "qat.scales", "expected absmax with q4_k (learned scales are for q8_0, q4_0 and the per-channel schemes), found 'learned'"),
    ("qat: {scheme: q5_1, freeze_step: 10}", "qat.freeze_step", "expected 0 with q5_1 (frozen scales are for q8_0, q4_0 and the per-channel schemes), found 10"),
    ("qat: {scheme: Q4_K}", "qat.scheme", "found 'Q4_K'"),
    ("qat: {preset: q4_k_m, scheme: q4_0}", "qat.scheme", "expected no scheme beside preset 'q4_k_m' (or its own, q4_k), found 'q4_0'"),
    ("qat: {preset: q4_k_m, embeddings: false}", "qat.embeddings", "expected no embeddings key beside a preset (its tables are quantized), found false"),
    ("qat: {preset: q4_k_m, embedding_scheme: q8_0}", "qat.embedding_scheme", "expected none beside a preset"),
    ("qat: {preset: q4_k_x}", "qat.preset", "found 'q4_k_x'"),
    ("qat: {scheme: q4_0, tensor_types: {ffn_dwn: q3_k}}", "qat.tensor_types.ffn_dwn", "expected a block matrix ('attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up' or 'ffn_down'), found 'ffn_dwn'"),
    ("qat: {scheme: q4_0, tensor_types: {ffn_down: q3}}", "qat.tensor_types.ffn_down", "found 'q3'"),
    ("qat: {scheme: int4_channel, tensor_types: {ffn_down: q3_k}}", "qat.tensor_types.ffn_down", "expected a block format (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, mxfp4) beside a block-format scheme, found 'q3_k' beside scheme 'int4_channel'"),
    ("qat: {scheme: q4_0, scales: learned, tensor_types: {ffn_down: q3_k}}", "qat.tensor_types.ffn_down", "expected scheme's own format with learned or frozen scales"),
    ("qat: {preset: q4_k_m, tensor_types: {ffn_down: q3_k}}", "qat.tensor_types", "expected none beside a preset (it picks every tensor's type)"),
    ("qat: {scheme: q8_0, importance: activations}", "qat.importance", "expected a block format other than q8_0 and mxfp4 in scheme, embedding_scheme or tensor_types beside it (ggml weighs no other format's scale search by one), found 'activations' with scheme 'q8_0'"),
    ("qat: {scheme: int8_channel, importance: activations}", "qat.importance", "found 'activations' with scheme 'int8_channel'"),
    ("qat: {scheme: mxfp4, embeddings: true, embedding_scheme: q8_0, importance: activations}", "qat.importance", "found 'activations' with scheme 'mxfp4'"),
    ("qat: {scheme: q4_0, scales: learned, importance: activations}", "qat.importance", "expected scales: absmax and no freeze_step beside it (it weighs the search for the scales that learned or frozen ones replace), found 'activations' with scales 'learned', freeze_step 0"),
    ("qat: {scheme: q4_0, freeze_step: 10, importance: activations}", "qat.importance", "expected scales: absmax and no freeze_step beside it"),
    ("qat: {scheme: iq4_nl, importance: imatrix}", "qat.importance", "expected 'none' or 'activations'"),
    ("qat: {scheme: iq4_nl, importance_windows: 8}", "qat.importance_windows", "expected importance: activations beside it, found importance: none"),
    ("qat: {scheme: iq4_nl, importance: activations, importance_windows: 0}", "qat.importance_windows", "expected an integer >= 1"),
    ("qat: {scheme: q4_0, tensor_types: {ffn_down: q3_k, ffn_down: q4_0}}", "qat.tensor_types.ffn_down", "the key appears twice in one mapping"),
])
func invalidValueSaysExpectedAndFound(snippet: String, path: String, message: String) {
    do {
        _ = try RunConfig.parse(yaml: "data: {train: [a]}\n" + snippet + "\n")
        Issue.record("accepted \(snippet)")
    } catch {
        #expect("\(error)".contains(path), "\(error)")
        #expect("\(error)".contains(message), "\(error)")
    }
}

@Test func crossFieldRulesAreChecked() {
    #expect(throws: ConfigError.invalid("model.dim", expected: "a multiple of heads (3), or a head_dim", found: "64")) {
        try RunConfig.parse(yaml: "data: {train: [a]}\nmodel: {dim: 64, heads: 3}\n")
    }
    #expect(throws: ConfigError.invalid("model.kv_heads", expected: "a divisor of heads (4)", found: "3")) {
        try RunConfig.parse(yaml: "data: {train: [a]}\nmodel: {dim: 64, heads: 4, kv_heads: 3}\n")
    }
    #expect(throws: ConfigError.invalid("train.seq_len", expected: "<= model.max_seq_len (64)", found: "128")) {
        try RunConfig.parse(yaml: "data: {train: [a]}\nmodel: {max_seq_len: 64}\ntrain: {seq_len: 128}\n")
    }
    // no data section: the message says so (Yams once wrapped it as "top level: The given data was not valid YAML")
    #expect(throws: ConfigError.at(source: "config", path: "data", message: "expected a data section with a 'train' list of text files, found none")) {
        try RunConfig.parse(yaml: "model: {dim: 64}\n")
    }
    #expect(throws: ConfigError.fileNotFound("/nonexistent.yaml")) { try RunConfig.load(path: "/nonexistent.yaml") }
}

@Test func learningRateScheduleWarmsUpThenDecays() {
    var o = OptimizerConfig()
    o.lr = 1e-3; o.warmupSteps = 10; o.minLRRatio = 0.1
    #expect(abs(o.learningRate(step: 0, total: 100) - 1e-4) < 1e-9)
    #expect(abs(o.learningRate(step: 9, total: 100) - 1e-3) < 1e-9)
    #expect(abs(o.learningRate(step: 100, total: 100) - 1e-4) < 1e-9)
    let mid = o.learningRate(step: 55, total: 100)
    #expect(abs(mid - 0.55e-3) < 1e-6)
    var prev = Float.infinity
    for s in 10...100 { let lr = o.learningRate(step: s, total: 100); #expect(lr <= prev); prev = lr }
}

@Test func configRoundTripsThroughYAML() throws {
    let c = try RunConfig.parse(yaml: "data: {train: [a, b]}\nmodel: {dim: 64, heads: 4, kv_heads: 2}\ntrain: {steps: 20}\n")
    #expect(try RunConfig.parse(yaml: c.yaml()) == c)
}

@Test func teacherSectionsNameTheirSources() throws {
    let multi = try RunConfig.parse(yaml: "data: {train: [a]}\nteacher:\n  members:\n    - {path: a.gguf, weight: 2}\n    - {path: b}\n  placement: groups\n")
    #expect(multi.teacher!.sources == [TeacherMember(path: "a.gguf", weight: 2), TeacherMember(path: "b", weight: 1)])
    let ema = try RunConfig.parse(yaml: "data: {train: [a]}\nteacher: {self: ema, ema_decay: 0.999}\n")
    #expect(ema.teacher!.sources.isEmpty && ema.teacher!.emaDecay == 0.999)
    let ck = try RunConfig.parse(yaml: "data: {train: [a]}\nteacher: {self: checkpoint, path: Checkpoints/run/step_00000100}\n")
    #expect(ck.teacher!.sources == [TeacherMember(path: "Checkpoints/run/step_00000100")])
    // the YAML a checkpoint stores reads back as the same config
    #expect(try RunConfig.parse(yaml: multi.yaml()) == multi)
}

@Test func aConfigCanExtendABaseFile() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("distill-base-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir.appendingPathComponent("sub"), withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    try "data: {train: [corpus.txt]}\nmodel: {dim: 64, heads: 4, layers: 3}\ndistill: {objective: fkl, kd_ratio: 0.3}\nteacher: {path: t.gguf}\n"
        .write(to: dir.appendingPathComponent("base.yaml"), atomically: true, encoding: .utf8)
    try "base: ../base.yaml\nmodel: {layers: 2}\ndistill: {objective: rkl}\n".write(to: dir.appendingPathComponent("sub/child.yaml"), atomically: true, encoding: .utf8)
    let c = try RunConfig.load(path: dir.appendingPathComponent("sub/child.yaml").path)
    // sections merge key by key; the child wins
    #expect(c.model.layers == 2 && c.model.dim == 64 && c.distill.objective == .rkl && c.distill.kdRatio == 0.3 && c.teacher?.path == "t.gguf")
    // except student.target, one of bytes, params or speed: the child's replaces the base's (merged, it would hold two)
    try "base: ../base.yaml\nstudent: {init: from_teacher, target: {bytes: 62MiB}}\n".write(to: dir.appendingPathComponent("sub/sized.yaml"), atomically: true, encoding: .utf8)
    try "base: sized.yaml\nstudent: {target: {speed: 2}}\n".write(to: dir.appendingPathComponent("sub/fast.yaml"), atomically: true, encoding: .utf8)
    let fast = try RunConfig.load(path: dir.appendingPathComponent("sub/fast.yaml").path)
    #expect(fast.student.target == StudentTarget(speed: 2) && fast.student.initFrom == .fromTeacher)
    // a cycle is named, not followed forever
    try "base: sub/child.yaml\ndata: {train: [a]}\n".write(to: dir.appendingPathComponent("base.yaml"), atomically: true, encoding: .utf8)
    do {
        _ = try RunConfig.load(path: dir.appendingPathComponent("sub/child.yaml").path)
        Issue.record("a cycle of base files was accepted")
    } catch {
        #expect("\(error)".contains("without a cycle"), "\(error)")
    }
    // a missing base file is named
    try "base: nowhere.yaml\ndata: {train: [a]}\n".write(to: dir.appendingPathComponent("base.yaml"), atomically: true, encoding: .utf8)
    #expect(throws: ConfigError.fileNotFound(dir.appendingPathComponent("nowhere.yaml").path)) { try RunConfig.load(path: dir.appendingPathComponent("base.yaml").path) }
}

/// YAML forbids a key twice in one mapping and a decoder would keep the last silently: refused with the key's path and
/// both lines, in the file itself and in a base file it extends.
@Test func aKeyTwiceInOneMappingIsRefusedWithBothLines() throws {
    for (yaml, path, lines) in [("data:\n  train: [a]\nmodel:\n  layers: 2\n  dim: 64\n  layers: 3\n", "model.layers", "lines 4 and 6"),
                                ("data: {train: [a]}\nteacher:\n  members:\n    - path: a.gguf\n    - path: b.gguf\n      weight: 1\n      path: c.gguf\n",
                                 "teacher.members[1].path", "lines 5 and 7"),
                                ("train: {steps: 3}\ndata: {train: [a]}\ntrain: {steps: 4}\n", "train", "lines 1 and 3")] {
        do {
            _ = try RunConfig.parse(yaml: yaml, source: "x.yaml")
            Issue.record("accepted a duplicate \(path)")
        } catch {
            #expect("\(error)" == "x.yaml: \(path): the key appears twice in one mapping (\(lines)); keep one", "\(error)")
        }
    }
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("distill-dup-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let base = dir.appendingPathComponent("base.yaml"), child = dir.appendingPathComponent("child.yaml")
    try "data: {train: [a]}\noptimizer:\n  lr: 1.0e-3\n  lr: 2.0e-3\n".write(to: base, atomically: true, encoding: .utf8)
    try "base: base.yaml\nmodel: {layers: 2}\n".write(to: child, atomically: true, encoding: .utf8)
    #expect(throws: ConfigError.at(source: base.path, path: "optimizer.lr", message: "the key appears twice in one mapping (lines 3 and 4); keep one")) {
        try RunConfig.load(path: child.path)
    }
    // the same key in different mappings is fine
    #expect(try RunConfig.parse(yaml: "data: {train: [a]}\nmodel: {layers: 2}\nstudent: {layers: [0, 1]}\n").model.layers == 2)
}

/// Every vocabulary key, with the section it lives in: a word it does not know fails naming the key and every valid word.
@Test(arguments: [
    ("model", "rope_style", RopeStyle.choices), ("data", "tokenizer", TextTokenizer.choices),
    ("teacher", "combine", TeacherCombine.choices), ("teacher", "placement", Placement.choices), ("teacher", "exchange", Exchange.choices),
    ("teacher", "self", SelfTeacher.choices), ("teacher", "products", TeacherProducts.choices), ("distill", "objective", Objective.choices), ("policy", "mode", PolicyMode.choices),
    ("qat", "scheme", QATScheme.choices), ("qat", "activations", ActivationQuant.choices), ("qat", "scales", ScaleSource.choices),
    ("student", "init", StudentInit.choices), ("optimizer", "sharding", Sharding.choices),
])
func unknownVocabularyWordListsTheValidOnes(section: String, key: String, choices: String) {
    let body = section == "data" ? "data: {train: [a], tokenizer: bogus}\n" : "data: {train: [a]}\n\(section): {\(key): bogus}\n"
    do {
        _ = try RunConfig.parse(yaml: body)
        Issue.record("accepted \(section).\(key): bogus")
    } catch {
        #expect("\(error)".contains("\(section).\(key)") && "\(error)".contains("expected \(choices), found 'bogus'"), "\(error)")
        // the list is the whole vocabulary: at least two words (or the one there is)
        #expect(choices.contains("'"))
    }
}

@Test func vocabularyRoundTripsThroughYAML() throws {
    var c = try RunConfig.parse(yaml: "data: {train: [a]}\nteacher: {path: t, placement: pipelined, exchange: topk, products: int8}\ndistill: {objective: skew_rkl}\nqat: {scheme: int4_channel}\noptimizer: {sharding: gradients}\n")
    #expect(c.teacher?.placement == .pipelined && c.teacher?.exchange == .topk && c.distill.objective == .skewRKL && c.qat.scheme == .int4Channel)
    #expect(c.optimizer.sharding == .gradients && c.teacher?.products == .int8)
    c = try RunConfig.parse(yaml: try c.yaml())
    #expect(c.distill.objective == .skewRKL && c.qat.scheme == .int4Channel && c.optimizer.sharding == .gradients && c.teacher?.products == .int8)
    #expect(try RunConfig.parse(yaml: "data: {train: [a]}\nteacher: {path: t}\n").teacher?.products == .auto)
}

@Test func budgetTargetsReadSizesAndCounts() throws {
    #expect(parseQuantity("62MiB", binary: true) == 62 << 20 && parseQuantity("62 MiB", binary: true) == 62 << 20)
    #expect(parseQuantity("62M", binary: true) == 62 << 20 && parseQuantity("1.5G", binary: true) == 3 << 29 && parseQuantity("4096", binary: true) == 4096)
    #expect(parseQuantity("100M", binary: false) == 100_000_000 && parseQuantity("1.5B", binary: false) == 1_500_000_000)
    #expect(parseQuantity("-3M", binary: true) == nil && parseQuantity("MiB", binary: true) == nil && parseQuantity("", binary: false) == nil)
    let c = try RunConfig.parse(yaml: "data: {train: [a]}\nstudent: {init: from_teacher, target: {bytes: 62MiB}}\n")
    #expect(c.student.target == StudentTarget(bytes: 62 << 20) && c.student.rule == .angular && c.student.measuresSelection)
    // it round-trips through the YAML a run writes beside its checkpoints
    #expect(try RunConfig.parse(yaml: c.yaml()).student == c.student)
    // every block kept, the FFN narrowed: select every with every: 1 (what a full-depth choice resolves to)
    let w = try RunConfig.parse(yaml: "data: {train: [a]}\nstudent: {init: from_teacher, select: every, every: 1, target: {bytes: 62MiB}}\n")
    #expect(w.student.rule == .every && !w.student.measuresSelection && w.student.target != nil)
    // a speed target: a multiple of the teacher's generation speed, written plain, with x or with ×
    for spelled in ["2", "2x", "2.0×", "\"2 x\""] {
        let s = try RunConfig.parse(yaml: "data: {train: [a]}\nstudent: {init: from_teacher, target: {speed: \(spelled)}}\n")
        #expect(s.student.target == StudentTarget(speed: 2), "\(spelled)")
        #expect(try RunConfig.parse(yaml: s.yaml()).student == s.student)
    }
}
