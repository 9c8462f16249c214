import BerthSystem
import CArchive
import Glibc
import SystemPackage

/// One member of an archive: a libarchive `archive_entry` that this object owns.
public final class ArchiveEntry {
    let pointer: OpaquePointer

    public enum Kind: Equatable {
        case regular, directory, symlink, hardLink, characterDevice, blockDevice, fifo, socket, unknown
    }

    init() {
        pointer = archive_entry_new()
    }

    deinit { archive_entry_free(pointer) }

    /// The member's path, for messages: control characters and bytes that are not UTF-8 are
    /// escaped (see `Printable`), so a name cannot reach the terminal as commands.
    public var path: String {
        archive_entry_pathname(pointer).map { Printable.escaping(bytes: UnsafeRawBufferPointer(start: $0, count: strlen($0))) } ?? ""
    }

    /// The member's path as bytes, exactly as stored.
    public var filePath: FilePath {
        get { archive_entry_pathname(pointer).map { FilePath(platformString: $0) } ?? FilePath() }
        set { newValue.withPlatformString { archive_entry_copy_pathname(pointer, $0) } }
    }

    /// The target of a hard link, as bytes.
    public var hardLinkPath: FilePath? {
        get { archive_entry_hardlink(pointer).map { FilePath(platformString: $0) } }
        set {
            guard let newValue else { return archive_entry_copy_hardlink(pointer, nil) }
            newValue.withPlatformString { archive_entry_copy_hardlink(pointer, $0) }
        }
    }

    /// Calls `body` with the symlink target as stored (raw bytes), or nil for other kinds.
    public func withSymlinkTarget<T>(_ body: (UnsafePointer<CChar>?) throws -> T) rethrows -> T {
        try body(archive_entry_symlink(pointer))
    }

    public var kind: Kind {
        if archive_entry_hardlink(pointer) != nil { return .hardLink }
        switch archive_entry_filetype(pointer) {
        case UInt32(Glibc.S_IFREG): return .regular
        case UInt32(Glibc.S_IFDIR): return .directory
        case UInt32(Glibc.S_IFLNK): return .symlink
        case UInt32(Glibc.S_IFCHR): return .characterDevice
        case UInt32(Glibc.S_IFBLK): return .blockDevice
        case UInt32(Glibc.S_IFIFO): return .fifo
        case UInt32(Glibc.S_IFSOCK): return .socket
        default: return .unknown
        }
    }

    /// Permission bits with setuid, setgid and sticky.
    public var permissions: mode_t { mode_t(archive_entry_perm(pointer)) & 0o7777 }
    public var uid: uid_t { uid_t(truncatingIfNeeded: archive_entry_uid(pointer)) }
    public var gid: gid_t { gid_t(truncatingIfNeeded: archive_entry_gid(pointer)) }
    public var size: Int64 { archive_entry_size(pointer) }

    public var modification: timespec {
        timespec(tv_sec: Int(archive_entry_mtime(pointer)), tv_nsec: Int(archive_entry_mtime_nsec(pointer)))
    }

    public var access: timespec? {
        guard archive_entry_atime_is_set(pointer) != 0 else { return nil }
        return timespec(tv_sec: Int(archive_entry_atime(pointer)), tv_nsec: Int(archive_entry_atime_nsec(pointer)))
    }

    public var symlinkTarget: String? { archive_entry_symlink(pointer).map { String(cString: $0) } }

    public var device: dev_t {
        makeDevice(major: UInt32(archive_entry_rdevmajor(pointer)), minor: UInt32(archive_entry_rdevminor(pointer)))
    }

    /// The data regions of a sparse file (offset, length), or nil when it has no holes.
    public var sparseRegions: [(offset: Int64, length: Int64)]? {
        let count = archive_entry_sparse_reset(pointer)
        guard count > 0 else { return nil }
        var regions: [(Int64, Int64)] = []
        var offset: la_int64_t = 0, length: la_int64_t = 0
        while archive_entry_sparse_next(pointer, &offset, &length) == ARCHIVE_OK {
            regions.append((offset, length))
        }
        return regions
    }

    /// Every extended attribute the member carries, in archive order.
    public var extendedAttributes: [(name: String, value: UnsafeRawBufferPointer)] {
        var result: [(String, UnsafeRawBufferPointer)] = []
        guard archive_entry_xattr_reset(pointer) > 0 else { return result }
        var name: UnsafePointer<CChar>?
        var value: UnsafeRawPointer?
        var size = 0
        while archive_entry_xattr_next(pointer, &name, &value, &size) == ARCHIVE_OK {
            guard let name else { continue }
            result.append((String(cString: name), UnsafeRawBufferPointer(start: value, count: size)))
        }
        return result
    }
}
