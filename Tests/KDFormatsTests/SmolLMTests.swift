// The real teacher: SmolLM2-135M-Instruct (Q4_1, Q8_0 embedding) run by distill against an independent numpy float64
// forward over gguf-py's dequantization (Scripts/model_reference.py).
import CKDKernels
import Foundation
import KDConfig
import KDFormats
import KDModel
import KDOps
import KDQuant
import KDTestSupport
import Testing

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let smolLM = repoRoot.appendingPathComponent("Checkpoints/teachers/SmolLM2-135M-Instruct.Q4_1.gguf").path

func requireTeacher() throws {
    guard FileManager.default.fileExists(atPath: smolLM) else {
        throw PythonError(message: "teacher missing: run Launch/fetch_teacher.sh (Launch/test.sh does) to fetch \(smolLM)")
    }
}

@Test func smolLMConfigComesFromMetadata() throws {
    try requireTeacher()
    let f = try GGUFFile(path: smolLM)
    let m = try ggufModelConfig(f)
    #expect(m.layers == 30 && m.dim == 576 && m.heads == 9 && m.kvHeads == 3 && m.ffnDim == 1536 && m.vocabSize == 49152)
    #expect(m.ropeTheta == 100000 && m.tiedEmbeddings && m.ropeStyle == .adjacent)
    #expect(f.tensor("token_embd.weight")?.type == .q8_0)
    #expect(f.tensor("blk.0.attn_q.weight")?.type == .q4_1)
}

@Test func smolLMForwardMatchesNumpyReference() throws {
    try requireTeacher()
    let prompts: [[Int32]] = [
        [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173],  // arbitrary ids, incl. special tokens
        [504, 3458, 282, 4649, 314, 2],
        [28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43],
    ]
    let dir = try temporaryDirectory("distill-smol")
    defer { try? FileManager.default.removeItem(at: dir) }
    let out = dir.appendingPathComponent("ref.f32")
    let json = "[" + prompts.map { "[" + $0.map(String.init).joined(separator: ",") + "]" }.joined(separator: ",") + "]"
    _ = try runPython(scripts.appendingPathComponent("model_reference.py").path, [smolLM, out.path, json])
    let ref = try Data(contentsOf: out).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    let (model, _) = try loadGGUFModel(path: smolLM, maxSeqLen: 64)
    let v = model.config.vocabSize
    var offset = 0, worst: Float = 0
    for p in prompts {
        var logits = [Float](repeating: 0, count: p.count * v)
        p.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: 1, t: p.count) }
        logits.withUnsafeMutableBufferPointer { model.logits(into: $0.baseAddress!) }
        for i in 0..<p.count {
            let ours = logits[(i * v)..<((i + 1) * v)], theirs = ref[(offset + i * v)..<(offset + (i + 1) * v)]
            worst = max(worst, zip(ours, theirs).map { abs($0 - $1) }.max()!)
            #expect(ours.indices.max { ours[$0] < ours[$1] }! - ours.startIndex == theirs.indices.max { theirs[$0] < theirs[$1] }! - theirs.startIndex)
        }
        offset += p.count * v
    }
    #expect(offset == ref.count)
    #expect(worst <= 1e-3, "max |logit difference| \(worst)")
}

/// The teacher forward with bf16 matmuls (dequantized panels rounded to bf16, activations too, f32 sums; the 8-bit
/// products off — they are the next test's) against f32:
/// mean NLL over 4 × 128 tokens of fortunes within 5e-3 — and not equal (the bf16 path really ran).
@Test(arguments: [BF16Kernel.rounded] + (BF16.cpuHasAVX512BF16 ? [.avx512] : []))
func smolLMsNLLWithBF16MatmulsIsF32sWithin5e3(kernel: BF16Kernel) throws {
    try requireTeacher()
    let text = try String(contentsOf: repoRoot.appendingPathComponent("Tests/KDTrainTests/Fixtures/fortunes-sample.txt"), encoding: .utf8)
    let ids = try BPETokenizer(gguf: GGUFFile(path: smolLM)).encode(text, addSpecial: false)
    let b = 4, t = 128
    #expect(ids.count > b * t + 1)
    let tokens = Array(ids[0..<(b * t)]), targets = Array(ids[1...(b * t)])
    let (model, _) = try loadGGUFModel(path: smolLM, maxSeqLen: t)
    func nll() -> Double {
        tokens.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: b, t: t) }
        return targets.withUnsafeBufferPointer { model.loss(targets: $0.baseAddress!) }.mean
    }
    let f32 = nll(), bf16 = BF16.$kernel.withValue(kernel) { QuantizedMatrix.$int8Products.withValue(false) { nll() } }
    #expect(abs(bf16 - f32) <= 5e-3, "NLL f32 \(f32), bf16 (\(kernel)) \(bf16)")
    #expect(bf16 != f32, "the bf16 forward gave f32's NLL \(f32) bit for bit")
    print("SmolLM2 NLL on 512 fortunes tokens: f32 \(f32), bf16 (\(kernel)) \(bf16), Δ \(bf16 - f32)")
}

/// With the 8-bit products on (`train.precision: bf16` on a CPU with AVX512-BF16 and VNNI, or `teacher.products: int8`
/// in f32 on any CPU with VNNI: the Q4_1 blocks and the Q8_0 head times activations quantized per block of 32, as
/// llama.cpp computes), the teacher's NLL on the same 4 × 128
/// tokens is llama.cpp's on the same file within 2e-3 in bf16 (Fixtures/smollm2-q4_1-llamacpp.json,
/// Launch/lab/make_int8_reference.sh; the tokens are checked equal first) — and further from f32's than that; in f32 the
/// products alone move it from f32's toward llama.cpp's, by at most 8e-3 (f32's gap is 8.2e-3). How far they move it
/// depends on the f32 activations' last bits, which decide where a value rounds to 8 bits: 1.9e-3 with OpenBLAS's Zen
/// kernels, 6.1e-3 with its SkylakeX kernels on an Intel Xeon (`distill eval` with DISTILL_TEACHER_INT8=all moves by
/// 2.7e-3 between OPENBLAS_CORETYPE=Haswell and SkylakeX on one machine, while f32 alone moves by 1e-7).
@Test(.enabled(if: kd_cpu_has_avx512vnni() == 1, "this CPU has no AVX512-VNNI"))
func smolLMsNLLWithInt8ProductsIsLlamaCppsWithin2e3() throws {
    try requireTeacher()
    let fixture = repoRoot.appendingPathComponent("Tests/KDFormatsTests/Fixtures/smollm2-q4_1-llamacpp.json")
    let ref = try JSONSerialization.jsonObject(with: Data(contentsOf: fixture)) as! [String: Any]
    let refTokens = (ref["tokens"] as! [Int]).map { Int32($0) }, llama = ref["mean_nll"] as! Double
    let text = try String(contentsOf: repoRoot.appendingPathComponent("Tests/KDTrainTests/Fixtures/fortunes-sample.txt"), encoding: .utf8)
    let ids = try BPETokenizer(gguf: GGUFFile(path: smolLM)).encode(text, addSpecial: false)
    let b = 4, t = 128
    #expect(Array(ids[0...(b * t)]) == refTokens, "the fixture's tokens are ours")
    let tokens = Array(ids[0..<(b * t)]), targets = Array(ids[1...(b * t)])
    let (model, _) = try loadGGUFModel(path: smolLM, maxSeqLen: t)
    func nll() -> Double {
        tokens.withUnsafeBufferPointer { model.forward(tokens: $0.baseAddress!, b: b, t: t) }
        return targets.withUnsafeBufferPointer { model.loss(targets: $0.baseAddress!) }.mean
    }
    let f32 = nll()
    // an f32 run with teacher.products: int8: the products' share of the way from f32 to llama.cpp (attention, the
    // rest of the forward, stays f32; llama.cpp's rounds K and V to f16)
    let f32Int8 = QuantizedMatrix.$int8Products.withValue(true) { QuantizedMatrix.$int8WithF32.withValue(true) { nll() } }
    #expect(abs(f32Int8 - llama) < abs(f32 - llama) && abs(f32Int8 - f32) <= 8e-3, "NLL f32 + int8 \(f32Int8), f32 \(f32), llama.cpp \(llama)")
    var line = "SmolLM2 NLL on 512 fortunes tokens: llama.cpp \(llama), f32 + int8 \(f32Int8), f32 \(f32)"
    if BF16.cpuHasAVX512BF16 {
        let int8 = BF16.$kernel.withValue(.avx512) { QuantizedMatrix.$int8Products.withValue(true) { nll() } }
        #expect(abs(int8 - llama) <= 2e-3, "NLL int8 \(int8), llama.cpp \(llama)")
        #expect(abs(int8 - llama) < abs(f32 - llama), "int8 \(int8) is no closer to llama.cpp's \(llama) than f32's \(f32)")
        line += ", bf16 + int8 \(int8)"
    }
    print(line)
}

/// A rank that runs part of a teacher (a pipeline stage: blocks 10..<20, the final norm and the tied head) maps only
/// those tensors' bytes: every mapping of the file in /proc/self/maps lies within the pages of a used tensor, together
/// they cover all of them, and the forward of the stage's blocks equals the whole model's on the same input.
@Test func aStageMapsOnlyItsTensorsAndRunsAsTheWholeModel() throws {
    try requireTeacher()
    let dir = try temporaryDirectory("distill-stage")
    defer { try? FileManager.default.removeItem(at: dir) }
    let path = dir.appendingPathComponent("teacher.gguf").path  // a private copy: no other test maps it
    try FileManager.default.copyItem(atPath: smolLM, toPath: path)
    let stage = 10..<20
    let uses: (String) -> Bool = { name in ParameterLayout.block(of: name).map(stage.contains) ?? true }
    let (part, f) = try loadGGUFModel(path: path, maxSeqLen: 32, uses: uses)
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    // the used tensors' byte ranges, widened to pages
    let family = part.config.familySpec
    let used = part.layout.entries.filter { uses($0.name) }.map { e -> Range<Int> in
        let t = f.tensor(family.ggufName(e.name))!
        let lo = (f.dataOffset + t.offset) / page * page, hi = (f.dataOffset + t.offset + t.byteCount + page - 1) / page * page
        return lo..<hi
    }
    var mapped = 0
    for range in try mappedRanges(ofFile: path) {
        #expect(used.contains { $0.lowerBound <= range.lowerBound && range.upperBound <= $0.upperBound }, "mapped \(range) is no used tensor's")
        mapped += range.count
    }
    // what stays mapped is the packed matrices (norms are copied to Floats and unmapped)
    let kept = part.layout.entries.filter { uses($0.name) && part.packed[$0.offset] != nil }.map { e -> Range<Int> in
        let t = f.tensor(family.ggufName(e.name))!
        return (f.dataOffset + t.offset) / page * page..<(f.dataOffset + t.offset + t.byteCount + page - 1) / page * page
    }
    let usedBytes = kept.reduce(0) { $0 + $1.count }
    #expect(mapped >= usedBytes - kept.count * page && mapped <= usedBytes, "mapped \(mapped) bytes of the used \(usedBytes)")
    let fileSize = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
    #expect(Double(mapped) < 0.75 * Double(fileSize), "a third of the blocks and the head: \(mapped) of \(fileSize)")
    // the stage's blocks compute what the whole model's do (the hidden state entering block 10 from the whole model)
    let (whole, _) = try loadGGUFModel(path: smolLM, maxSeqLen: 32)
    let tokens: [Int32] = [1, 9690, 198, 2683, 359, 253, 5356, 5646]
    let n = tokens.count, c = whole.config.dim
    let entering = tokens.withUnsafeBufferPointer { tk in
        Array(UnsafeBufferPointer(start: whole.forwardStage(0..<10, tokens: tk.baseAddress!, hidden: nil, b: 1, t: n, finalNorm: false), count: n * c))
    }
    let a = entering.withUnsafeBufferPointer {
        Array(UnsafeBufferPointer(start: whole.forwardStage(stage, tokens: nil, hidden: $0.baseAddress!, b: 1, t: n, finalNorm: true), count: n * c))
    }
    let b = entering.withUnsafeBufferPointer {
        Array(UnsafeBufferPointer(start: part.forwardStage(stage, tokens: nil, hidden: $0.baseAddress!, b: 1, t: n, finalNorm: true), count: n * c))
    }
    #expect(a == b && a.contains { $0 != 0 })
}
