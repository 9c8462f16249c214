import BerthSystem
@testable import BerthLaunch
import SystemPackage
import Testing

/// The values of --private-users, --private-users-ownership and --console, as nspawn spells them.
@Suite struct LaunchOptionParsingTests {
    @Test(arguments: [
        ("no", PrivateUsers.off), ("false", .off), ("off", .off),
        ("yes", .pick), ("true", .pick), ("on", .pick), ("pick", .pick),
        ("identity", .identity),
        ("65536", .range(IDRange(base: 65536, count: 65536))),
        ("1000:1", .range(IDRange(base: 1000, count: 1))),
        ("524288:65536", .range(IDRange(base: 524_288, count: 65536))),
        ("4294901759", .range(IDRange(base: 4_294_901_759, count: 65536))),  // the last base a whole 64K range fits above
        ("4294967294:1", .range(IDRange(base: 4_294_967_294, count: 1))),
    ])
    func privateUsersReads(_ text: String, _ expected: PrivateUsers) throws {
        #expect(try PrivateUsers(parsing: text) == expected)
    }

    @Test(arguments: [
        "", ":", "1000:", ":1000", "1000:0", "1:2:3", "-1", "0x10000", " 65536", "65536 ", "abc", "Pick", "IDENTITY",
        "4294901760",       // a 64K range would reach past the last id
        "4294967295:1",     // the last id, (uid_t)-1, is no id
        "4294967296",       // beyond 32 bits
        "1000:4294967295",
    ])
    func privateUsersRefuses(_ text: String) {
        let error = #expect(throws: LaunchError.self) { try PrivateUsers(parsing: text) }
        #expect(error?.message.contains("--private-users takes no, pick, identity or BASE[:COUNT]") == true)
    }

    /// nspawn reads digits as a base, never as a boolean ("do *not* parse numbers as
    /// booleans", nspawn.c), and takes parse_boolean's other spellings, in any case.
    @Test(arguments: [
        ("0", PrivateUsers.range(IDRange(base: 0, count: 65536))), ("1", .range(IDRange(base: 1, count: 65536))),
        ("y", .pick), ("t", .pick), ("YES", .pick), ("On", .pick), ("n", .off), ("f", .off), ("NO", .off), ("False", .off),
    ])
    func privateUsersReadsNspawnsOtherSpellings(_ text: String, _ nspawn: PrivateUsers) {
        #expect((try? PrivateUsers(parsing: text)) == nspawn)
    }

    @Test(arguments: [("map", PrivateUsersOwnership.map), ("auto", .auto)])
    func ownershipReads(_ text: String, _ expected: PrivateUsersOwnership) throws {
        #expect(try PrivateUsersOwnership(parsing: text) == expected)
    }

    @Test func ownershipChownIsRefusedWithTheReason() {
        let error = #expect(throws: LaunchError.self) { try PrivateUsersOwnership(parsing: "chown") }
        #expect(error?.message.contains("not supported") == true)
        #expect(error?.message.contains("use map") == true)
    }

    /// nspawn's `off` leaves the files unmapped, which shows them as nobody's inside: refused.
    @Test(arguments: ["off", "", "Map", "AUTO", "yes", "map ", "chown2"])
    func ownershipRefuses(_ text: String) {
        let error = #expect(throws: LaunchError.self) { try PrivateUsersOwnership(parsing: text) }
        #expect(error?.message.contains("--private-users-ownership takes map or auto, not '\(text)'") == true)
    }

    @Test(arguments: [("interactive", ConsoleMode.interactive), ("read-only", .readOnly), ("passive", .passive), ("pipe", .pipe)])
    func consoleReads(_ text: String, _ expected: ConsoleMode) throws {
        #expect(try ConsoleMode(parsing: text) == expected)
    }

    /// `automatic` is berth's default, not a value one can give; nspawn's `autopipe` (v247) is
    /// not berth's either: its default already gives piped streams straight through.
    @Test(arguments: ["automatic", "", "readonly", "read_only", "Interactive", "PIPE", "autopipe", "pipe "])
    func consoleRefuses(_ text: String) {
        let error = #expect(throws: LaunchError.self) { try ConsoleMode(parsing: text) }
        #expect(error?.message == "--console takes interactive, read-only, passive or pipe, not '\(text)'")
    }
}

@Suite struct PreparedMountsTests {
    static let cases: [([FilePath], FilePath)] = [
        ([], "/"),
        (["/store/layers/a"], "/store/layers/a"),
        (["/store/layers/a", "/store/layers/b", "/store/layers/c/d"], "/store/layers"),
        (["/store/layers/ab", "/store/layers/a"], "/store/layers"),   // by component, not by character
        (["/store/a/b", "/store/a/b"], "/store/a/b"),
        (["/store/a/b", "/store/a"], "/store/a"),
        (["/x/y", "/z"], "/"),
        (["/a/b/", "/a/b/c"], "/a/b"),
    ]

    @Test(arguments: cases)
    func commonDirectory(_ paths: [FilePath], _ expected: FilePath) {
        #expect(PreparedMounts.commonDirectory(of: paths) == expected)
        // Whatever the order.
        #expect(PreparedMounts.commonDirectory(of: paths.reversed()) == expected)
    }
}

/// `--property=NAME=VALUE` as systemd reads the six limits, and where berth writes each.
@Suite struct CgroupLimitParsingTests {
    @Test(arguments: [
        ("MemoryMax=32M", "memory.max", "33554432", "memory.limit_in_bytes", "33554432"),
        ("MemoryMax=1G", "memory.max", "1073741824", "memory.limit_in_bytes", "1073741824"),
        ("MemoryMax=4096", "memory.max", "4096", "memory.limit_in_bytes", "4096"),
        ("MemoryMax=infinity", "memory.max", "max", "memory.limit_in_bytes", "-1"),
        ("MemoryHigh=2T", "memory.high", "2199023255552", "memory.soft_limit_in_bytes", "2199023255552"),
        ("CPUQuota=50%", "cpu.max", "50000 100000", "cpu.cfs_quota_us", "50000"),
        ("CPUQuota=250%", "cpu.max", "250000 100000", "cpu.cfs_quota_us", "250000"),
        ("CPUWeight=200", "cpu.weight", "200", "cpu.shares", "2048"),
        ("CPUWeight=1", "cpu.weight", "1", "cpu.shares", "10"),
        ("TasksMax=16", "pids.max", "16", "pids.max", "16"),
        ("TasksMax=infinity", "pids.max", "max", "pids.max", "max"),
        ("IOWeight=100", "io.weight", "default 100", "blkio.bfq.weight", "100"),
        ("IOWeight=10000", "io.weight", "default 10000", "blkio.bfq.weight", "1000"),
        ("IOWeight=50", "io.weight", "default 50", "blkio.bfq.weight", "50"),
    ])
    func limitsGoWhereSystemdWritesThem(_ text: String, _ file: String, _ value: String, _ legacyFile: String, _ legacyValue: String) throws {
        let limit = try CgroupLimit(parsing: text)
        #expect(limit.unified.file == file && limit.unified.value == value)
        #expect(limit.legacy.files.last?.file == legacyFile && limit.legacy.files.last?.value == legacyValue)
    }

    @Test func percentagesAreOfTheHostsMemoryAndPids() throws {
        let half = try CgroupLimit(parsing: "MemoryMax=50%")
        #expect(half.value == CgroupLimit.physicalMemory / 2)
        #expect(try CgroupLimit(parsing: "TasksMax=10%").value == CgroupLimit.pidLimit / 10)
    }

    @Test(arguments: [
        "MemoryMax", "MemoryMax=", "MemoryMax=lots", "MemoryMax=0", "MemoryMax=-1", "MemoryMax=16E", "MemoryMax=99999999999999T",
        "CPUQuota=50", "CPUQuota=0%", "CPUQuota=x%", "CPUWeight=0", "CPUWeight=10001", "IOWeight=", "TasksMax=0", "TasksMax=-5",
        "MemoryLimit=1G", "memorymax=1G", "=1",
    ])
    func badLimitsAreRefused(_ text: String) {
        let error = #expect(throws: LaunchError.self) { try CgroupLimit(parsing: text) }
        #expect(error?.message.hasPrefix("--property") == true, "\(error?.message ?? "")")
    }
}
