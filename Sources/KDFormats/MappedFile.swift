// A read-only memory mapping of a file, or of one byte range of it, unmapped when the last reference goes (also when
// a reader's init throws). A teacher's tensors are mapped one range each, so a rank's address space holds the
// tensors it uses and not the whole file.
import Foundation
import KDCore

public final class MappedFile {
    /// The first requested byte (the mapping itself starts at the page boundary at or before it).
    public let base: UnsafeRawPointer
    /// Bytes requested (the whole file, or the range's length).
    public let size: Int
    let start: UnsafeMutableRawPointer, length: Int

    /// Maps `path`; `minSize` bytes at least, else `tooSmall(size)` is thrown.
    public convenience init(path: String, minSize: Int, tooSmall: (Int) -> any Error) throws {
        let size = try MappedFile.fileSize(path)
        guard size >= minSize else { throw tooSmall(size) }
        try self.init(path: path, offset: 0, length: size)
    }

    /// Maps bytes offset ..< offset + length of `path` (which the caller has checked lie inside the file).
    public init(path: String, offset: Int, length: Int) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw KDError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        let page = Int(sysconf(Int32(_SC_PAGESIZE))), aligned = offset / page * page
        self.length = max(1, length + offset - aligned)
        guard let m = mmap(nil, self.length, PROT_READ, MAP_PRIVATE, fd, off_t(aligned)), m != MAP_FAILED else {
            throw KDError.unreadable(path: path, reason: "mmap of bytes \(offset)..<\(offset + length) failed: \(String(cString: strerror(errno)))")
        }
        start = m
        base = UnsafeRawPointer(m + (offset - aligned))
        size = length
    }

    deinit { munmap(start, length) }

    /// The size of the file at `path`.
    public static func fileSize(_ path: String) throws -> Int {
        var st = stat()
        guard stat(path, &st) == 0 else { throw KDError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        return Int(st.st_size)
    }
}
