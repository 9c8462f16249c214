import BerthSystem
import CBerth
import Glibc
import SystemPackage

extension ContainerStage {
    /// The machine's /etc/resolv.conf and /etc/localtime, as `--resolv-conf=` and `--timezone=`
    /// (or their `auto`) say (`HostFiles`), done by the setup process before the pivot, as the
    /// container's root: the host's files are still in reach, the image's /etc is found as the
    /// container will find it (symlinks followed inside the tree). As in nspawn, what the image
    /// refuses (a read-only tree, a symlink where a copy would go) leaves the image's own.
    static func placeHostFiles(in tree: Directory, spec: LaunchSpec, mount: (String) throws -> DetachedMount) throws {
        guard spec.resolvConfAction != .off || spec.timezoneAction != .off,
              let etc = try? tree.openDirectory(inRoot: "etc", creating: false) else { return }
        let writable = spec.rootIsWritable
        let owner = spec.userRange?.base ?? 0
        switch spec.resolvConfAction {
        case .delete where writable: try ignoringRefusal { try etc.remove("resolv.conf", isDirectory: false) }
        case .copy where writable: try ignoringRefusal { try copy(spec.resolvConf, to: "resolv.conf", in: etc, owner: owner) }
        case .replace where writable: try ignoringRefusal { try replace(with: spec.resolvConf, "resolv.conf", in: etc, owner: owner) }
        case .bind where spec.descriptorRoles.contains("resolv"):
            try bind(mount("resolv"), onto: "resolv.conf", in: etc, tree: tree, creating: writable)
        case .bindOver where try spec.descriptorRoles.contains("resolv") && etc.status("resolv.conf")?.kind == .regular:
            try mount("resolv").attach(onto: etc.openFile("resolv.conf", CBERTH_O_PATH))
        default: break
        }
        var timezone = spec.timezoneAction
        if timezone == .symlink, let zone = spec.timezone {
            let current = (try? etc.readLink("localtime")).flatMap { HostFiles.zoneName($0.string) }
            if current == zone || !writable { return }
            if (try? tree.openPath(inRoot: FilePath("usr/share/zoneinfo").appending(zone))) != nil {
                return try ignoringRefusal {
                    try? etc.remove("localtime", isDirectory: false)
                    try etc.makeSymlink("localtime", target: "../usr/share/zoneinfo/\(zone)")
                }
            }
            timezone = .bind  // the image lacks the zone: the host's file, as nspawn falls back
        }
        switch timezone {
        case .delete where writable: try ignoringRefusal { try etc.remove("localtime", isDirectory: false) }
        case .bind where spec.descriptorRoles.contains("localtime"):
            try bind(mount("localtime"), onto: "localtime", in: etc, tree: tree, creating: writable)
        case .copy where writable: try ignoringRefusal { try replace(with: "/etc/localtime", "localtime", in: etc, owner: owner) }
        default: break
        }
    }

    /// What the image may refuse (ENOENT for a file to delete that is not there, ELOOP for a
    /// symlink a copy would write through) is no failure of the container's start.
    private static func ignoringRefusal(_ body: () throws -> Void) throws {
        do { try body() } catch let error as SystemError where [.noSuchFileOrDirectory, .tooManySymbolicLinkLevels, .readOnlyFileSystem,
                                                                 .permissionDenied, .notPermitted].contains(error.errno) {}
    }

    /// The host's `source` written over `name` in `etc`, never through a symlink there; left
    /// alone where it holds those bytes already, so that runs after the first change nothing
    /// (nspawn rewrites it each time). Anything but a plain file there (a FIFO, whose open would
    /// wait for ever; a device node) is the image's own, left as it is.
    private static func copy(_ source: FilePath, to name: FilePath, in etc: Directory, owner: uid_t) throws {
        if let kind = try etc.status(name)?.kind, kind != .regular { return }
        let bytes = try Descriptor.open(source, O_RDONLY).readAll(limit: 1 << 20)
        if try plainFile(name, in: etc) == bytes { return }
        try write(bytes, to: name, in: etc, owner: owner)
    }

    /// The host's `source` in place of `name` in `etc`, whatever it was (a symlink too): written
    /// beside it, then renamed over it; left alone where it is a plain file of those bytes.
    private static func replace(with source: FilePath, _ name: FilePath, in etc: Directory, owner: uid_t) throws {
        let bytes = try Descriptor.open(source, O_RDONLY).readAll(limit: 1 << 20)
        if try plainFile(name, in: etc) == bytes { return }
        let temporary = FilePath(".#\(name.string)-berth-\(Hex.random(4))")
        do {
            try write(bytes, to: temporary, in: etc, owner: owner)
            try etc.rename(temporary, to: name, .replace)
        } catch {
            try? etc.remove(temporary, isDirectory: false)
            throw error
        }
    }

    /// What the plain file `name` in `etc` holds; nil where it is missing or no plain file.
    private static func plainFile(_ name: FilePath, in etc: Directory) throws -> [UInt8]? {
        guard try etc.status(name)?.kind == .regular else { return nil }
        return try? etc.openFile(name, O_RDONLY).readAll(limit: (1 << 20) + 1)
    }

    /// `bytes` as they are (a time zone's file is binary) in `name`, the container's root's.
    private static func write(_ bytes: [UInt8], to name: FilePath, in etc: Directory, owner: uid_t) throws {
        let file = try etc.openFile(name, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
        try bytes.withUnsafeBytes { try file.writeAll($0) }
        try etc.setOwner(name, uid: owner, gid: owner)
    }

    /// Binds `file` onto `name` in /etc as the container will find it (a symlink followed
    /// within the tree), made where it is missing and the tree is writable.
    private static func bind(_ file: DetachedMount, onto name: FilePath, in etc: Directory, tree: Directory, creating: Bool) throws {
        var target = try? tree.openPath(inRoot: FilePath("etc").appending(name.components))
        if target == nil, creating, try etc.status(name) == nil {
            _ = try? etc.createFile(name, mode: 0o644)
            target = try? etc.openFile(name, CBERTH_O_PATH)
        }
        guard let target, try target.status().kind == .regular else { return }
        try file.attach(onto: target)
    }
}
