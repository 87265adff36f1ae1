// Sizes computed from numbers a file supplies: overflow is an answer (nil), never a trap.

/// The product of `values` (1 for none), or nil when a value is negative or the product overflows Int.
public func checkedProduct(_ values: [Int]) -> Int? {
    var p = 1
    for v in values {
        guard v >= 0 else { return nil }
        let (r, overflow) = p.multipliedReportingOverflow(by: v)
        if overflow { return nil }
        p = r
    }
    return p
}
