import CBerth
import Glibc
import SystemPackage

extension Directory {
    /// Opens whatever `path` names beneath this directory as an O_PATH descriptor (no read, no
    /// open side effects: a FIFO or a device is not opened), following symlinks, the last one
    /// too, as long as they stay beneath it: openat2 with RESOLVE_BENEATH refuses an absolute
    /// path, a `..` above this directory and a symlink that leads out (EXDEV), and
    /// RESOLVE_NO_MAGICLINKS refuses /proc's magic links. The kernel checks every step, so a
    /// tree that changes meanwhile cannot redirect the lookup. `fstat` and `/proc/self/fd/N`
    /// (`Descriptor.procPath`) reach the file it names.
    public func openPath(beneath path: FilePath) throws -> Descriptor {
        try openPath(path, resolve: CBERTH_RESOLVE_BENEATH)
    }

    /// Opens whatever `path` names as if this directory were the root, as an O_PATH descriptor:
    /// symlinks, the last one too, are followed but cannot lead out of it (openat2 with
    /// RESOLVE_IN_ROOT), as the path resolves for a process running in the tree.
    public func openPath(inRoot path: FilePath) throws -> Descriptor {
        try openPath(path, resolve: CBERTH_RESOLVE_IN_ROOT)
    }

    private func openPath(_ path: FilePath, resolve: Int32) throws -> Descriptor {
        let flags = UInt64(O_CLOEXEC | CBERTH_O_PATH)
        let fd = try path.withPlatformString { p in
            try retryingInterrupts("openat2", path: child(path)) {
                cberth_openat2(rawValue, p, flags, 0, UInt64(resolve | CBERTH_RESOLVE_NO_MAGICLINKS))
            }
        }
        return Descriptor(owning: fd)
    }
}
