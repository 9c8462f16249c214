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

    /// The mount points of this mount namespace (field 5 of /proc/self/mountinfo), with their
    /// file system types.
    public static func table() throws -> [(path: FilePath, type: String)] {
        let bytes = try Descriptor.open("/proc/self/mountinfo", O_RDONLY).readAll()
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count > 7, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { return nil }
            return (unescapeMountPath(fields[4]), String(fields[dash + 1]))
        }
    }

    /// A process that has a mount of the file system on `device` somewhere other than at
    /// `except` in this mount namespace, in this namespace or in any other: the pid and its
    /// command name; nil when there is none. A tool that took a copy of the mount into a mount
    /// namespace of its own (systemd-nspawn -D does) keeps the file system alive after the host
    /// unmounts it, which only this finds. Each namespace is read once, through one of its
    /// processes; processes that go meanwhile are passed over.
    /// A holder whose command is among `lastResort` is named only when there is no other.
    public static func otherHolder(of device: dev_t, except: FilePath, lastResort: Set<String> = []) -> (pid: pid_t, command: String)? {
        var fallback: (pid: pid_t, command: String)?
        let id = Array("\(cberth_major(device)):\(cberth_minor(device))".utf8)
        let own = namespaceInode("self")
        var seen: Set<String> = []
        guard let proc = try? Directory(opening: "/proc") else { return nil }
        for entry in (try? proc.entryNames()) ?? [] {
            // A namespace counts as read only once its mountinfo was: a process that ends meanwhile
            // (or reads as empty, going) leaves it to the next of its processes.
            guard let pid = pid_t(entry.string), let namespace = namespaceInode(entry.string), !seen.contains(namespace),
                  let bytes = try? Descriptor.open(FilePath("/proc/\(pid)/mountinfo"), O_RDONLY).readAll(), !bytes.isEmpty else { continue }
            seen.insert(namespace)
            // Bytes, not Strings: a host's mountinfo has hundreds of lines, and this reads one a namespace.
            for line in bytes.split(separator: UInt8(ascii: "\n")) {
                let fields = line.split(separator: UInt8(ascii: " "), maxSplits: 5)
                guard fields.count > 4, fields[2].elementsEqual(id) else { continue }
                if namespace == own && unescapeMountPath(Substring(decoding: fields[4], as: UTF8.self)) == except { continue }
                let command = (try? Descriptor.open(FilePath("/proc/\(pid)/comm"), O_RDONLY).readAll(limit: 64))
                    .map { String(decoding: $0.filter { $0 != UInt8(ascii: "\n") }, as: UTF8.self) } ?? "?"
                guard lastResort.contains(command) else { return (pid, command) }
                if fallback == nil { fallback = (pid, command) }
                break
            }
        }
        return fallback
    }

    /// The mount namespace of /proc/`process`, as its link names it.
    private static func namespaceInode(_ process: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 64)
        let n = readlink("/proc/\(process)/ns/mnt", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// mountinfo writes space, tab, newline and backslash in paths as octal escapes.
    private static func unescapeMountPath(_ field: Substring) -> FilePath {
        var bytes: [UInt8] = []
        var i = field.utf8.startIndex
        let utf8 = field.utf8
        while i < utf8.endIndex {
            let c = utf8[i]
            if c == UInt8(ascii: "\\"), utf8.distance(from: i, to: utf8.endIndex) >= 4,
               let code = UInt8(String(decoding: utf8[utf8.index(after: i)..<utf8.index(i, offsetBy: 4)], as: UTF8.self), radix: 8) {
                bytes.append(code)
                i = utf8.index(i, offsetBy: 4)
            } else {
                bytes.append(c)
                i = utf8.index(after: i)
            }
        }
        bytes.append(0)
        return FilePath(platformString: bytes.map { CChar(bitPattern: $0) })
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
