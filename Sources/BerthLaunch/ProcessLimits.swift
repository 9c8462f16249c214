import BerthSystem
import CBerth
import Glibc

/// What nspawn sets on the container's processes besides its cgroup: resource limits
/// (`--rlimit=`), the OOM killer's score adjustment (`--oom-score-adjust=`) and the CPUs it may
/// run on (`--cpu-affinity=`). The setup process applies them to itself, still the host's root,
/// before it makes PID 1, which inherits them; the supervisor keeps its own.
///
/// Every limit not given is nspawn 252's default: the kernel's defaults for PID 1 (what a
/// booted host's init starts with), the number of processes and pending signals from the
/// host's PID 1 (the kernel scales those with memory), and the open files raised to a hard
/// limit of 512Ki (nspawn's HIGH_RLIMIT_NOFILE, or the kernel's nr_open when lower), so a
/// container does not inherit whatever the shell that ran berth had.
public struct ProcessLimits: Equatable, Sendable {
    public struct Limit: Equatable, Sendable {
        public var soft: UInt64
        public var hard: UInt64
    }

    /// By resource (RLIMIT_*): the limits given on the command line.
    public var limits: [Int32: Limit] = [:]
    public var oomScoreAdjust: Int32?
    /// The CPUs, by number; nil for all.
    public var cpus: [Int]?

    public init() {}

    // MARK: Names

    /// systemd's rlimit_table, in RLIMIT_* order.
    static let names: [(name: String, resource: Int32)] = [
        ("CPU", 0), ("FSIZE", 1), ("DATA", 2), ("STACK", 3), ("CORE", 4), ("RSS", 5), ("NPROC", 6), ("NOFILE", 7),
        ("MEMLOCK", 8), ("AS", 9), ("LOCKS", 10), ("SIGPENDING", 11), ("MSGQUEUE", 12), ("NICE", 13), ("RTPRIO", 14), ("RTTIME", 15),
    ]

    static func name(of resource: Int32) -> String { names.first { $0.resource == resource }?.name ?? "\(resource)" }

    // MARK: Parsing, as nspawn's options read them

    /// `--rlimit=NAME=SOFT[:HARD]`: NAME as systemd takes it (`NOFILE`, `RLIMIT_NOFILE` or
    /// `LimitNOFILE`), each value a number, `infinity`, a size for the limits in bytes
    /// (`64K`, base 1024), a time for CPU (seconds) and RTTIME (microseconds), or a nice value
    /// (`-5`, `+10`) for NICE.
    public mutating func addLimit(parsing text: String) throws {
        guard let equals = text.firstIndex(of: "=") else {
            throw LaunchError("--rlimit '\(text)' is not NAME=SOFT[:HARD] (for instance NOFILE=4096:8192)")
        }
        let given = String(text[..<equals])
        let bare = given.hasPrefix("RLIMIT_") ? String(given.dropFirst(7)) : given.hasPrefix("Limit") ? String(given.dropFirst(5)) : given
        guard let resource = Self.names.first(where: { $0.name == bare })?.resource else {
            throw LaunchError("--rlimit: no resource limit '\(given)'; the names are \(Self.names.map(\.name).joined(separator: ", "))")
        }
        let values = text[text.index(after: equals)...].split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let soft = Self.value(values[0], resource: resource), let hard = values.count == 2 ? Self.value(values[1], resource: resource) : soft else {
            throw LaunchError("--rlimit '\(text)' has a value that is not a number, a size, a time or infinity")
        }
        guard soft <= hard else { throw LaunchError("--rlimit '\(text)': the soft limit is above the hard one") }
        limits[resource] = Limit(soft: soft, hard: hard)
    }

    /// `--oom-score-adjust=N`, from -1000 to 1000.
    public mutating func setOOMScoreAdjust(parsing text: String) throws {
        guard let value = Int32(text), (-1000...1000).contains(value) else {
            throw LaunchError("--oom-score-adjust '\(text)' is not a number from -1000 to 1000")
        }
        oomScoreAdjust = value
    }

    /// `--cpu-affinity=LIST`: CPU numbers and ranges, separated by commas or spaces (`0-3,6`).
    public mutating func setCPUs(parsing text: String) throws {
        var cpus: Set<Int> = []
        for item in text.split(whereSeparator: { $0 == "," || $0 == " " }) {
            let bounds = item.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
            guard let first = Int(bounds[0]), let last = bounds.count == 2 ? Int(bounds[1]) : first, first >= 0, first <= last,
                  last < 1024 else {  // CPU_SETSIZE
                throw LaunchError("--cpu-affinity '\(text)' is not a list of CPU numbers and ranges (for instance 0-3,6)")
            }
            cpus.formUnion(first...last)
        }
        guard !cpus.isEmpty else { throw LaunchError("--cpu-affinity needs at least one CPU") }
        self.cpus = cpus.sorted()
    }

    private static func value(_ text: String, resource: Int32) -> UInt64? {
        if text == "infinity" { return UInt64.max }
        switch resource {
        case 0: return seconds(text, defaultUnit: 1_000_000).map { ($0 + 999_999) / 1_000_000 }  // CPU, whole seconds up
        case 15: return seconds(text, defaultUnit: 1)  // RTTIME, microseconds
        case 13:  // NICE: a nice value with its sign, or the raw 0...40
            if text.hasPrefix("+") || text.hasPrefix("-"), let nice = Int(text), (-20...19).contains(nice) { return UInt64(20 - nice) }
            return UInt64(text).flatMap { $0 <= 40 ? $0 : nil }
        case 1, 2, 3, 4, 5, 8, 9, 12: return size(text)
        default: return UInt64(text)
        }
    }

    /// systemd's parse_size with base 1024: a number and an optional B, K, M, G, T, P or E.
    private static func size(_ text: String) -> UInt64? {
        let units: [Character: Int] = ["B": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6]
        guard let last = text.last else { return nil }
        guard let power = units[last] else { return UInt64(text) }
        guard let number = UInt64(text.dropLast()) else { return nil }
        let (product, overflow) = number.multipliedReportingOverflow(by: UInt64(1) << (10 * power))
        return overflow ? nil : product
    }

    /// A time in microseconds: a number in `defaultUnit` microseconds, or with a unit.
    private static func seconds(_ text: String, defaultUnit: UInt64) -> UInt64? {
        let units: [(String, UInt64)] = [("usec", 1), ("us", 1), ("msec", 1000), ("ms", 1000), ("min", 60_000_000), ("sec", 1_000_000),
                                         ("s", 1_000_000), ("h", 3_600_000_000)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            guard let number = UInt64(text.dropLast(suffix.count)) else { return nil }
            return number.multipliedReportingOverflow(by: factor).overflow ? nil : number * factor
        }
        guard let number = UInt64(text) else { return nil }
        return number.multipliedReportingOverflow(by: defaultUnit).overflow ? nil : number * defaultUnit
    }

    // MARK: Applying

    /// nspawn 252's defaults (initialize_rlimits), with what was given over them.
    func effectiveLimits() -> [Int32: Limit] {
        let infinity = UInt64.max
        var result: [Int32: Limit] = [
            9: Limit(soft: infinity, hard: infinity), 4: Limit(soft: 0, hard: infinity), 0: Limit(soft: infinity, hard: infinity),
            2: Limit(soft: infinity, hard: infinity), 1: Limit(soft: infinity, hard: infinity), 10: Limit(soft: infinity, hard: infinity),
            8: Limit(soft: 8 << 20, hard: 8 << 20), 12: Limit(soft: 819_200, hard: 819_200), 13: Limit(soft: 0, hard: 0),
            5: Limit(soft: infinity, hard: infinity), 14: Limit(soft: 0, hard: 0), 15: Limit(soft: infinity, hard: infinity),
            3: Limit(soft: 8 << 20, hard: infinity),
        ]
        let nrOpen = (try? Descriptor.open("/proc/sys/fs/nr_open", O_RDONLY).readAll(limit: 64))
            .flatMap { UInt64(String(decoding: $0, as: UTF8.self).filter { !$0.isWhitespace }) } ?? 1 << 20
        result[7] = Limit(soft: 1024, hard: min(nrOpen, 512 * 1024))
        for resource: Int32 in [6, 11] {
            var soft: UInt64 = 0, hard: UInt64 = 0
            if cberth_get_limit(1, resource, &soft, &hard) == 0 { result[resource] = Limit(soft: soft, hard: hard) }
        }
        for (resource, limit) in limits { result[resource] = limit }
        return result
    }

    /// Sets them on this process, for the children it makes: as the host's root, so a hard limit
    /// may go up and the OOM score down.
    func apply() throws {
        for (resource, limit) in effectiveLimits().sorted(by: { $0.key < $1.key }) {
            if cberth_set_limit(resource, limit.soft, limit.hard) != 0 {
                throw LaunchError("cannot set the container's \(Self.name(of: resource)) limit: \(SystemError.last("setrlimit").errno)")
            }
        }
        if let oomScoreAdjust {
            do { try Descriptor.open("/proc/self/oom_score_adj", O_WRONLY).writeAll("\(oomScoreAdjust)\n") } catch let error as SystemError {
                let why = error.errno == .permissionDenied ? " (lowering it takes CAP_SYS_RESOURCE, which berth lacks here)" : ""
                throw LaunchError("cannot adjust the container's OOM score to \(oomScoreAdjust): \(error.errno)\(why)")
            }
        }
        if let cpus {
            let numbers = cpus.map { Int32($0) }
            if numbers.withUnsafeBufferPointer({ cberth_set_cpus($0.baseAddress, Int32($0.count)) }) != 0 {
                throw LaunchError("cannot set the container's CPUs (\(cpus.map(String.init).joined(separator: ","))): \(SystemError.last("sched_setaffinity").errno)")
            }
        }
    }

    // MARK: The launch description

    /// As fields of the launch description: `rlimit` RESOURCE=SOFT:HARD, `oom-score-adjust`, `cpus`.
    var fields: [(String, String)] {
        limits.sorted { $0.key < $1.key }.map { ("rlimit", "\($0.key)=\($0.value.soft):\($0.value.hard)") }
            + (oomScoreAdjust.map { [("oom-score-adjust", "\($0)")] } ?? [])
            + (cpus.map { [("cpus", $0.map(String.init).joined(separator: ","))] } ?? [])
    }

    /// Takes one field of the launch description; false when `key` is none of its own or the value is damaged.
    mutating func take(_ key: String, _ value: String) -> Bool {
        switch key {
        case "rlimit":
            let parts = value.split(whereSeparator: { $0 == "=" || $0 == ":" })
            guard parts.count == 3, let resource = Int32(parts[0]), let soft = UInt64(parts[1]), let hard = UInt64(parts[2]) else { return false }
            limits[resource] = Limit(soft: soft, hard: hard)
        case "oom-score-adjust":
            guard let value = Int32(value) else { return false }
            oomScoreAdjust = value
        case "cpus":
            let cpus = value.split(separator: ",").compactMap { Int($0) }
            guard !cpus.isEmpty else { return false }
            self.cpus = cpus
        default: return false
        }
        return true
    }
}
