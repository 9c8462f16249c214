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
