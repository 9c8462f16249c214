import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// A cgroup v1 hierarchy of the host's: the controllers it holds, as /proc/PID/cgroup names
/// them ("cpu,cpuacct", "name=systemd"), and where this mount namespace has its root.
///
/// Every container gets a cgroup of its own in each of them (`ContainerCgroup`), so the cgroup
/// namespace its PID 1 is made in is rooted there in every hierarchy. Root inside, which may
/// mount any of them (a user namespace's root included), then sees its own subtree and nothing
/// above: not the host's tree, not another machine's, and not the hierarchy's root cgroup, whose
/// `release_agent` the kernel runs as the host's root (CVE-2022-0492).
struct LegacyCgroupHierarchy: Equatable, Sendable {
    let controllers: String
    let mountPoint: FilePath

    /// Whether it holds `controller` ("memory", "name=systemd").
    func holds(_ controller: String) -> Bool { controllers.split(separator: ",").contains { $0 == controller } }

    /// /proc/`process`/cgroup ("self" or a pid): the process's cgroup in each hierarchy.
    static func cgroupFile(of process: String) throws -> String {
        String(decoding: try Descriptor.open(FilePath("/proc/\(process)/cgroup"), O_RDONLY).readAll(limit: 1 << 16), as: UTF8.self)
    }

    /// The v1 lines of a /proc/PID/cgroup text, "ID:CONTROLLERS:PATH": each hierarchy's
    /// controllers and the process's cgroup there (the unified line, with none, is left out).
    static func memberships(_ text: String) -> [(controllers: String, path: String)] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, !fields[1].isEmpty else { return nil }
            return (String(fields[1]), String(fields[2]))
        }
    }

    /// Every v1 hierarchy the kernel has, where this mount namespace has it mounted whole and
    /// in sight (not under a later mount, as a pure v2 layout mounted over a hybrid one puts
    /// it). One mounted nowhere in sight is mounted for berth under /run/berth: the container
    /// must have a cgroup of its own there too, or it could mount the hierarchy at its root.
    static func all() throws -> [LegacyCgroupHierarchy] {
        let own = try cgroupFile(of: "self")
        let mounts = try Mount.entries().filter { entry in
            guard entry.type == "cgroup", entry.root == "/", let status = try? FileStatus.of(entry.point) else { return false }
            return entry.device == "\(cberth_major(status.device)):\(cberth_minor(status.device))"
        }
        return try memberships(own).map { membership in
            let wanted = Set(membership.controllers.split(separator: ","))
            if let mount = mounts.first(where: { wanted.isSubset(of: Set($0.superOptions.split(separator: ","))) }) {
                return LegacyCgroupHierarchy(controllers: membership.controllers, mountPoint: mount.point)
            }
            let point = try RuntimeDirectory.path("cgroup-v1").appending(membership.controllers)
            if mkdir(point.string, 0o700) != 0 && errno != EEXIST { throw SystemError.last("mkdir", path: point.string) }
            let options = membership.controllers.hasPrefix("name=") ? "none," + membership.controllers : membership.controllers
            do {
                try Mount.make("cgroup", at: point, flags: UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), options: options)
            } catch {
                throw LaunchError("the host's cgroup v1 hierarchy \(membership.controllers) is not mounted where berth can see it, and "
                    + "berth cannot mount it (\(error)); berth gives every container a cgroup of its own in each hierarchy")
            }
            return LegacyCgroupHierarchy(controllers: membership.controllers, mountPoint: point)
        }
    }
}
