import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// The command line as a new user and a script meet it: unknown commands, usage, one exit status
/// for usage errors, nspawn's checks of run's values, and list/show for scripts. Serialized: the
/// runs over the shared tree are writable, and a writer holds a tree alone.
@Suite(.serialized) struct CommandLineTests {
    /// A store with the busybox root imported as "bb", made once for the suite.
    static let shared: TemporaryDirectory = {
        let tmp = try! TemporaryDirectory.forProcess("cli")
        let result = try! berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp)
        precondition(result.status == 0, "\(result)")
        return tmp
    }()

    var tree: String { Self.shared.appending("store/bb").string }

    /// Every usage error, from run's hand-written parser or swift-argument-parser's, is one line
    /// and exit status 64 (EX_USAGE), and touches nothing: not even the store is made.
    @Test(arguments: [
        (["lsit"], "unknown command 'lsit'; did you mean 'list'?"),
        (["lst"], "unknown command 'lst'; did you mean 'list'?"),
        (["frobnicate"], "unknown command 'frobnicate' (see 'berth --help')"),
        (["help", "nosuch"], "unknown command 'nosuch'"),
        (["run", "/bin/true"], "give the tree to run"),
        (["-q", "/bin/true"], "give the tree to run"),
        (["run", "--bogus"], "unknown option '--bogus'"),
        (["run", "-D"], "-D needs a value"),
        (["boot"], "boot needs the name of an image"),
        (["run", "-D", "/x", "-M", "not_a_name"], "not a valid machine name"),
        (["run", "-b", "--as-pid2", "-D", "/x"], "exclude each other"),
        (["run", "--private-users=sideways", "-D", "/x"], "sideways"),
        (["list", "--bogus"], "Unknown option '--bogus'"),
        (["clone", "a"], "Missing expected argument"),
        (["import", "-q", "-"], "give a NAME"),
        (["import", "--max-size", "lots", "/x", "y"], "--max-size takes a size"),
        (["read-only", "x", "maybe"], "true or false"),
    ] as [([String], String)])
    func usageErrorsAreOneLineAndStatus64(_ arguments: [String], _ expected: String) throws {
        let tmp = try TemporaryDirectory("cli-usage")
        let result = try berth(arguments, store: tmp)
        expectCleanFailure(result, expected)
        #expect(result.status == 64, "\(result)")
        #expect(result.stdout.isEmpty, "\(result)")
        #expect(try FileStatus.of(tmp.appending("store")) == nil)
    }

    @Test func bareBerthPrintsUsageAndHelpAndVersionWork() throws {
        let tmp = try TemporaryDirectory("cli-usage")
        for arguments in [[], ["--store", tmp.appending("store").string]] {
            let bare = try run(berthBinary, arguments)
            #expect(bare.status == 0 && bare.stderr.isEmpty, "\(bare)")
            #expect(bare.stdout.contains("USAGE: berth") && bare.stdout.contains("SUBCOMMANDS:") && bare.stdout.contains("import"), "\(bare)")
        }
        let help = try run(berthBinary, ["help", "list"])
        #expect(help.status == 0 && help.stdout.contains("--no-legend"), "\(help)")
        let runHelp = try run(berthBinary, ["help", "run"])
        #expect(runHelp.status == 0 && runHelp.stdout.contains("--hostname"), "\(runHelp)")
        let version = try run(berthBinary, ["--version"])
        #expect(version.status == 0, "\(version)")
        #expect(version.stdout.range(of: #"^[0-9]+\.[0-9]+\.[0-9]+\n$"#, options: .regularExpression) != nil, "\(version)")
    }

    /// Run stays the default subcommand when its options come first, as nspawn's command line is.
    @Test func runIsStillTheDefaultWithItsOptionsFirst() throws {
        let store = Self.shared.appending("store").string
        let listing = try run(berthBinary, ["-qD", tree, "ls", "-la", "/etc"])
        #expect(listing.status == 0 && listing.stdout.contains("passwd"), "\(listing)")
        let withStore = try run(berthBinary, ["--store", store, "-qM", "bb", "/bin/cat", "/etc/hostname"])
        #expect(withStore.status == 0 && withStore.stdout == "busybox\n", "\(withStore)")
        let longForm = try run(berthBinary, ["-D", tree, "-q", "/bin/true"])
        #expect(longForm.status == 0, "\(longForm)")
        // -bD is read as run's options too: the missing tree is what it says, not an unknown command.
        for arguments in [["-bD", "/nonexistent"], ["--store", store, "-bD", "/nonexistent"]] {
            let result = try run(berthBinary, arguments)
            expectCleanFailure(result, "cannot use /nonexistent as the container's root")
            // Not a usage error (64): the line was read; what it names is not there (66).
            #expect(result.status == 66, "\(result)")
        }
    }

    /// nspawn's hostname_is_valid(), its -E and its --chdir rules: refused with one line, 64.
    @Test(arguments: [
        ["--hostname", "bad_name"], ["--hostname", "-bad"], ["--hostname", "bad-"], ["--hostname", "a..b"],
        ["--hostname", ".a"], ["--hostname", "a."], ["--hostname", "sp ace"], ["--hostname", "ü"],
        ["--hostname", String(repeating: "a", count: 64)], ["--hostname", String(repeating: "a.", count: 32) + "a"],
        ["-E", "BAD NAME=1"], ["-E", "=x"], ["-E", "1A=2"], ["--setenv=A-B=1"],
        ["--chdir", "tmp"], ["--chdir", "/tmp/../etc"], ["--chdir=./x"],
    ])
    func badValuesAreRefusedBeforeTheRun(_ options: [String]) throws {
        let result = try berth(["run", "-D", tree] + options + ["/bin/true"], store: Self.shared)
        let expected = options[0].hasPrefix("--hostname") ? "is not a valid hostname"
            : options[0].hasPrefix("--chdir") ? "--chdir" : "is not NAME=VALUE or NAME"
        expectCleanFailure(result, expected)
        #expect(result.status == 64, "\(result)")
    }

    @Test func goodValuesReachTheContainer() throws {
        let label63 = String(repeating: "h", count: 63)
        for name in ["good-name.example", "a", "x1-2.y", label63] {
            let result = try berth(["run", "-q", "-D", tree, "--hostname", name, "/bin/hostname"], store: Self.shared)
            #expect(result.status == 0 && result.stdout == name + "\n", "\(result)")
        }
        let empty = try berth(["run", "-q", "-D", tree, "--hostname=", "/bin/hostname"], store: Self.shared)
        #expect(empty.stdout == "bb\n", "an empty --hostname is the default, as nspawn's: \(empty)")
        let env = try berth(["run", "-q", "-D", tree, "-E", "_A1=x y", "--chdir", "/etc", "/bin/sh", "-c", "echo $_A1; pwd"], store: Self.shared)
        #expect(env.status == 0 && env.stdout == "x y\n/etc\n", "\(env)")
    }

    /// An ephemeral run is a machine of its own, with a random name; it says which.
    @Test func anEphemeralRunPrintsTheNameItGot() throws {
        let result = try berth(["run", "-x", "-M", "bb", "/bin/hostname"], store: Self.shared)
        #expect(result.status == 0, "\(result)")
        let hostname = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(hostname.range(of: "^bb-[0-9a-f]{16}$", options: .regularExpression) != nil, "\(result)")
        #expect(result.stderr.contains("Spawning container \(hostname) on "), "\(result)")
        let quiet = try berth(["run", "-q", "-x", "-M", "bb", "/bin/hostname"], store: Self.shared)
        #expect(quiet.status == 0 && quiet.stderr.isEmpty && quiet.stdout != result.stdout, "\(quiet)")
    }

    /// --no-legend and --json on list and show; times in ISO 8601 with their zone, in both.
    @Test func listAndShowForScripts() throws {
        let before = Date()
        let tmp = try TemporaryDirectory("cli-list")
        #expect(try berth(["import", "-q", Fixtures.busybox, "bb"], store: tmp).status == 0)
        #expect(try berth(["clone", "bb", "c1"], store: tmp).status == 0)
        let iso = #"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{2}:[0-9]{2}"#
        let parser = ISO8601DateFormatter()

        let table = try berth(["list"], store: tmp)
        #expect(table.stdout.hasPrefix("NAME ") && table.stdout.contains("2 images listed."), "\(table)")
        let rows = try berth(["list", "--no-legend"], store: tmp)
        let lines = rows.stdout.split(separator: "\n")
        #expect(rows.status == 0 && lines.count == 2, "\(rows)")
        #expect(lines.first?.hasPrefix("bb ") == true && lines.last?.hasPrefix("c1 ") == true, "\(rows)")
        #expect(!rows.stdout.contains("NAME") && !rows.stdout.contains("listed"), "\(rows)")
        let created = lines.compactMap { line in line.range(of: iso, options: .regularExpression).map { String(line[$0]) } }
        #expect(created.count == 2, "\(rows)")

        let json = try berth(["list", "--json"], store: tmp)
        let records = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]] ?? []
        let jsonCreated = records.compactMap { $0["created"] as? String }
        #expect(jsonCreated == created, "the table and JSON give the same instant, in the same form: \(json)")
        for text in jsonCreated {
            let date = try #require(parser.date(from: text), "\(text)")
            #expect(date.timeIntervalSince(before) > -2 && date.timeIntervalSinceNow < 2, "\(text)")
        }

        let shown = try berth(["show", "c1", "--no-legend"], store: tmp)
        let values = shown.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        // The labelled form's order: Name, Kind, Path, OS, Description, Read-only, Usage, Shared, Created, Parent, ...
        #expect(values.count == 13 && values[0] == "c1" && values[1] == "layered" && values[2].hasPrefix("/"), "\(shown)")
        #expect(values[8].range(of: "^\(iso)$", options: .regularExpression) != nil && values[9] == "bb", "\(shown)")
        let labelled = try berth(["show", "c1"], store: tmp)
        #expect(labelled.stdout.contains("Created: \(values[8])"), "\(labelled)")
        let showJSON = try berth(["show", "--json", "c1"], store: tmp)
        let record = try JSONSerialization.jsonObject(with: Data(showJSON.stdout.utf8)) as? [String: Any]
        #expect(record?["created"] as? String == String(values[8]), "\(showJSON)")

        // In another zone, the same instant with that zone's offset.
        let store = tmp.appending("store").string
        let kolkata = try run(berthBinary, ["--store", store, "list", "--json"], environment: ["TZ": "Asia/Kolkata"])
        let there = (try JSONSerialization.jsonObject(with: Data(kolkata.stdout.utf8)) as? [[String: Any]] ?? []).compactMap { $0["created"] as? String }
        #expect(there.allSatisfy { $0.hasSuffix("+05:30") } && there.count == 2, "\(kolkata)")
        #expect(there.map { parser.date(from: $0) } == jsonCreated.map { parser.date(from: $0) })

        // An empty store prints nothing without the legend.
        #expect(try berth(["remove", "c1"], store: tmp).status == 0)
        #expect(try berth(["remove", "bb"], store: tmp).status == 0)
        let none = try berth(["list", "--no-legend"], store: tmp)
        #expect(none.status == 0 && none.stdout.isEmpty, "\(none)")
        #expect(try berth(["list"], store: tmp).stdout == "No images.\n")
    }
}
