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

    /// Mounts an overlay of the directories `lowers` (top first) onto exactly the directory
    /// `target` is open on, with `upper` (a layer and its work directory) as its writable layer;
    /// without one it is read-only. Each layer is named by its descriptor's /proc path, so the
    /// store's path length does not bound the depth of the stack either.
    public static func overlay(lowers: [Descriptor], upper: (layer: Descriptor, work: Descriptor)?,
                               onto target: Descriptor, readOnly: Bool = false, attributes: MountAttributes = []) throws {
        let mount = try DetachedMount.overlay(lowers: lowers.map(\.procPath), upper: upper.map { ($0.layer.procPath, $0.work.procPath) },
                                              attributes: attributes.union(readOnly ? .readOnly : []))
        try mount.attach(onto: target)
    }

    /// Unmounts the file system at `target`; with `detach`, lazily (MNT_DETACH), so it goes as
    /// soon as nothing uses it.
    public static func unmount(_ target: FilePath, detach: Bool = false) throws {
        try call("umount", target) { Glibc.umount2($0, detach ? Int32(MNT_DETACH) : 0) }
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

    /// Makes the mount at `target` shared (not its submounts): mounts and unmounts beneath it
    /// reach the copies of it made from here on, in a namespace copied from this one.
    public static func makeShared(_ target: FilePath) throws {
        try call("make shared", target) { t in Glibc.mount(nil, t, nil, UInt(MS_SHARED), nil) }
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
