import CBerth
import Glibc
import SystemPackage

/// The MOUNT_ATTR_* flags of a mount (mount_setattr(2), fsmount(2)).
public struct MountAttributes: OptionSet, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static let readOnly = MountAttributes(rawValue: UInt64(CBERTH_MOUNT_ATTR_RDONLY))
    public static let noSetUID = MountAttributes(rawValue: UInt64(CBERTH_MOUNT_ATTR_NOSUID))
    public static let noDevices = MountAttributes(rawValue: UInt64(CBERTH_MOUNT_ATTR_NODEV))
    public static let noExec = MountAttributes(rawValue: UInt64(CBERTH_MOUNT_ATTR_NOEXEC))
}

/// A mount that is attached nowhere yet: made by open_tree(2) or fsmount(2), it is reachable only
/// through its descriptor, so no other process on the host sees it, and it goes when the last
/// descriptor and the last mount stacked on it go. It can be changed (ids mapped, made read-only)
/// before it is attached, passed to another process, and attached there, in another mount
/// namespace (a container's), onto exactly the object a descriptor refers to.
public struct DetachedMount {
    public let descriptor: Descriptor

    public init(_ descriptor: Descriptor) { self.descriptor = descriptor }

    /// A copy of the mount tree at `path` (a bind mount that is not attached yet), with its
    /// submounts when `recursive`. The copy is private: a copy of a shared mount (every mount
    /// of a host whose PID 1 is systemd, the store's trees) would otherwise be its peer, and what
    /// is mounted on it, in a container, would show on the host.
    public static func copy(of path: FilePath, recursive: Bool = true) throws -> DetachedMount {
        let fd = try path.withPlatformString { p in
            try retryingInterrupts("open_tree", path: path.string) { cberth_open_tree(AT_FDCWD, p, recursive ? 1 : 0) }
        }
        return try privateCopy(Descriptor(owning: fd), recursive: recursive)
    }

    /// A copy of the mount at the file or directory `object` is open on, private as above.
    public static func copy(of object: Descriptor, recursive: Bool = true) throws -> DetachedMount {
        let fd = try retryingInterrupts("open_tree") { cberth_open_tree(object.rawValue, "", recursive ? 1 : 0) }
        return try privateCopy(Descriptor(owning: fd), recursive: recursive)
    }

    private static func privateCopy(_ copy: Descriptor, recursive: Bool) throws -> DetachedMount {
        _ = try retryingInterrupts("mount_setattr(MS_PRIVATE)") { cberth_mount_make_private(copy.rawValue, recursive ? 1 : 0) }
        return DetachedMount(copy)
    }

    /// Sets (and clears) flags on this mount, and on its submounts when `recursive`.
    public func set(_ attributes: MountAttributes, clearing: MountAttributes = [], recursive: Bool = true) throws {
        _ = try retryingInterrupts("mount_setattr") {
            cberth_mount_setattr(descriptor.rawValue, attributes.rawValue, clearing.rawValue, -1, recursive ? 1 : 0)
        }
    }

    /// Shows the files through the id mapping of `userNamespace`: an owner `n` on disk appears as
    /// the kernel id that namespace maps `n` to, and what is written through the mount is stored
    /// mapped back. The mount must not be attached yet, and its file system must support
    /// idmapped mounts (EINVAL otherwise).
    public func mapIDs(through userNamespace: Descriptor, recursive: Bool = true) throws {
        _ = try retryingInterrupts("mount_setattr(MOUNT_ATTR_IDMAP)") {
            cberth_mount_setattr(descriptor.rawValue, UInt64(CBERTH_MOUNT_ATTR_IDMAP), 0, userNamespace.rawValue, recursive ? 1 : 0)
        }
    }

    /// A new file system of `type` (tmpfs, sysfs, overlay...) configured by `options`, as a mount
    /// with `attributes`.
    public static func fileSystem(_ type: String, options: [(key: String, value: String)] = [],
                                  attributes: MountAttributes = []) throws -> DetachedMount {
        let fs = try retryingInterrupts("fsopen \(type)") { cberth_fsopen(type) }
        let context = Descriptor(owning: fs)
        for (key, value) in options where cberth_fsconfig_string(fs, key, value) != 0 {
            throw configurationError(context, type, key == "lowerdir+" ? "a layer" : key)
        }
        if cberth_fsconfig_create(fs) != 0 { throw configurationError(context, type, "\(options.count) options") }
        let mounted = try retryingInterrupts("fsmount \(type)") { cberth_fsmount(fs, attributes.rawValue) }
        return DetachedMount(Descriptor(owning: mounted))
    }

    /// An overlay of the directories `lowers` (top first) with `upper` (a layer and its work
    /// directory, on one mount) as its writable layer; without one it is read-only. Each layer is
    /// one `lowerdir+` (Linux 6.8 and later), so neither path length nor the one-page option
    /// string of mount(2) bounds the depth of the stack.
    public static func overlay(lowers: [FilePath], upper: (layer: FilePath, work: FilePath)?,
                               attributes: MountAttributes = []) throws -> DetachedMount {
        var options = lowers.map { (key: "lowerdir+", value: $0.string) }
        if let upper { options += [("upperdir", upper.layer.string), ("workdir", upper.work.string)] }
        return try fileSystem("overlay", options: options, attributes: attributes.union(upper == nil ? .readOnly : []))
    }

    /// Attaches this mount onto exactly the file or directory `target` is open on: no path is
    /// looked up, so no symlink can redirect it.
    public func attach(onto target: Descriptor) throws {
        _ = try retryingInterrupts("move_mount") { cberth_move_mount_to_fd(descriptor.rawValue, target.rawValue) }
    }

    /// The error of a failed file system configuration, with the kernel's own words.
    private static func configurationError(_ context: Descriptor, _ type: String, _ what: String) -> SystemError {
        let error = SystemError.last("\(type) mount", path: what)
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = Glibc.read(context.rawValue, &buffer, buffer.count)
        guard n > 2 else { return error }
        // Messages come as "e overlayfs: text".
        let text = String(decoding: buffer[2..<n].prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        return SystemError("\(type) mount (\(text))", error.errno, path: what)
    }
}
