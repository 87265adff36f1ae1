// Stable 64-bit hashes for identities stored in files (tokenizers, configs) and checkpoint checksums.
import Foundation

/// FNV-1a over strings (the tokenizer hash shards carry).
public func fnv1a(_ parts: [String]) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for p in parts {
        for b in p.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        h = (h ^ 0xFF) &* 0x100_0000_01b3
    }
    return h
}

/// FNV-1a over the bytes of a file taken as little-endian 64-bit words (a zero-padded tail), for checkpoint
/// checksums: fast enough for GiB files, and any flipped or missing byte changes it.
public func fileChecksum(path: String) throws -> String {
    guard let fh = FileHandle(forReadingAtPath: path) else { throw KDError.fileNotFound(path: path) }
    defer { try? fh.close() }
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    var total: UInt64 = 0
    while let chunk = try fh.read(upToCount: 1 << 20), !chunk.isEmpty {  // 1 MiB: a larger buffer comes back from the heap, not unmapped
        chunk.withUnsafeBytes { raw in
            let words = raw.count / 8
            for i in 0..<words { h = (h ^ raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)) &* 0x100_0000_01b3 }
            var tail: UInt64 = 0
            for i in (8 * words)..<raw.count { tail |= UInt64(raw[i]) << (8 * UInt64(i - 8 * words)) }
            if raw.count % 8 != 0 { h = (h ^ tail) &* 0x100_0000_01b3 }
        }
        total += UInt64(chunk.count)
    }
    h = (h ^ total) &* 0x100_0000_01b3
    return String(h, radix: 16)
}

/// FNV-1a over a token stream (the identity of a corpus split that a teacher cache was computed on).
public func tokenHash(_ tokens: [Int32]) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for t in tokens { h = (h ^ UInt64(UInt32(bitPattern: t))) &* 0x100_0000_01b3 }
    return h
}
