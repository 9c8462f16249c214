import BerthSystem
import Glibc
import SystemPackage

/// The devices a container may use, enforced by the kernel: a cgroup of the v1 devices
/// controller that denies every device but nspawn's set. Without it root in the container could
/// mknod a host disk (or find one in the image's tree) and read it.
struct DeviceCgroup {
    static let hierarchy: FilePath = "/sys/fs/cgroup/devices"

    /// nspawn's set: the pseudo devices, the terminal, and the container's own ptys.
    static let allowed = [
        "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
        "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",
    ]

    let path: FilePath

    /// Makes the cgroup, or returns nil where the host has no v1 devices hierarchy (on a pure
    /// cgroup v2 host the same policy needs a BPF device program, which berth does not load yet).
    static func make(name: String) throws -> DeviceCgroup? {
        guard try FileStatus.of(hierarchy.appending("devices.deny")) != nil else { return nil }
        removeStale()
        let path = hierarchy.appending(name)
        _ = try path.withPlatformString { p in try retryingInterrupts("mkdir", path: path.string) { mkdir(p, 0o755) } }
        let cgroup = DeviceCgroup(path: path)
        do {
            try cgroup.write("devices.deny", "a")
            for rule in allowed { try cgroup.write("devices.allow", rule) }
        } catch {
            cgroup.remove()
            throw error
        }
        return cgroup
    }

    func write(_ file: String, _ value: String) throws {
        let fd = try Descriptor.open(path.appending(file), O_WRONLY)
        try fd.writeAll(value + "\n")
    }

    /// Removes the cgroups of containers whose supervisor was killed before it could: rmdir
    /// succeeds only on a cgroup with no process left, so live containers keep theirs.
    static func removeStale() {
        guard let hierarchyDirectory = try? Directory(opening: hierarchy),
              let names = try? hierarchyDirectory.entryNames() else { return }
        for name in names where name.string.hasPrefix("berth-") {
            _ = hierarchy.appending(name.components).withPlatformString { rmdir($0) }
        }
    }

    /// Removes the cgroup once nothing is in it.
    func remove() {
        _ = path.withPlatformString { rmdir($0) }
    }
}
