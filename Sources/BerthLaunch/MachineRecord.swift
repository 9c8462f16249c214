import BerthSystem
import Glibc
import SystemPackage

/// A running machine, as `/run/berth/machines/NAME.machine` records it (gone with the host's restart):
/// written atomically when the machine has started, removed by its supervisor when it ends. The
/// leader is checked by its pid and its start time, so a record whose supervisor was killed
/// (its machine died with it) or whose pid was reused is never taken for a machine: whoever
/// finds it stale removes it. A machine's name is its own while its lock (`NAME.lock`) is held,
/// by its supervisor, for as long as it runs.
public struct MachineRecord: Equatable, Sendable {
    public var name: String
    /// The container's PID 1, as the host sees it.
    public var leader: pid_t
    /// The leader's start time, in clock ticks since the host's boot (/proc/PID/stat field 22).
    public var leaderStart: UInt64
    public var supervisor: pid_t
    public var boot: Bool
    /// The store image it runs, or nil for a directory (`-D`).
    public var image: String?
    /// Where its tree is, as the user knows it.
    public var root: String
    /// When it started, in seconds since the epoch.
    public var since: Int64
    /// Its cgroup in the unified hierarchy, when it has one there.
    public var cgroup: String?
    /// `--kill-signal=`: what `poweroff` sends a command (a booted init gets SIGRTMIN+4, as
    /// machinectl sends it); nil for SIGKILL.
    public var killSignal: Int32?
    /// `--system-call-filter=`, `--suppress-sync=yes`: the machine's changes to nspawn's filter,
    /// which `berth shell` gives its commands too.
    public var filterChanges = SyscallFilterChanges()

    public init(name: String, leader: pid_t, supervisor: pid_t, boot: Bool, image: String?, root: String, cgroup: String?,
                killSignal: Int32? = nil) throws {
        guard let start = Self.startTime(of: leader) else { throw LaunchError("the machine's leader \(leader) is gone") }
        self.name = name
        self.leader = leader
        leaderStart = start
        self.supervisor = supervisor
        self.boot = boot
        self.image = image
        self.root = root
        since = Int64(time(nil))
        self.cgroup = cgroup
        self.killSignal = killSignal
    }

    // MARK: Where records live

    public static func directory() throws -> FilePath { try madeDirectory.get() }

    /// Made once a process: `berth shell` looks up two of its files before it enters a machine.
    private static let madeDirectory = Result { try RuntimeDirectory.path("machines") }

    /// `NAME.SUFFIX` in the directory, by string (FilePath's component appending is generic code
    /// that costs `berth shell` more than the lookup).
    private static func file(_ name: String, _ suffix: String) throws -> FilePath {
        FilePath(try directory().string + "/" + entry(name) + suffix)
    }

    /// Machine names are image names or directories' last components; a record's file is named
    /// by the name's hexadecimal bytes when the name is not a plain one.
    static func entry(_ name: String) -> String {
        let plain = !name.isEmpty && name.utf8.allSatisfy { $0.isASCIIAlphanumeric || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }
            && !name.hasPrefix(".")
        return plain ? name : "x-" + Hex.encode(Array(name.utf8))
    }

    public static func path(_ name: String) throws -> FilePath { try file(name, ".machine") }
    /// The console's output of a machine started in the background, kept until its next start.
    public static func logPath(_ name: String) throws -> FilePath { try file(name, ".log") }
    /// Where a machine started in the background tells it is up (`NOTIFY_SOCKET`).
    public static func notifyPath(_ name: String) throws -> FilePath { try file(name, ".notify") }

    /// Where `berth login` attaches to the console of a machine booted in the background.
    public static func consolePath(_ name: String) throws -> FilePath { try file(name, ".console") }

    /// The system call filter's program `berth shell` made for the machine, kept for the next.
    public static func filterPath(_ name: String) throws -> FilePath { try file(name, ".filter") }

    /// Takes `name`'s lock for a machine about to start; nil when a running machine holds it.
    public static func lockName(_ name: String) throws -> Descriptor? {
        let lock = try Descriptor.open(try file(name, ".lock"), O_RDWR | O_CREAT, mode: 0o600)
        return try lock.lock(.exclusive, wait: false) ? lock : nil
    }

    // MARK: Reading and writing

    /// Writes the record in one rename.
    public func write() throws {
        let fields = [
            ("name", Hex.encode(Array(name.utf8))), ("leader", "\(leader)"), ("leader-start", "\(leaderStart)"),
            ("supervisor", "\(supervisor)"), ("boot", boot ? "1" : "0"), ("root", Hex.encode(Array(root.utf8))), ("since", "\(since)"),
        ] + (image.map { [("image", Hex.encode(Array($0.utf8)))] } ?? []) + (cgroup.map { [("cgroup", Hex.encode(Array($0.utf8)))] } ?? [])
            + (killSignal.map { [("kill-signal", "\($0)")] } ?? []) + (filterChanges.isEmpty ? [] : [("filter-changes", Hex.encode(Array(filterChanges.encoded.utf8)))])
        let text = fields.map { "\($0.0)=\($0.1)\n" }.joined()
        let final = try Self.path(name)
        let temporary = FilePath(final.string + ".new-\(getpid())")
        let file = try Descriptor.open(temporary, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        try file.writeAll(text)
        _ = try temporary.withPlatformString { t in
            try final.withPlatformString { f in try retryingInterrupts("rename", path: final.string) { rename(t, f) } }
        }
    }

    /// The record of machine `name` when it runs; a stale one is removed.
    public static func running(_ name: String) throws -> MachineRecord? {
        guard let record = try read(path(name)) else { return nil }
        guard record.isRunning else {
            remove(record.name)
            return nil
        }
        return record
    }

    /// Every running machine, by name; stale records are removed.
    public static func all() throws -> [MachineRecord] {
        let directory = try Directory(opening: directory())
        var result: [MachineRecord] = []
        for entry in try directory.entryNames() where entry.string.hasSuffix(".machine") {
            guard let record = try read(directory.procPath(entry)) else { continue }
            if record.isRunning { result.append(record) } else { remove(record.name) }
        }
        return result.sorted { $0.name < $1.name }
    }

    static func read(_ path: FilePath) throws -> MachineRecord? {
        guard let file = try? Descriptor.open(path, O_RDONLY) else { return nil }
        // A list, not a dictionary: a few fields, and `berth shell` reads one record before it
        // enters the machine, where a dictionary's first use in this large binary costs a tenth
        // of a millisecond (its generic type is made at run time, by a search of the binary's
        // protocol conformances).
        let lines = String(decoding: try file.readAll(limit: 1 << 16), as: UTF8.self).split(separator: "\n")
        func field(_ key: String) -> String? {
            for line in lines {
                guard let equals = line.firstIndex(of: "="), line[..<equals] == key else { continue }
                return String(line[line.index(after: equals)...])
            }
            return nil
        }
        func text(_ key: String) -> String? { field(key).flatMap { Hex.decode($0) }.map { String(decoding: $0, as: UTF8.self) } }
        guard let name = text("name"), let leader = field("leader").flatMap({ pid_t($0) }), leader > 0,
              let start = field("leader-start").flatMap({ UInt64($0) }), let supervisor = field("supervisor").flatMap({ pid_t($0) }),
              let root = text("root"), let since = field("since").flatMap({ Int64($0) }) else { return nil }
        var record = MachineRecord(name: name, leader: leader, leaderStart: start, supervisor: supervisor, boot: field("boot") == "1",
                                   image: text("image"), root: root, since: since, cgroup: text("cgroup"))
        record.killSignal = field("kill-signal").flatMap { Int32($0) }
        guard var changes = SyscallFilterChanges(encoded: text("filter-changes") ?? "") else { return nil }
        if field("suppress-sync") == "1" { changes.suppressSync = true }  // as the berth before wrote it
        record.filterChanges = changes
        return record
    }

    private init(name: String, leader: pid_t, leaderStart: UInt64, supervisor: pid_t, boot: Bool, image: String?, root: String,
                 since: Int64, cgroup: String?) {
        self.name = name
        self.leader = leader
        self.leaderStart = leaderStart
        self.supervisor = supervisor
        self.boot = boot
        self.image = image
        self.root = root
        self.since = since
        self.cgroup = cgroup
    }

    /// Removes `name`'s record and its console's socket (the supervisor, when its machine ends).
    public static func remove(_ name: String) {
        for path in [try? path(name), try? consolePath(name), try? filterPath(name)] {
            _ = path?.withPlatformString { unlink($0) }
        }
    }

    // MARK: The leader

    /// Whether the recorded leader still runs: the same pid, started at the same time.
    public var isRunning: Bool { Self.startTime(of: leader) == leaderStart }

    /// Whether process `pid` runs (a zombie does not).
    public static func runs(_ pid: pid_t) -> Bool { startTime(of: pid) != nil }

    /// Field 22 of /proc/PID/stat: the process's start time; nil when there is no such process,
    /// or only its zombie (a machine's PID 1 killed with its supervisor, not yet reaped).
    static func startTime(of pid: pid_t) -> UInt64? {
        guard let bytes = try? Descriptor.open(FilePath("/proc/\(pid)/stat"), O_RDONLY).readAll(limit: 4096) else { return nil }
        // The command name, in parentheses, may hold spaces and parentheses: fields count after
        // its last ')'. Field 3 (the state) is the first after the name: 22 is the 20th. Read as
        // bytes, as `berth shell` reads it before it enters a machine.
        guard let close = bytes.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        var fields = bytes[(close + 1)...].split(separator: UInt8(ascii: " "), maxSplits: 20).makeIterator()
        guard let state = fields.next(), state.first != UInt8(ascii: "Z"), state.first != UInt8(ascii: "X") else { return nil }
        for _ in 0..<18 { guard fields.next() != nil else { return nil } }
        guard let start = fields.next(), !start.isEmpty else { return nil }
        var value: UInt64 = 0
        for digit in start {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(digit) else { return nil }
            let (times, overflow) = value.multipliedReportingOverflow(by: 10)
            guard !overflow else { return nil }
            value = times + UInt64(digit - UInt8(ascii: "0"))
        }
        return value
    }

    /// The leader's command name (/proc/PID/comm).
    public var leaderCommand: String? {
        (try? Descriptor.open(FilePath("/proc/\(leader)/comm"), O_RDONLY).readAll(limit: 64))
            .map { String(decoding: $0.filter { $0 != UInt8(ascii: "\n") }, as: UTF8.self) }
    }

    /// ID and VERSION_ID of the machine's os-release, read through its leader's root.
    public var operatingSystem: (id: String, version: String) {
        guard let fields = OSRelease.read(under: "/proc/\(leader)/root") else { return ("-", "-") }
        return (fields.last { $0.key == "ID" }?.value ?? "-", fields.last { $0.key == "VERSION_ID" }?.value ?? "-")
    }

    /// The pids in the machine's cgroup and every cgroup below it.
    public var processes: [pid_t] {
        guard let cgroup else { return [leader] }
        var result: [pid_t] = []
        var pending = [FilePath(cgroup)]
        while let next = pending.popLast() {
            if let bytes = try? Descriptor.open(next.appending("cgroup.procs"), O_RDONLY).readAll() {
                result += String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { pid_t($0) }
            }
            guard let directory = try? Directory(opening: next) else { continue }
            for entry in (try? directory.entryNames()) ?? [] where (try? directory.status(entry))??.kind == .directory {
                pending.append(next.appending(entry.components))
            }
        }
        return result
    }
}

extension UInt8 {
    fileprivate var isASCIIAlphanumeric: Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self)
    }
}
