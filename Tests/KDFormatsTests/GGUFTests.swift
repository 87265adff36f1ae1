// GGUF reading against files written by the PyPI gguf package (llama.cpp's gguf-py), dequantization bit for bit
// against gguf-py's, and every corruption failing with a clear error.
import Foundation
import KDFormats
import KDQuant
import KDTestSupport
import Testing

let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts")

/// Fixtures are made once per test process.
let fixtures: URL = {
    let dir = try! temporaryDirectory("distill-gguf", removeAtExit: true)
    _ = try! runPython(scripts.appendingPathComponent("make_gguf_fixtures.py").path, [dir.path])
    return dir
}()

@Test(arguments: GGMLType.allCases)
func dequantizationIsBitExactWithGGUFPy(type: GGMLType) throws {
    let f = try GGUFFile(path: fixtures.appendingPathComponent("types.gguf").path)
    let t = try #require(f.tensor("\(type)"))
    #expect(t.type == type)
    #expect(t.shape == [3, 512])
    let ours = f.floats(t)
    let ref = try Data(contentsOf: fixtures.appendingPathComponent("\(type).f32"))
    let theirs = ref.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    #expect(ours.count == theirs.count)
    let mismatches = zip(ours, theirs).filter { $0.bitPattern != $1.bitPattern }.count
    #expect(mismatches == 0, "\(mismatches) of \(ours.count) values differ in their bits")
}

@Test func everyMetadataValueTypeReads() throws {
    let f = try GGUFFile(path: fixtures.appendingPathComponent("metadata.gguf").path)
    #expect(f.version == 3)
    #expect(f.metadata["general.architecture"]?.string == "llama")
    #expect(f.metadata["t.u8"]?.int == 200)
    #expect(f.metadata["t.i8"]?.int == -100)
    #expect(f.metadata["t.u16"]?.int == 60000)
    #expect(f.metadata["t.i16"]?.int == -30000)
    #expect(f.metadata["t.u32"]?.int == 4_000_000_000)
    #expect(f.metadata["t.i32"]?.int == -2_000_000_000)
    #expect(f.metadata["t.f32"]?.double == 0.25)
    #expect(f.metadata["t.u64"]?.int == (1 << 40) + 3)
    #expect(f.metadata["t.i64"]?.int == -(1 << 40))
    #expect(f.metadata["t.f64"]?.double == 1e-300)
    #expect(f.metadata["t.bool"]?.bool == true)
    #expect(f.metadata["t.str"]?.string == "héllo ✓")
    #expect(f.metadata["t.arr"]?.array?.compactMap(\.int) == [1, 2, 3])
    #expect(f.metadata["t.strs"]?.array?.compactMap(\.string) == ["a", "bc", ""])
    #expect(f.alignment == 64)
    #expect(f.dataOffset % 64 == 0)
    let x = try #require(f.tensor("x"))
    #expect(f.floats(x) == (0..<64).map(Float.init))
}

/// Copies the fixture with `edit` applied to its bytes.
func corrupted(_ name: String, _ edit: (inout [UInt8]) -> Void) throws -> String {
    var bytes = [UInt8](try Data(contentsOf: fixtures.appendingPathComponent(name)))
    edit(&bytes)
    let out = fixtures.appendingPathComponent("bad-\(UUID().uuidString).gguf")
    try Data(bytes).write(to: out)
    return out.path
}

@Test func version2HeadersRead() throws {
    let p = try corrupted("metadata.gguf") { $0[4] = 2 }
    #expect(try GGUFFile(path: p).version == 2)
}

@Test func corruptFilesFailWithClearErrors() throws {
    func message(_ path: String) -> String {
        do { _ = try GGUFFile(path: path); return "loaded" } catch { return "\(error)" }
    }
    #expect(message(try corrupted("types.gguf") { $0[0] = 0x50 }).contains("not a GGUF file (expected magic 'GGUF', found 'PGUF')"))
    #expect(message(try corrupted("types.gguf") { $0[4] = 9 }).contains("GGUF version 9 is not supported"))
    #expect(message(try corrupted("types.gguf") { $0.removeLast($0.count - 200) }).contains("truncated"))
    #expect(message(try corrupted("types.gguf") { $0.removeLast(100) }).contains("past the end of the"))
    #expect(message("/no/such.gguf").contains("no such file"))
    // an unknown tensor type: find the type field of the first tensor (F32 = 0, written after its 2 dims)
    let typed = try corrupted("types.gguf") { b in
        let name = Array("F32".utf8)
        for i in 0..<(b.count - 40) where Array(b[i..<(i + 3)]) == name && b[i - 8] == 3 {
            b[i + 3 + 4 + 16] = 99  // name, n_dims (u32), 2 × u64 dims, then the type
            break
        }
    }
    #expect(message(typed).contains("tensor 'F32': tensor type 99 is not supported"))
    // the fuzzer's first find: a dimension of 2^63 (and its neighbours) was a Swift trap; now each is a one-line error
    func dimension(_ value: UInt64, _ index: Int) throws -> String {
        try corrupted("types.gguf") { b in
            let name = Array("F32".utf8)
            for i in 0..<(b.count - 40) where Array(b[i..<(i + 3)]) == name && b[i - 8] == 3 {
                withUnsafeBytes(of: value.littleEndian) { for (j, x) in $0.enumerated() { b[i + 3 + 4 + 8 * index + j] = x } }
                break
            }
        }
    }
    for (value, index) in [(UInt64(1) << 63, 0), (UInt64.max, 1), (UInt64(1) << 32, 0), (UInt64(0), 1), ((UInt64(1) << 31) + 512, 1)] {
        let m = message(try dimension(value, index))
        #expect(m.contains("tensor 'F32'") && (m.contains("dimensions") || m.contains("past the end")), "\(value): \(m)")
    }
    // none of these crashed; a zero-byte file too
    #expect(message(try corrupted("types.gguf") { $0.removeAll() }).contains("not a GGUF file"))
}

@Test func modelLoadingErrorsNameTheProblem() throws {
    func message(_ path: String) -> String {
        do { _ = try loadGGUFModel(path: path); return "loaded" } catch { return "\(error)" }
    }
    #expect(message(fixtures.appendingPathComponent("mamba.gguf").path).contains("architecture 'mamba' is not supported (supported: llama, gemma3, qwen2, qwen3)"))
    #expect(message(fixtures.appendingPathComponent("metadata.gguf").path).contains("metadata key 'llama.block_count' is missing"))
    #expect(message(fixtures.appendingPathComponent("partial-llama.gguf").path).contains("tensor 'blk.0.attn_norm.weight' is missing"))
}
