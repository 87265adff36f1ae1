// A read-only memory mapping of a whole file, unmapped when the last reference goes (also when a reader's init throws).
import Foundation
import KDCore

public final class MappedFile {
    public let base: UnsafeRawPointer
    public let size: Int

    /// Maps `path`; `minSize` bytes at least, else `tooSmall(size)` is thrown.
    public init(path: String, minSize: Int, tooSmall: (Int) -> any Error) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw KDError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw KDError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        size = Int(st.st_size)
        guard size >= minSize else { throw tooSmall(size) }
        guard let m = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), m != MAP_FAILED else {
            throw KDError.unreadable(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(m)
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), size) }
}
