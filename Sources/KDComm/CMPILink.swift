// Links OpenMPI into every binary that uses KDComm, so the system library is checked at build time.
import CMPI

/// Returns the MPI library version string (also proves OpenMPI is linked).
public func mpiLibraryVersion() -> String {
    var buf = [CChar](repeating: 0, count: Int(MPI_MAX_LIBRARY_VERSION_STRING))
    var len: Int32 = 0
    _ = MPI_Get_library_version(&buf, &len)
    return String(cString: buf)
}
