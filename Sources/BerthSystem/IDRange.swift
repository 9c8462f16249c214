import CBerth
import Glibc
import SystemPackage

/// A range of host user and group ids that a user namespace maps its ids 0..<count onto.
public struct IDRange: Equatable, Sendable {
    /// The host id that the namespace's id 0 (its root) is.
    public var base: UInt32
    public var count: UInt32

    public init(base: UInt32, count: UInt32) {
        self.base = base
        self.count = count
    }

    /// Maps process `pid`'s user namespace (new, with no maps yet) onto this range, users and
    /// groups alike, through `proc` (a procfs directory that shows the process). The writer
    /// keeps setgroups(2) allowed there: it is privileged over the range.
    public func writeMaps(of pid: pid_t, proc: Directory) throws {
        let line = "0 \(base) \(count)\n"
        for file in ["uid_map", "gid_map"] {
            try proc.openFile(FilePath("\(pid)/\(file)"), O_WRONLY).writeAll(line)
        }
    }

    /// A user namespace of its own whose ids map onto this range, which idmapped mounts are
    /// mapped through before the container's namespace exists. It lives while the descriptor
    /// is open.
    public func makeUserNamespace() throws -> Descriptor {
        Descriptor(owning: try retryingInterrupts("make a user namespace") { cberth_new_user_namespace(base, count) })
    }

    /// Runs `body` with this thread's file-system ids set to the range's root, its capabilities
    /// kept: a file system mounted meanwhile (an overlay) does its own work on its layers as that
    /// user, which an idmapped layer can store (as 0); the host's root it could not.
    public func asRoot<T>(_ body: () throws -> T) throws -> T {
        _ = try retryingInterrupts("setfsuid") { cberth_use_file_system_ids(base, base) }
        defer { _ = cberth_use_file_system_ids(geteuid(), getegid()) }
        return try body()
    }
}
