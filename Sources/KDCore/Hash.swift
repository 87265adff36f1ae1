// A stable 64-bit hash for identities stored in files (tokenizers, configs).

/// FNV-1a over strings (the tokenizer hash shards carry).
public func fnv1a(_ parts: [String]) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for p in parts {
        for b in p.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        h = (h ^ 0xFF) &* 0x100_0000_01b3
    }
    return h
}
