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
