import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// Where the container's first process starts, and what holds it to nspawn's device set.
///
/// Where the kernel takes BPF device programs on the unified (v2) hierarchy, as on pure v2
/// hosts and hybrid ones alike, the child is made directly in a unified cgroup (clone3 with
/// CLONE_INTO_CGROUP) that carries the program: a booted system's own cgroup, or for a command
/// one cgroup all commands share. Elsewhere the v1 devices controller does it, and the process
/// is moved into its cgroups after it is made.
struct ContainerCgroup {
    /// The unified cgroup the child is made in, with the device program attached.
    let unified: Descriptor?
    /// The fallback: the shared v1 devices cgroup, and a booted system's cgroup, joined by pid.
    let legacy: [CgroupDirectory]

    static let sharedName = "berth"

    /// `BERTH_LEGACY_DEVICES=1` makes berth use the v1 devices controller even where BPF device
    /// programs work, so the tests cover both ways on a hybrid host.
    private static let legacyForced = getenv("BERTH_LEGACY_DEVICES").map { String(cString: $0) == "1" } ?? false

    /// `system` is a booted system's own cgroup, when there is one.
    static func make(system: SystemCgroup?) throws -> ContainerCgroup {
        if !legacyForced, let hierarchy = SystemCgroup.unifiedHierarchy() {
            let path = system?.path ?? hierarchy.appending(sharedName)
            if system == nil {
                let made = path.withPlatformString { mkdir($0, 0o755) }
                if made != 0 && errno != EEXIST { throw SystemError.last("mkdir", path: path.string) }
            }
            let fd = try Descriptor.open(path, O_RDONLY | O_DIRECTORY)
            if cberth_attach_device_policy(fd.rawValue) == 0 {
                return ContainerCgroup(unified: fd, legacy: [])
            }
        }
        guard let devices = try DeviceCgroup.shared() else {
            throw LaunchError("this host has neither BPF device programs on cgroup v2 nor the v1 devices controller; berth cannot keep a container from the host's devices")
        }
        return ContainerCgroup(unified: nil, legacy: [devices] + (system.map { [$0] } ?? []))
    }

    /// Moves `pid` into the legacy cgroups (nothing to do when it was made in its cgroup).
    func place(_ pid: pid_t) throws {
        for cgroup in legacy { try cgroup.write("cgroup.procs", "\(pid)") }
    }
}

