// Which format QAT trains each tensor in — and so what the exported GGUF holds: one scheme for the blocks and one for
// the tables (qat.scheme, qat.embedding_scheme), any block matrix in another (qat.tensor_types), or llama.cpp's
// per-tensor choice for a k-quant preset (qat.preset); then, for a k-quant on rows its 256-blocks do not divide,
// llama.cpp's fallback type.
import KDConfig
import KDCore
import KDQuant

public struct QuantPlan: Sendable {
    /// The scheme of each quantized matrix, by layout offset (nil: full precision).
    let byOffset: [Int: FakeQuantScheme]

    /// The plan of `qat` for a model of shape `config` laid out as `layout`.
    public init(qat: QATConfig, config: ModelConfig, layout: ParameterLayout) {
        var plan: [Int: FakeQuantScheme] = [:]
        let blocks = FakeQuantScheme(qat.scheme), tables = FakeQuantScheme(qat.tableScheme)
        let gqa = config.heads / max(config.kvHeads, 1)
        for e in layout.entries where e.isMatrix {
            let table = e.offset == layout.embedding || e.offset == layout.lmHead
            var s: FakeQuantScheme?
            if let preset = qat.preset, let role = TensorRole(huggingFaceName: e.name) {
                let t = preset.type(for: role, layer: ParameterLayout.block(of: e.name) ?? 0, layers: config.layers, gqa: gqa,
                                    tiedOutput: config.tiedEmbeddings)
                s = FakeQuantScheme(t)
            } else if !table, let matrix = TensorRole(huggingFaceName: e.name)?.blockMatrix, let t = qat.tensorTypes?[matrix] {
                s = FakeQuantScheme(t)
            } else {
                s = table ? tables : blocks
            }
            if let s { plan[e.offset] = s.forRows(of: e.shape[1]) }
        }
        byOffset = plan
    }

    /// The scheme of the tensor at `offset` (nil: full precision).
    public func scheme(at offset: Int) -> FakeQuantScheme? { byOffset[offset] }

    /// The GGUF type of matrix `e` in the file: its scheme's, F32 for per-channel schemes and full precision.
    public func ggmlType(_ e: ParameterLayout.Entry) -> GGMLType { byOffset[e.offset]?.ggmlType ?? .f32 }

    /// How many matrices take each GGUF type, for logs ("Q4_K ×98, Q6_K ×29, …"), most bytes first.
    public func summary(_ layout: ParameterLayout) -> String {
        var count: [GGMLType: Int] = [:], elements: [GGMLType: Int] = [:]
        for e in layout.entries where e.isMatrix {
            let t = ggmlType(e)
            count[t, default: 0] += 1
            elements[t, default: 0] += e.count
        }
        return count.keys.sorted { elements[$0]! > elements[$1]! }.map { "\($0) ×\(count[$0]!)" }.joined(separator: ", ")
    }
}
