import CBerth
import Glibc
import SystemPackage

/// mount(2) and friends, named for what they do.
public enum Mount {
    /// Mounts a file system of `type` at `target`.
    public static func make(_ type: String, source: String? = nil, at target: FilePath,
                            flags: UInt = 0, options: String? = nil) throws {
        try call("mount \(type)", target) { t in
            Glibc.mount(source ?? type, t, type, flags, options)
        }
    }

    /// Mounts a file system of `type` on exactly the directory `target` is open on.
    public static func make(_ type: String, onto target: Descriptor, flags: UInt = 0, options: String? = nil) throws {
        try withExtendedLifetime(target) { try make(type, at: target.procPath, flags: flags, options: options) }
    }

    /// Makes `source` appear at `target` as well (recursively with `recursive`).
    public static func bind(_ source: FilePath, at target: FilePath, recursive: Bool = true) throws {
        try source.withPlatformString { s in
            try call("bind mount of \(source)", target) { t in
                Glibc.mount(s, t, nil, UInt(MS_BIND) | (recursive ? UInt(MS_REC) : 0), nil)
            }
        }
    }

    /// Binds `source` (recursively) onto exactly the directory or file `target` is open on,
    /// read-only if asked. The target is not looked up by path, so nothing can redirect it.
    public static func bind(_ source: FilePath, onto target: Descriptor, readOnly: Bool) throws {
        try source.withPlatformString { s in
            _ = try retryingInterrupts("bind mount of \(source)", path: source.string) {
                cberth_bind_at_fd(s, target.rawValue, readOnly ? 1 : 0)
            }
        }
    }

    /// Makes the bind mount at `target` read-only, keeping nosuid/nodev/noexec as given.
    public static func remountReadOnly(_ target: FilePath, extraFlags: UInt = 0) throws {
        try call("read-only remount", target) { t in
            Glibc.mount(nil, t, nil, UInt(MS_BIND | MS_REMOUNT | MS_RDONLY) | extraFlags, nil)
        }
    }

    /// Stops mount events from flowing between this namespace and the one it came from.
    public static func makePrivate(_ target: FilePath) throws {
        try call("make private", target) { t in Glibc.mount(nil, t, nil, UInt(MS_REC | MS_PRIVATE), nil) }
    }

    /// Makes `newRoot` the root of this mount namespace and drops the old root entirely.
    /// pivot_root(".", ".") stacks the old root under the new one, where one detach removes it.
    public static func pivotRoot(to newRoot: FilePath) throws {
        try call("chdir", newRoot) { Glibc.chdir($0) }
        try retryingInterrupts("pivot_root") { cberth_pivot_root(".", ".") }
        try retryingInterrupts("umount old root") { Glibc.umount2(".", Int32(MNT_DETACH)) }
        try retryingInterrupts("chdir /") { Glibc.chdir("/") }
    }

    private static func call(_ what: String, _ target: FilePath, _ body: (UnsafePointer<CChar>) -> Int32) throws {
        try target.withPlatformString { t in
            _ = try retryingInterrupts(what, path: target.string) { body(t) }
        }
    }
}
