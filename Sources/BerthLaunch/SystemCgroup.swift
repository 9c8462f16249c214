import BerthSystem
import Glibc
import SystemPackage

/// The container's own cgroup in the unified (v2) hierarchy, which a booted systemd manages as
/// its root: the first process joins it, then enters a new cgroup namespace rooted there, and
/// mounts cgroup2 at /sys/fs/cgroup. On a hybrid host (v1 controllers, v2 at
/// /sys/fs/cgroup/unified) and on a pure v2 host alike.
struct SystemCgroup: CgroupDirectory {
    let path: FilePath

    /// Where the unified hierarchy is mounted, or nil when the host has none.
    static func unifiedHierarchy() -> FilePath? {
        for candidate in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] as [FilePath] {
            if (try? FileStatus.of(candidate.appending("cgroup.procs"))) != nil,
               (try? FileStatus.of(candidate.appending("cgroup.controllers"))) != nil {
                return candidate
            }
        }
        return nil
    }

    static func make(name: String) throws -> SystemCgroup? {
        guard let hierarchy = unifiedHierarchy() else { return nil }
        removeStale(in: hierarchy)
        let path = hierarchy.appending(name)
        _ = try path.withPlatformString { p in try retryingInterrupts("mkdir", path: path.string) { mkdir(p, 0o755) } }
        return SystemCgroup(path: path)
    }

    /// Removes the cgroup and whatever systemd made inside it, deepest first. rmdir fails on a
    /// cgroup that still has processes, so nothing alive is touched.
    func remove() { Self.removeTree(path) }

    private static func removeTree(_ path: FilePath) {
        if let dir = try? Directory(opening: path), let names = try? dir.entryNames() {
            for name in names where (try? dir.status(name))??.kind == .directory {
                removeTree(path.appending(name.components))
            }
        }
        _ = path.withPlatformString { rmdir($0) }
    }

    private static func removeStale(in hierarchy: FilePath) {
        guard let dir = try? Directory(opening: hierarchy), let names = try? dir.entryNames() else { return }
        for name in names where name.string.hasPrefix("berth-") {
            removeTree(hierarchy.appending(name.components))
        }
    }
}
