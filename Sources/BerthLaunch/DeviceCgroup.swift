import BerthSystem
import Glibc
import SystemPackage

/// The devices a container may use, enforced by the kernel: a cgroup of the v1 devices
/// controller that denies every device but nspawn's set. Without it root in the container could
/// mknod a host disk (or find one in the image's tree) and read it. The supervisor moves the
/// container's first process into it before that process does anything.
struct DeviceCgroup: CgroupDirectory {
    static let hierarchy: FilePath = "/sys/fs/cgroup/devices"

    /// nspawn's set: the pseudo devices, the terminal, and the container's own ptys.
    static let allowed = [
        "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
        "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",
    ]

    let path: FilePath

    /// The one cgroup every container joins (the policy is the same for all, and making and
    /// removing a v1 cgroup per container costs more than the rest of a launch), with the policy
    /// written afresh; nil where the host has no v1 devices hierarchy (on a pure cgroup v2 host
    /// the same policy needs a BPF device program, which berth does not load yet).
    static func shared() throws -> DeviceCgroup? {
        guard try FileStatus.of(hierarchy.appending("devices.deny")) != nil else { return nil }
        let path = hierarchy.appending("berth")
        let made = path.withPlatformString { mkdir($0, 0o755) }
        if made != 0 && errno != EEXIST { throw SystemError.last("mkdir", path: path.string) }
        let cgroup = DeviceCgroup(path: path)
        try cgroup.write("devices.deny", "a")
        for rule in allowed { try cgroup.write("devices.allow", rule) }
        return cgroup
    }
}

/// A directory of a cgroup hierarchy, written through its control files.
protocol CgroupDirectory {
    var path: FilePath { get }
}

extension CgroupDirectory {
    /// Writes one line to the control file `file`.
    func write(_ file: String, _ value: String) throws {
        try Descriptor.open(path.appending(file), O_WRONLY).writeAll(value + "\n")
    }
}
