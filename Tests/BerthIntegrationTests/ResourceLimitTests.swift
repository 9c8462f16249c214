import BerthSystem
import BerthTestSupport
import Foundation
import Glibc
import SystemPackage
import Testing

/// `--property=` limits without systemd (issue 14): written to the machine's cgroup, on cgroup
/// v2 where the host gives it the controller, else in the v1 controllers' hierarchies (this
/// host is hybrid: its unified hierarchy has no memory, cpu, pids or io controller).
@Suite struct ResourceLimitTests {
    func busybox(_ label: String) throws -> TemporaryDirectory {
        let tmp = try TemporaryDirectory(label)
        #expect(try berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp).status == 0)
        return tmp
    }

    /// dd's 80 MB buffer is anonymous memory it fills: it fits without a limit, and a 32M
    /// MemoryMax has the kernel kill it.
    @Test func aMemoryMaxStopsAnAllocationThatWorksWithoutIt() throws {
        let tmp = try busybox("limit-memory")
        let allocate = ["dd", "if=/dev/zero", "of=/dev/null", "bs=80M", "count=1"]
        let free = try berth(["run", "-q", "-M", "bb"] + allocate, store: tmp)
        #expect(free.status == 0 && free.stderr.contains("1+0 records out"), "\(free)")
        let limited = try berth(["run", "-q", "--property=MemoryMax=32M", "-M", "bb"] + allocate, store: tmp)
        #expect(limited.status == 128 + SIGKILL, "killed for its memory: \(limited)")
        let roomy = try berth(["run", "-q", "--property=MemoryMax=256M", "-M", "bb"] + allocate, store: tmp)
        #expect(roomy.status == 0, "\(roomy)")
    }

    /// Each limit is in the machine's cgroup, as the host sees it, while it runs; the cgroups go
    /// with it.
    @Test func everyLimitIsWrittenToTheMachinesCgroupsAndGoesWithIt() throws {
        let tmp = try busybox("limit-all")
        let name = "lim-\(Hex.random(6))"
        #expect(try berth(["rename", "bb", name], store: tmp).status == 0)
        // IOWeight on cgroup v1 needs the BFQ scheduler, which not every kernel has (this
        // machine's 6.18 has none): without it the limit is refused, in one line, before a start.
        let hasBFQ = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/blkio/blkio.bfq.weight")
        if !hasBFQ {
            let refused = try berth(["run", "-d", "-q", "-M", name, "--property=IOWeight=500", "/bin/sleep", "600"], store: tmp)
            #expect(refused.status != 0 && refused.stderr.contains("berth: error: cannot apply --property=IOWeight"), "\(refused)")
            #expect(try berth(["ps", "--json"], store: tmp).stdout.contains(name) == false, "a refused start is not listed")
        }
        let properties = ["MemoryMax=48M", "MemoryHigh=40M", "CPUQuota=50%", "CPUWeight=200", "TasksMax=12"] + (hasBFQ ? ["IOWeight=500"] : [])
        let started = try berth(["run", "-d", "-q", "-M", name] + properties.map { "--property=\($0)" } + ["/bin/sleep", "600"], store: tmp)
        #expect(started.status == 0, "\(started)")
        defer { _ = try? berth(["terminate", name], store: tmp) }
        let ps = try berth(["ps", "--json"], store: tmp)
        let machines = (try JSONSerialization.jsonObject(with: Data(ps.stdout.utf8)) as? [[String: Any]]) ?? []
        let leader = try #require(machines.first { $0["machine"] as? String == name }?["leader"] as? Int, "\(ps)")
        // The host's view of the leader's cgroups: hierarchy -> path.
        var cgroups: [String: String] = [:]
        for line in String(decoding: try readFile(FilePath("/proc/\(leader)/cgroup")), as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            if fields.count == 3 { for controller in fields[1].split(separator: ",") { cgroups[String(controller)] = String(fields[2]) } }
        }
        func value(_ controller: String, _ file: String) throws -> String {
            let path = try #require(cgroups[controller], "\(cgroups)")
            // A CPU limit's cgroup is beside the one the other machines share under realtime
            // group scheduling (ContainerCgroup.sharedRealtimeCgroup).
            #expect(path.hasPrefix("/berth/") || (controller == "cpu" && path.hasPrefix("/berth-cpu/")), "\(controller): \(path)")
            return String(decoding: try readFile(FilePath("/sys/fs/cgroup/\(controller)\(path)/\(file)")), as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try value("memory", "memory.limit_in_bytes") == "\(48 << 20)")
        #expect(try value("memory", "memory.soft_limit_in_bytes") == "\(40 << 20)")
        #expect(try value("cpu", "cpu.cfs_quota_us") == "50000")
        #expect(try value("cpu", "cpu.cfs_period_us") == "100000")
        #expect(try value("cpu", "cpu.shares") == "2048")
        #expect(try value("pids", "pids.max") == "12")
        if hasBFQ { #expect(try value("blkio", "blkio.bfq.weight").hasSuffix("136"), "IOWeight 500 is BFQ's 136") }
        // TasksMax holds inside: a shell cannot start twenty processes.
        let forks = try berth(["shell", name, "/bin/sh", "-c", "for i in $(seq 20); do sleep 2 & done; wait"], store: tmp)
        #expect(forks.stderr.contains("can't fork"), "\(forks)")

        let paths = (["memory", "cpu", "pids"] + (hasBFQ ? ["blkio"] : [])).compactMap { controller in cgroups[controller].map { "/sys/fs/cgroup/\(controller)\($0)" } }
        #expect(try berth(["terminate", name], store: tmp).status == 0)
        #expect(waitUntil { paths.allSatisfy { !FileManager.default.fileExists(atPath: $0) } }, "left behind: \(paths)")
    }

    /// A limit the command line gets wrong is one line and exit 64, found before anything is
    /// made: the store is as it was.
    @Test func aBadLimitIsOneError() throws {
        let tmp = try busybox("limit-bad")
        for property in ["MemoryMax=lots", "CPUQuota=50", "Nice=5"] {
            let result = try berth(["run", "-q", "--property=\(property)", "-M", "bb", "/bin/true"], store: tmp)
            #expect(result.status == 64 && result.stderr.hasPrefix("berth: error: --property")
                    && result.stderr.split(separator: "\n").count == 1, "\(result)")
        }
        #expect(try berth(["run", "-q", "-M", "bb", "/bin/true"], store: tmp).status == 0, "the image is not held")
    }
}
