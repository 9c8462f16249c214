import BerthSystem
import Glibc
import SystemPackage

/// A resource limit from `--property=NAME=VALUE`, in systemd's words (systemd.resource-control),
/// which berth writes to the machine's cgroup itself, with no systemd to do it: on the unified
/// hierarchy where the host gives it the controller, else in the v1 controller's hierarchy (a
/// hybrid host, such as a Debian host without systemd, has only v1 controllers).
public struct CgroupLimit: Equatable, Sendable {
    public enum Property: String, CaseIterable, Sendable {
        case memoryMax = "MemoryMax", memoryHigh = "MemoryHigh", cpuQuota = "CPUQuota", cpuWeight = "CPUWeight"
        case tasksMax = "TasksMax", ioWeight = "IOWeight"
    }

    public let property: Property
    /// Bytes, tasks, a weight, or the quota in microseconds per 100 ms; nil for `infinity`.
    let value: UInt64?

    /// The period a CPU quota is counted in, as systemd's default.
    static let cpuPeriod: UInt64 = 100_000

    /// Reads `NAME=VALUE`: sizes with K, M, G, T (of 1024) or a percentage of the host's memory,
    /// `CPUQuota=` a percentage of one CPU, weights 1 to 10000, `TasksMax=` a number or a
    /// percentage of the host's pid limit; `infinity` where systemd takes it.
    public init(parsing text: String) throws {
        let parts = text.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        let names = Property.allCases.map(\.rawValue).joined(separator: ", ")
        guard parts.count == 2, let property = Property(rawValue: String(parts[0])) else {
            throw LaunchError("--property takes NAME=VALUE with NAME one of \(names), not '\(text)'")
        }
        self.property = property
        let value = String(parts[1])
        func invalid(_ what: String) -> LaunchError { LaunchError("--property=\(property.rawValue) takes \(what), not '\(value)'") }
        switch property {
        case .memoryMax, .memoryHigh:
            if value == "infinity" {
                self.value = nil
            } else if let percent = Self.percentage(value) {
                self.value = UInt64(Double(Self.physicalMemory) * percent / 100)
            } else {
                guard let bytes = Self.size(value), bytes > 0 else { throw invalid("a size (such as 512M or 2G), a percentage of memory, or infinity") }
                self.value = bytes
            }
        case .cpuQuota:
            guard let percent = Self.percentage(value), percent > 0 else { throw invalid("a percentage of one CPU (such as 50% or 200%)") }
            self.value = max(1000, UInt64(percent * Double(Self.cpuPeriod) / 100))
        case .cpuWeight, .ioWeight:
            guard let weight = UInt64(value), (1...10000).contains(weight) else { throw invalid("a weight from 1 to 10000 (100 is the default)") }
            self.value = weight
        case .tasksMax:
            if value == "infinity" {
                self.value = nil
            } else if let percent = Self.percentage(value) {
                self.value = max(1, UInt64(Double(Self.pidLimit) * percent / 100))
            } else {
                guard let tasks = UInt64(value), tasks > 0 else { throw invalid("a number of tasks, a percentage, or infinity") }
                self.value = tasks
            }
        }
    }

    /// The unified hierarchy's controller, file and what is written to it.
    var unified: (controller: String, file: String, value: String) {
        let limit = value.map(String.init) ?? "max"
        switch property {
        case .memoryMax: return ("memory", "memory.max", limit)
        case .memoryHigh: return ("memory", "memory.high", limit)
        case .cpuQuota: return ("cpu", "cpu.max", "\(limit) \(Self.cpuPeriod)")
        case .cpuWeight: return ("cpu", "cpu.weight", limit)
        case .tasksMax: return ("pids", "pids.max", limit)
        case .ioWeight: return ("io", "io.weight", "default \(limit)")
        }
    }

    /// The v1 controller's hierarchy, and the files written there in order, as systemd maps
    /// each property on v1. v1 has no memory.high: `MemoryHigh=` becomes the soft limit, which
    /// the kernel reclaims down to only when the host runs short of memory.
    var legacy: (controller: String, files: [(file: String, value: String)]) {
        switch property {
        case .memoryMax: return ("memory", [("memory.limit_in_bytes", value.map(String.init) ?? "-1")])
        case .memoryHigh: return ("memory", [("memory.soft_limit_in_bytes", value.map(String.init) ?? "-1")])
        case .cpuQuota: return ("cpu", [("cpu.cfs_period_us", "\(Self.cpuPeriod)"), ("cpu.cfs_quota_us", value.map(String.init) ?? "-1")])
        case .cpuWeight:
            // cpu.shares is 1024 at the weight of 100.
            return ("cpu", [("cpu.shares", "\(min(max((value ?? 100) * 1024 / 100, 2), 262_144))")])
        case .tasksMax: return ("pids", [("pids.max", value.map(String.init) ?? "max")])
        case .ioWeight:
            // BFQ's weights run from 1 to 1000 with 100 the default: below 100 they scale
            // alike, above it onto 100...1000, as systemd converts them.
            let weight = value ?? 100
            let bfq = weight <= 100 ? weight : 100 + (weight - 100) * 900 / 9900
            return ("blkio", [("blkio.bfq.weight", "\(max(bfq, 1))")])
        }
    }

    // MARK: Reading values

    /// `N%` as N; nil when `text` is no percentage.
    static func percentage(_ text: String) -> Double? {
        guard text.hasSuffix("%"), let percent = Double(text.dropLast()), percent.isFinite, percent >= 0 else { return nil }
        return percent
    }

    /// Bytes, with an optional K, M, G or T (of 1024, as systemd reads them); nil when invalid
    /// or too large.
    static func size(_ text: String) -> UInt64? {
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var digits = Substring(text), factor: UInt64 = 1
        if let last = text.last, let unit = units[last] {
            digits = digits.dropLast()
            factor = unit
        }
        guard let number = UInt64(digits) else { return nil }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: factor)
        return overflow ? nil : bytes
    }

    static var physicalMemory: UInt64 { UInt64(sysconf(Int32(_SC_PHYS_PAGES))) * UInt64(sysconf(Int32(_SC_PAGESIZE))) }

    /// kernel.pid_max, which bounds the tasks a machine can have.
    static var pidLimit: UInt64 {
        let bytes = (try? Descriptor.open("/proc/sys/kernel/pid_max", O_RDONLY).readAll(limit: 64)) ?? []
        return UInt64(String(decoding: bytes.filter { $0 != UInt8(ascii: "\n") }, as: UTF8.self)) ?? 32768
    }
}
