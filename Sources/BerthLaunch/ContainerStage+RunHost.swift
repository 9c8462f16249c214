import BerthSystem
import CBerth
import Glibc
import SystemPackage

extension ContainerStage {
    /// /run/host as nspawn 252 makes it, read-only: what the host tells the container. The
    /// host's os-release, who manages the container (`berth`, as `container=` says), its id, the
    /// notify socket of a machine in the background, `incoming` (a directory only root may
    /// enter) and `inaccessible`, one entry of each kind with mode 0, which systemd inside binds
    /// over what a unit's InaccessiblePaths= names. Made by the setup process before the pivot,
    /// as the container's root.
    static func makeRunHost(in run: Directory, spec: LaunchSpec, notify: DetachedMount?) throws {
        let base = spec.userRange?.base ?? 0
        try run.makeDirectory("host", mode: 0o755)
        try run.setOwner("host", uid: base, gid: base)
        let host = try run.openDirectory(beneath: "host", pathOnly: true, crossingMounts: true)
        for (name, text) in [("container-manager", "berth\n"), ("container-uuid", "\(spec.uuid)\n")] {
            try host.createFile(FilePath(name), mode: 0o644).writeAll(text)
        }
        try host.makeDirectory("incoming", mode: 0o600)
        try host.makeDirectory("inaccessible", mode: 0o755)
        let inaccessible = try host.openDirectory(beneath: "inaccessible", pathOnly: true, crossingMounts: true)
        _ = try inaccessible.createFile("reg", mode: 0)
        try inaccessible.makeDirectory("dir", mode: 0)
        for (name, kind) in [("chr", S_IFCHR), ("blk", S_IFBLK), ("fifo", S_IFIFO), ("sock", S_IFSOCK)] {
            try inaccessible.makeNode(FilePath(name), mode: kind, device: 0)
        }
        if let notify {
            _ = try host.createFile("notify", mode: 0o600)
            try notify.attach(onto: host.openFile("notify", CBERTH_O_PATH))
        }
        let osRelease = ["/etc/os-release", "/usr/lib/os-release"].first { (path: String) in access(path, R_OK) == 0 }
        if let osRelease {
            _ = try host.createFile("os-release", mode: 0o644)
            let target = host.procPath("os-release")
            try Mount.bind(FilePath(osRelease), at: target, recursive: false)
            try Mount.remountReadOnly(target, extraFlags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC))
        }
        if !spec.credentials.isEmpty { try makeCredentials(spec.credentials, in: host) }
        let path = run.procPath("host")
        try Mount.bind(path, at: path, recursive: true)
        try Mount.remountReadOnly(path, extraFlags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC))
    }

    /// A boot id of the container's own, as nspawn gives each run: a random one bound read-only
    /// over /proc/sys/kernel/random/boot_id, from a file in the container's /run that is gone
    /// again once bound. PID 1 makes it, on its own /proc.
    static func mountOwnBootID(proc: Directory, run: Directory) throws {
        let name: FilePath = ".berth-boot-id"
        try run.createFile(name, mode: 0o444).writeAll(LaunchSpec.randomUUID() + "\n")
        defer { try? run.remove(name, isDirectory: false) }
        let target = proc.procPath("sys/kernel/random/boot_id")
        try Mount.bind(run.procPath(name), at: target, recursive: false)
        try Mount.remountReadOnly(target, extraFlags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC))
    }
}

extension ContainerStage {
    /// `--tmpfs=` and `--inaccessible=`, after the binds, as the setup process mounts them before
    /// the pivot. A tmpfs is the container's root's, mode 0755 unless its options say otherwise,
    /// without devices, as nspawn's; an inaccessible path is covered, read-only, by the entry of
    /// its kind in /run/host/inaccessible (which must exist, as nspawn requires it to).
    static func mountTmpfsAndInaccessible(in tree: Directory, spec: LaunchSpec) throws {
        let base = spec.userRange?.base ?? 0
        for tmpfs in spec.tmpfsMounts {
            let options = ["mode=0755", "uid=\(base)", "gid=\(base)"] + (tmpfs.options.isEmpty ? [] : [tmpfs.options])
            try Mount.make("tmpfs", onto: target(tmpfs.path, in: tree), flags: UInt(MS_NODEV | MS_STRICTATIME),
                           options: options.joined(separator: ","))
        }
        guard !spec.inaccessiblePaths.isEmpty else { return }
        let inaccessible = try tree.openDirectory(beneath: "run/host/inaccessible", pathOnly: true, crossingMounts: true)
        for path in spec.inaccessiblePaths {
            let relative = FilePath(root: nil, path.components)
            let target: Descriptor
            do { target = try tree.openPath(inRoot: relative) } catch let error as SystemError where error.errno == .noSuchFileOrDirectory {
                throw LaunchError("--inaccessible=\(path) names nothing in the image: give a path it has")
            }
            let kind: FilePath
            switch try target.status().kind {
            case .directory: kind = "dir"
            case .characterDevice: kind = "chr"
            case .blockDevice: kind = "blk"
            case .fifo: kind = "fifo"
            case .socket: kind = "sock"
            default: kind = "reg"
            }
            let cover = try DetachedMount.copy(of: inaccessible.openFile(kind, CBERTH_O_PATH), recursive: false)
            try cover.set(.readOnly, recursive: false)
            try cover.attach(onto: target)
        }
    }
}

extension ContainerStage {
    /// Where the container finds its credentials, as under nspawn (`$CREDENTIALS_DIRECTORY`).
    static let credentialsDirectory = "/run/host/credentials"

    /// The credentials in a ramfs of their own (never swapped out), one file each, 0400 in a
    /// directory of 0500. PID 1 gives them to the user it runs the command as and makes the
    /// mount read-only (`sealCredentials`).
    static func makeCredentials(_ credentials: [LaunchSpec.Credential], in host: Directory) throws {
        try host.makeDirectory("credentials", mode: 0o500)
        let directory = try host.openDirectory(beneath: "credentials", pathOnly: true, crossingMounts: true)
        try Mount.make("ramfs", onto: directory.descriptor, flags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), options: "mode=0500")
        let mounted = try host.openDirectory(beneath: "credentials", pathOnly: true, crossingMounts: true)
        for credential in credentials {
            var bytes = Array((credential.value ?? "").utf8)
            if let file = credential.file {
                do { bytes = try Descriptor.open(file, O_RDONLY).readAll(limit: 1 << 20) } catch {
                    throw LaunchError("cannot read credential '\(credential.id)' from \(file): \(error)")
                }
            }
            let out = try mounted.createFile(FilePath(credential.id), mode: 0o400)
            try bytes.withUnsafeBytes { try out.writeAll($0) }
        }
    }

    /// PID 1's part: the credentials become the command's user's (nspawn 252 leaves them root's,
    /// which a `-u` user cannot read: berth gives them to the user they are for), and read-only.
    static func sealCredentials(for user: ImageUser) throws {
        let directory = Directory(try Descriptor.open(FilePath(credentialsDirectory), O_RDONLY | O_DIRECTORY), displayPath: credentialsDirectory)
        if user.uid != 0 {
            for name in try directory.entryNames() { try directory.setOwner(name, uid: user.uid, gid: user.gid) }
            _ = try retryingInterrupts("fchown", path: credentialsDirectory) { fchown(directory.descriptor.rawValue, user.uid, user.gid) }
        }
        try Mount.remountReadOnly(FilePath(credentialsDirectory), extraFlags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC))
    }
}
