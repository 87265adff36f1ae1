// GGUF v3 writing: metadata, tensor infos, aligned tensor data; and the export of a Llama model in the layout
// llama.cpp reads (tensor names blk.N.attn_q.weight …, Q/K rows in the adjacent-pair RoPE order, F32 norms).
// Written atomically: a temporary file, fsynced, renamed; nothing is left behind on an error.
import Foundation
import KDConfig
import KDCore
import KDModel
import KDQuant

public struct GGUFWriter {
    public struct Tensor {
        public let name: String
        /// Row-major shape (GGUF stores it reversed).
        public let shape: [Int]
        public let type: GGMLType
        /// Produces the tensor's bytes (called once, while writing).
        public let bytes: () throws -> Data
        public init(name: String, shape: [Int], type: GGMLType, bytes: @escaping () throws -> Data) {
            self.name = name; self.shape = shape; self.type = type; self.bytes = bytes
        }
    }

    public var metadata: [(String, GGUFValue)] = []
    public var tensors: [Tensor] = []
    public let alignment = 32

    public init() {}

    /// Integers are written as uint32/int32 when they fit, floats as float32 (the widths llama.cpp expects); arrays
    /// take their first element's type.
    static func typeCode(_ v: GGUFValue) -> UInt32 {
        switch v {
        case .uint(let x): return x <= UInt64(UInt32.max) ? 4 : 10
        case .int(let x): return Int64(Int32.min)...Int64(Int32.max) ~= x ? 5 : 11
        case .float: return 6
        case .bool: return 7
        case .string: return 8
        case .array: return 9
        }
    }

    static func append(_ v: GGUFValue, as code: UInt32, to d: inout Data) {
        func put<T: FixedWidthInteger>(_ x: T) { withUnsafeBytes(of: x.littleEndian) { d.append(contentsOf: $0) } }
        switch (v, code) {
        case (.uint(let x), 4): put(UInt32(x))
        case (.uint(let x), _): put(x)
        case (.int(let x), 5): put(Int32(x))
        case (.int(let x), _): put(x)
        case (.float(let x), _): put(Float(x).bitPattern)
        case (.bool(let b), _): d.append(b ? 1 : 0)
        case (.string(let s), _): put(UInt64(s.utf8.count)); d.append(contentsOf: Array(s.utf8))
        case (.array(let a), _):
            let ec = a.first.map(typeCode) ?? 8
            put(ec); put(UInt64(a.count))
            for x in a { append(x, as: ec, to: &d) }
        }
    }

    /// Writes the file atomically.
    public func write(path: String) throws {
        var head = Data("GGUF".utf8)
        func put<T: FixedWidthInteger>(_ x: T) { withUnsafeBytes(of: x.littleEndian) { head.append(contentsOf: $0) } }
        put(UInt32(3)); put(UInt64(tensors.count)); put(UInt64(metadata.count + 1))
        for (k, v) in metadata + [("general.alignment", .uint(UInt64(alignment)))] {
            GGUFWriter.append(.string(k), as: 8, to: &head)
            let code = GGUFWriter.typeCode(v)
            put(code)
            GGUFWriter.append(v, as: code, to: &head)
        }
        var offset = 0
        for t in tensors {
            GGUFWriter.append(.string(t.name), as: 8, to: &head)
            put(UInt32(t.shape.count))
            for dim in t.shape.reversed() { put(UInt64(dim)) }
            put(t.type.rawValue)
            put(UInt64(offset))
            offset += (t.type.byteCount(elements: t.shape.reduce(1, *)) + alignment - 1) / alignment * alignment
        }
        try atomicWrite(path: path) { fh in
            head.append(Data(count: (alignment - head.count % alignment) % alignment))
            try fh.write(contentsOf: head)
            for t in tensors {
                let b = try t.bytes()
                precondition(b.count == t.type.byteCount(elements: t.shape.reduce(1, *)), "GGUFWriter: \(t.name) has \(b.count) bytes")
                try fh.write(contentsOf: b)
                try fh.write(contentsOf: Data(count: (alignment - b.count % alignment) % alignment))
            }
        }
    }
}

/// Output types `distill export` writes.
public let exportTypes: [String: GGMLType] = ["f32": .f32, "f16": .f16, "q8_0": .q8_0, "q4_0": .q4_0, "q4_1": .q4_1, "q5_0": .q5_0, "q5_1": .q5_1,
                                              "q2_k": .q2_K, "q3_k": .q3_K, "q4_k": .q4_K, "q5_k": .q5_K, "q6_k": .q6_K, "iq4_nl": .iq4_nl, "mxfp4": .mxfp4]

/// The names `exportTypes` takes, for messages.
public let exportTypeNames = "f32, f16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, mxfp4"

/// Rows of a [heads·hs, c] Q or K matrix from rotate-half order (Hugging Face) into adjacent-pair order (GGUF):
/// within each head, row j < hs/2 goes to 2j and row hs/2 + j to 2j + 1 (llama.cpp's convert permutation).
func permuteRowsToAdjacent(_ w: UnsafePointer<Float>, heads: Int, hs: Int, c: Int, out: UnsafeMutablePointer<Float>) {
    for h in 0..<heads {
        for j in 0..<(hs / 2) {
            (out + (h * hs + 2 * j) * c).update(from: w + (h * hs + j) * c, count: c)
            (out + (h * hs + 2 * j + 1) * c).update(from: w + (h * hs + hs / 2 + j) * c, count: c)
        }
    }
}

/// The inverse of ``permuteRowsToAdjacent(_:heads:hs:c:out:)``: adjacent-pair order (GGUF) back to rotate-half (HF).
func permuteRowsToHalf(_ w: UnsafePointer<Float>, heads: Int, hs: Int, c: Int, out: UnsafeMutablePointer<Float>) {
    for h in 0..<heads {
        for j in 0..<(hs / 2) {
            (out + (h * hs + j) * c).update(from: w + (h * hs + 2 * j) * c, count: c)
            (out + (h * hs + hs / 2 + j) * c).update(from: w + (h * hs + 2 * j + 1) * c, count: c)
        }
    }
}

extension Transformer {
    /// The model as a GGUF file of its family (`general.architecture`, the family's keys and tensor names): matrices in
    /// `type` (norms and biases F32), architecture metadata, and `extraMetadata`
    /// (the teacher's tokenizer.* keys). Throws before writing anything if a row does not fit `type`'s blocks.
    /// `tableType` is the embedding's and LM head's type (default: `type`).
    /// `scales`: a QAT student's explicit scales (learned or frozen); its tensors of the scales' block type are written
    /// with them, so they dequantize to exactly what the student trained with.
    public func exportGGUF(path: String, type: GGMLType, tableType: GGMLType? = nil, name: String, extraMetadata: [(String, GGUFValue)],
                           scales: QATScales? = nil) throws {
        // a k-quant on rows its 256-blocks do not divide takes llama.cpp's fallback type, as QAT trained them
        try exportGGUF(path: path, typeOf: { [layout] e in
            ((e.offset == layout.embedding || e.offset == layout.lmHead) ? (tableType ?? type) : type).forRows(of: e.shape[1])
        }, name: name, extraMetadata: extraMetadata, scales: scales)
    }

    /// ``exportGGUF(path:type:tableType:name:extraMetadata:scales:)`` with each matrix's type given (a QAT plan).
    /// `importance`: a QAT student's importance matrix (`qat.importance`); its IQ4_NL, Q4_0 and Q5_0 tensors are quantized weighed
    /// by it, as they trained.
    public func exportGGUF(path: String, typeOf matrixType: (ParameterLayout.Entry) -> GGMLType, name: String, extraMetadata: [(String, GGUFValue)],
                           scales: QATScales? = nil, importance: QATImportance? = nil) throws {
        let m = config
        func typeOf(_ e: ParameterLayout.Entry) -> GGMLType { e.isMatrix ? matrixType(e) : .f32 }
        for e in layout.entries where e.isMatrix && e.shape[1] % typeOf(e).blockSize != 0 {
            let type = typeOf(e)
            throw KDError.invalidInput(what: "export as \(type)", expected: "rows that are multiples of \(type.blockSize) elements",
                                       found: "\(e.name) with rows of \(e.shape[1])")
        }
        var w = GGUFWriter()
        let fam = family, a = fam.ggufArchitecture
        w.metadata = [
            ("general.architecture", .string(a)), ("general.name", .string(name)),
            ("\(a).context_length", .uint(UInt64(m.maxSeqLen))), ("\(a).embedding_length", .uint(UInt64(m.dim))),
            ("\(a).block_count", .uint(UInt64(m.layers))), ("\(a).feed_forward_length", .uint(UInt64(m.ffnDim))),
            ("\(a).attention.head_count", .uint(UInt64(m.heads))), ("\(a).attention.head_count_kv", .uint(UInt64(m.kvHeads))),
            ("\(a).rope.freq_base", .float(m.ropeTheta)), ("\(a).attention.layer_norm_rms_epsilon", .float(Double(m.rmsEps))),
            ("\(a).rope.dimension_count", .uint(UInt64(m.headSize))), ("\(a).vocab_size", .uint(UInt64(m.vocabSize))),
            ("\(a).attention.key_length", .uint(UInt64(m.headSize))), ("\(a).attention.value_length", .uint(UInt64(m.headSize))),
        ] + fam.ggufExtras(m).map { ("\(a).\($0.0)", GGUFValue.uint(UInt64($0.1))) }
          + extraMetadata.filter { !$0.0.hasPrefix("general.") && !$0.0.hasPrefix("\(a).") }
        // llama.cpp reads llama files' Q/K rows in adjacent-pair order and other families' as stored (rotate-half)
        let permute = fam.ggufPermutesQK && m.ropeStyle == .half
        for e in layout.entries {
            if !m.tiedEmbeddings || e.offset != layout.lmHead || e.name == "model.embed_tokens.weight" {
                let t = typeOf(e)
                let heads = e.name.hasSuffix("q_proj.weight") ? m.heads : e.name.hasSuffix("k_proj.weight") ? m.kvHeads : 0
                w.tensors.append(GGUFWriter.Tensor(name: fam.ggufName(e.name), shape: e.shape, type: t) { [self] in
                    let floats = Slab(count: e.count)
                    denseTensor(e, into: floats.base)
                    var src = floats
                    if permute, heads > 0 {
                        src = Slab(count: e.count)
                        permuteRowsToAdjacent(floats.base, heads: heads, hs: m.headSize, c: e.shape[1], out: src.base)
                    }
                    var d = Data(count: t.byteCount(elements: e.count))
                    if let scales, t == scales.scheme.ggmlType, let given = scales.scales(forOffset: e.offset) {
                        // the scales' rows move with their weights' rows
                        let perRow = e.shape[1] / 32, n = e.shape[0] * perRow
                        let s = Slab(count: n)
                        if permute, heads > 0 {
                            permuteRowsToAdjacent(given, heads: heads, hs: m.headSize, c: perRow, out: s.base)
                        } else {
                            s.base.update(from: given, count: n)
                        }
                        d.withUnsafeMutableBytes { quantizeScaled(t, src: src.base, count: e.count, scales: s.base, out: $0.baseAddress!) }
                    } else {
                        // the importances are per column: the Q/K rows' permutation leaves them as they are
                        d.withUnsafeMutableBytes { quantize(t, src: src.base, count: e.count, out: $0.baseAddress!, importance: importance?.row(forOffset: e.offset)) }
                    }
                    return d
                })
            }
        }
        if let f = m.ropeFreqFactors {
            // Llama 3.1+: the divisors as llama.cpp reads them
            w.tensors.append(GGUFWriter.Tensor(name: "rope_freqs.weight", shape: [f.count], type: .f32) {
                var d = Data(count: 4 * f.count)
                d.withUnsafeMutableBytes { b in for (i, x) in f.enumerated() { b.storeBytes(of: Float(x), toByteOffset: 4 * i, as: Float.self) } }
                return d
            })
        }
        try w.write(path: path)
    }
}
