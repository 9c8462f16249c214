import CBerth
import Glibc
import SystemPackage

/// What stat(2) says of one file, with its type spelled out.
public struct FileStatus: Equatable {
    public enum Kind: String, Equatable {
        case regular, directory, symlink, characterDevice, blockDevice, fifo, socket, unknown
    }

    public var kind: Kind
    /// Permission bits and setuid/setgid/sticky (mode & 07777).
    public var permissions: mode_t
    public var uid: uid_t
    public var gid: gid_t
    public var size: Int64
    /// 512-byte blocks allocated.
    public var blocks: Int64
    public var device: dev_t
    public var inode: ino_t
    public var linkCount: Int
    public var deviceNumber: dev_t
    public var modification: timespec

    public init(_ st: stat) {
        switch st.st_mode & S_IFMT {
        case S_IFREG: kind = .regular
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symlink
        case S_IFCHR: kind = .characterDevice
        case S_IFBLK: kind = .blockDevice
        case S_IFIFO: kind = .fifo
        case S_IFSOCK: kind = .socket
        default: kind = .unknown
        }
        permissions = st.st_mode & 0o7777
        uid = st.st_uid
        gid = st.st_gid
        size = Int64(st.st_size)
        blocks = Int64(st.st_blocks)
        device = st.st_dev
        inode = st.st_ino
        linkCount = Int(st.st_nlink)
        deviceNumber = st.st_rdev
        modification = st.st_mtim
    }

    public var deviceMajor: UInt32 { cberth_major(deviceNumber) }
    public var deviceMinor: UInt32 { cberth_minor(deviceNumber) }

    public static func == (a: FileStatus, b: FileStatus) -> Bool {
        a.kind == b.kind && a.permissions == b.permissions && a.uid == b.uid && a.gid == b.gid
            && a.size == b.size && a.blocks == b.blocks && a.device == b.device && a.inode == b.inode
            && a.linkCount == b.linkCount && a.deviceNumber == b.deviceNumber
            && a.modification.tv_sec == b.modification.tv_sec && a.modification.tv_nsec == b.modification.tv_nsec
    }
}

/// A device number from its major and minor parts (makedev(3)).
public func makeDevice(major: UInt32, minor: UInt32) -> dev_t { cberth_makedev(major, minor) }

extension FileStatus {
    /// The status of `path` (following symlinks, as the caller's own path lookup does); nil when
    /// nothing is there.
    public static func of(_ path: FilePath) throws -> FileStatus? {
        var st = stat()
        let rc = path.withPlatformString { Glibc.fstatat(AT_FDCWD, $0, &st, 0) }
        if rc == 0 { return FileStatus(st) }
        if Glibc.errno == ENOENT { return nil }
        throw SystemError.last("stat", path: path.string)
    }
}
