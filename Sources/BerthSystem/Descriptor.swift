import CBerth
import Glibc
import SystemPackage

/// An open file descriptor that this object owns and closes when it goes away.
public final class Descriptor {
    public let rawValue: Int32

    /// Takes ownership of `rawValue`.
    public init(owning rawValue: Int32) {
        self.rawValue = rawValue
    }

    /// Whether this descriptor holds a lock taken with `lock`.
    private var locked = false

    deinit {
        // A lock belongs to the open file, which a child forked meanwhile by another thread
        // shares until its exec: closing alone would leave the lock held for that while.
        if locked { unlock() }
        Glibc.close(rawValue)
    }

    public var fileDescriptor: FileDescriptor { FileDescriptor(rawValue: rawValue) }

    /// Opens `path` with `flags` (O_CLOEXEC is always added).
    public static func open(_ path: FilePath, _ flags: Int32, mode: mode_t = 0) throws -> Descriptor {
        let fd = try path.withPlatformString { p in
            try retryingInterrupts("open", path: path.string) { Glibc.open(p, flags | O_CLOEXEC, mode) }
        }
        return Descriptor(owning: fd)
    }

    /// Reads up to `count` bytes into `buffer`; 0 means end of file.
    public func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        try retryingInterrupts("read") { Glibc.read(rawValue, buffer, count) }
    }

    /// Reads to the end of the file, or until `limit` bytes.
    public func readAll(limit: Int = .max) throws -> [UInt8] {
        var result: [UInt8] = []
        try readChunks(limit: limit) { result += $0 }
        return result
    }

    /// Reads to the end of the file (or until `limit` bytes) in chunks of up to 64 KiB, handing
    /// each to `body`, so a large file is never held whole.
    public func readChunks(limit: Int = .max, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var total = 0
        while total < limit {
            let want = min(buffer.count, limit - total)
            let n = try buffer.withUnsafeMutableBytes { raw in
                guard let base = raw.baseAddress else { return 0 }  // no room: read as the end
                return try read(into: base, count: want)
            }
            if n == 0 { break }
            try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
            total += n
        }
    }

    /// `/proc/self/fd/N`: a path that names exactly the file this descriptor is open on.
    public var procPath: FilePath { FilePath("/proc/self/fd/\(rawValue)") }

    /// Writes all of `buffer` at the current offset.
    public func writeAll(_ buffer: UnsafeRawBufferPointer) throws {
        guard let base = buffer.baseAddress else { return }  // an empty buffer: nothing to write
        var done = 0
        while done < buffer.count {
            done += try retryingInterrupts("write") {
                Glibc.write(rawValue, base + done, buffer.count - done)
            }
        }
    }

    /// Writes all of `buffer` at `offset`, leaving the file offset alone.
    public func writeAll(_ buffer: UnsafeRawBufferPointer, at offset: Int64) throws {
        guard let base = buffer.baseAddress else { return }  // an empty buffer: nothing to write
        var done = 0
        while done < buffer.count {
            done += try retryingInterrupts("pwrite") {
                Glibc.pwrite(rawValue, base + done, buffer.count - done, off_t(offset) + off_t(done))
            }
        }
    }

    /// Writes all of `bytes` to `fd`, a descriptor not owned here (a standard stream, a pty);
    /// false when a write fails.
    @discardableResult
    public static func writeAll(to fd: Int32, _ bytes: ArraySlice<UInt8>) -> Bool {
        bytes.withUnsafeBytes { buffer in
            guard let base = buffer.baseAddress else { return true }  // an empty buffer: nothing to write
            var done = 0
            while done < buffer.count {
                let n = Glibc.write(fd, base + done, buffer.count - done)
                if n < 0 { if errno == EINTR { continue } else { return false } }
                done += n
            }
            return true
        }
    }

    public func writeAll(_ string: String) throws {
        var s = string
        try s.withUTF8 { try writeAll(UnsafeRawBufferPointer($0)) }
    }

    public func truncate(to size: Int64) throws {
        try retryingInterrupts("ftruncate") { Glibc.ftruncate(rawValue, off_t(size)) }
    }

    public func sync() throws {
        try retryingInterrupts("fsync") { Glibc.fsync(rawValue) }
    }

    /// Flushes every dirty page of the file system that holds this file (syncfs(2)).
    public func syncFileSystem() throws {
        try retryingInterrupts("syncfs") { cberth_syncfs(rawValue) }
    }

    public func status() throws -> FileStatus {
        var st = stat()
        try retryingInterrupts("fstat") { Glibc.fstat(rawValue, &st) }
        return FileStatus(st)
    }

    /// Whether the file is on an overlay file system (fstatfs's OVERLAYFS_SUPER_MAGIC).
    public func isOverlay() throws -> Bool {
        try retryingInterrupts("fstatfs") { cberth_file_system_type(rawValue) } == 0x794c_7630
    }

    public func setOwner(uid: uid_t, gid: gid_t) throws {
        try retryingInterrupts("fchown") { Glibc.fchown(rawValue, uid, gid) }
    }

    public func setMode(_ mode: mode_t) throws {
        try retryingInterrupts("fchmod") { Glibc.fchmod(rawValue, mode) }
    }

    /// Sets access and modification times; `nil` access time means now.
    public func setTimes(access: timespec?, modification: timespec) throws {
        var times = [access ?? timespec(tv_sec: 0, tv_nsec: Int(CBERTH_UTIME_NOW)), modification]
        try retryingInterrupts("futimens") { Glibc.futimens(rawValue, &times) }
    }

    public enum LockKind { case shared, exclusive }

    /// Takes a BSD lock on the open file (flock(2)); returns false when `wait` is false and
    /// another descriptor holds a conflicting lock. The lock goes with this descriptor.
    public func lock(_ kind: LockKind, wait: Bool) throws -> Bool {
        let op = (kind == .shared ? LOCK_SH : LOCK_EX) | (wait ? 0 : LOCK_NB)
        while cberth_flock(rawValue, op) != 0 {
            if Glibc.errno == EINTR { continue }
            if Glibc.errno == EWOULDBLOCK { return false }
            throw SystemError.last("flock")
        }
        locked = true
        return true
    }

    /// Leaves the lock to a process this descriptor was passed to: it is not released here,
    /// and stays held for as long as that process keeps its copy open.
    public func handOverLock() { locked = false }

    /// Releases a lock taken with `lock`.
    public func unlock() {
        _ = cberth_flock(rawValue, LOCK_UN)
        locked = false
    }

    /// The inode flags (FS_IOC_GETFLAGS); nil where the file system has none.
    public func inodeFlags() -> InodeFlags? {
        var flags: UInt32 = 0
        return cberth_get_inode_flags(rawValue, &flags) == 0 ? InodeFlags(rawValue: flags) : nil
    }

    public func setInodeFlags(_ flags: InodeFlags) throws {
        try retryingInterrupts("ioctl(FS_IOC_SETFLAGS)") { cberth_set_inode_flags(rawValue, flags.rawValue) }
    }
}

/// An inode's flags (FS_IOC_GETFLAGS, <linux/fs.h>).
public struct InodeFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// FS_IMMUTABLE_FL: no change at all, not even by root; machinectl's read-only mark on a
    /// directory image off btrfs.
    public static let immutable = InodeFlags(rawValue: 0x10)
    /// FS_APPEND_FL: only appends.
    public static let appendOnly = InodeFlags(rawValue: 0x20)
}
