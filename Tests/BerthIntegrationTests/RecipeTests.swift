import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// berth build: the shipped busybox recipe from scratch and cached, edits, bad recipes, and the
/// Debian recipe booted.
@Suite struct RecipeTests {
    static let recipes = projectRoot + "/recipes"
    /// What the busybox recipe needs from the command line: the host's /bin, as "bin".
    static let grant = ["--build-context", "bin=/bin"]

    func layers(_ name: String, store: TemporaryDirectory) throws -> [String] {
        let show = try berth(["show", "--json", name], store: store)
        let record = try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any]
        return record?["layers"] as? [String] ?? []
    }

    /// A copy of the busybox recipe in `tmp`, with `edit` applied to its text.
    func busyboxRecipe(in tmp: TemporaryDirectory, _ edit: (String) -> String = { $0 }) throws -> String {
        let text = try String(contentsOfFile: Self.recipes + "/busybox.toml", encoding: .utf8)
        let path = tmp.appending("busybox.toml").string
        try edit(text).write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func theBusyboxRecipeBuildsThenComesFromTheCache() throws {
        let tmp = try TemporaryDirectory("recipe")
        let first = try berth(["build"] + Self.grant + [Self.recipes + "/busybox.toml"], store: tmp)
        #expect(first.status == 0, "\(first)")
        #expect(first.stdout.contains("6 steps made, 0 from the cache"), "\(first)")
        let run = try berth(["run", "-q", "-M", "busybox", "/bin/sh", "-c", "cat /etc/hostname; cat /etc/passwd | head -1; test -L /bin/ls && echo linked"], store: tmp)
        #expect(run.stdout == "busybox\nroot:x:0:0:root:/root:/bin/sh\nlinked\n", "\(run)")
        let show = try berth(["show", "busybox"], store: tmp)
        #expect(show.stdout.contains("Description: A tiny static busybox root"), "\(show)")
        let built = try layers("busybox", store: tmp)
        #expect(built.count == 6)

        let again = try berth(["build"] + Self.grant + [Self.recipes + "/busybox.toml"], store: tmp)
        #expect(again.stdout.contains("0 steps made, 6 from the cache"), "\(again)")
        #expect(try layers("busybox", store: tmp) == built)
        // The cache keeps the layers through gc; dropping it frees those no image uses.
        #expect(try berth(["gc"], store: tmp).stdout.contains("Freed 0 layers"))
        let noCache = try berth(["build", "--no-cache"] + Self.grant + [Self.recipes + "/busybox.toml"], store: tmp)
        #expect(noCache.stdout.contains("6 steps made, 0 from the cache"), "\(noCache)")
        #expect(Set(try layers("busybox", store: tmp)).isDisjoint(with: built))
        let dropped = try berth(["gc", "--drop-cache"], store: tmp)
        #expect(dropped.stdout.contains("Freed 6 layers"), "\(dropped)")
        #expect(try berth(["run", "-q", "-M", "busybox", "/bin/true"], store: tmp).status == 0)
    }

    @Test func editingTheLastStepRebuildsOnlyIt() throws {
        let tmp = try TemporaryDirectory("recipe-edit")
        let original = try busyboxRecipe(in: tmp)
        #expect(try berth(["build", original, "--name", "bb"] + Self.grant, store: tmp).status == 0)
        let before = try layers("bb", store: tmp)
        let edited = try busyboxRecipe(in: tmp) { $0.replacingOccurrences(of: "hostname = \"busybox\"", with: "hostname = \"edited\"") }
        let rebuilt = try berth(["build", edited, "--name", "bb"] + Self.grant, store: tmp)
        #expect(rebuilt.stdout.contains("1 step made, 5 from the cache"), "\(rebuilt)")
        let after = try layers("bb", store: tmp)
        #expect(after.count == 6 && Array(after.prefix(5)) == Array(before.prefix(5)) && after[5] != before[5])
        #expect(try berth(["run", "-q", "-M", "bb", "/bin/cat", "/etc/hostname"], store: tmp).stdout == "edited\n")
    }

    @Test func aCopiedFileIsPartOfItsStepsKey() throws {
        let tmp = try TemporaryDirectory("recipe-copy")
        try writeFile(tmp.appending("motd"), "first\n")
        let recipe = try busyboxRecipe(in: tmp) { $0 + "\n[[step]]\ncopy = \"motd\"\nto = \"/etc/motd\"\n" }
        #expect(try berth(["build", recipe] + Self.grant, store: tmp).status == 0)
        #expect(try berth(["run", "-q", "-M", "busybox", "/bin/cat", "/etc/motd"], store: tmp).stdout == "first\n")
        try writeFile(tmp.appending("motd"), "second\n")
        let rebuilt = try berth(["build", recipe] + Self.grant, store: tmp)
        #expect(rebuilt.stdout.contains("1 step made, 6 from the cache"), "\(rebuilt)")
        #expect(try berth(["run", "-q", "-M", "busybox", "/bin/cat", "/etc/motd"], store: tmp).stdout == "second\n")
    }

    @Test(arguments: [
        ("[base]\nscratch = true\n[[step]]\ncomand = \"true\"\n", "step 1: give exactly one of run, copy, write, hostname, enable"),
        ("[base]\nscratch = true\n[[step]]\nrun = \"true\"\nuser = \"root\"\n", "step 1: unknown key 'user'"),
        ("[base]\nscratch = true\nnmae = \"x\"\n", "[base]: unknown key 'nmae'"),
        ("name = \"x\"\n", "no [base] table"),
        ("name = \"x\"\n[base]\nscratch = true\n[[step]]\nrun = \"unterminated\n", ":5:"),
        ("[base]\ntarball = \"missing.tar\"\n", "a tarball base needs its sha256"),
        ("[base]\nimage = \"nothing\"\n", "no image 'nothing'"),
        ("[base]\nscratch = true\n[[step]]\nwrite = \"relative\"\ncontent = \"x\"\n", "absolute path"),
        ("[base]\nmmdebstrap = \"bookworm\"\nsource_date_epoch = -1\n", "[base]: source_date_epoch must not be negative"),
        ("[base]\nmmdebstrap = \"bookworm\"\npackages = [\"systemd=252\"]\n", "[base]: packages must be Debian package names"),
        ("[base]\nscratch = true\n[[step]]\ncopy = \"x\"\nfrom = \"-x\"\nto = \"/x\"\n", "step 1: from names a build context"),
        ("[base]\nscratch = true\n[[step]]\ncopy = \"missing\"\nto = \"/x\"\n", "step 1 (copy missing to /x): missing does not exist in the build context"),
        ("[base]\nscratch = true\n[[step]]\ncopy = \"x\"\nfrom = \"bin\"\nto = \"/x\"\n", "no build context 'bin' was granted; pass berth build --build-context bin=DIR"),
    ])
    func aBadRecipeIsRefusedWithItsPlace(_ text: String, _ expected: String) throws {
        let tmp = try TemporaryDirectory("recipe-bad")
        let recipe = tmp.appending("bad.toml").string
        try writeFile(FilePath(recipe), text)
        let result = try berth(["build", recipe, "--name", "x"], store: tmp)
        expectCleanFailure(result, expected)
        #expect(result.stderr.contains("bad.toml"), "\(result)")
        #expect(try berth(["show", "x"], store: tmp).status != 0)
    }

    /// The busybox fixture as a tarball base in the context "fixtures", with the digest `sha256`.
    static func fixtureBase(sha256: String) -> String {
        "[base]\ntarball = \"\(FilePath(Fixtures.busybox).lastComponent!)\"\nfrom = \"fixtures\"\nsha256 = \"\(sha256)\"\n"
    }
    static let fixtureGrant = ["--build-context", "fixtures=\(FilePath(Fixtures.busybox).removingLastComponent())"]
    static func fixtureDigest() throws -> String {
        try shell("sha256sum '\(Fixtures.busybox)' | cut -c1-64").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func aChecksumMismatchPublishesNothing() throws {
        let tmp = try TemporaryDirectory("recipe-sha")
        let wrong = String(repeating: "0", count: 64)
        try writeFile(tmp.appending("r.toml"), "name = \"t\"\n" + Self.fixtureBase(sha256: wrong))
        let result = try berth(["build", tmp.appending("r.toml").string] + Self.fixtureGrant, store: tmp)
        expectCleanFailure(result, "\(FilePath(Fixtures.busybox).lastComponent!) from fixtures has SHA-256")
        expectCleanFailure(result, "not the \(wrong) the recipe gives")
        #expect(try berth(["show", "t"], store: tmp).status != 0)
        // With the right one, the tarball is the base.
        try writeFile(tmp.appending("r.toml"), "name = \"t\"\n" + Self.fixtureBase(sha256: try Self.fixtureDigest()))
        #expect(try berth(["build", tmp.appending("r.toml").string] + Self.fixtureGrant, store: tmp).status == 0)
        #expect(try berth(["run", "-q", "-M", "t", "/bin/busybox", "true"], store: tmp).status == 0)
    }

    /// A step's notify socket is read like any container's, and a flood of messages on it does
    /// not end the build: the supervisor's SIGIO goes to the thread that waits for it, never to
    /// the thread that copies the step's output, which would die of it.
    @Test func aStepThatFloodsItsNotifySocketBuilds() throws {
        let tmp = try TemporaryDirectory("recipe-notify")
        _ = Probes.directory
        try FileManager.default.copyItem(atPath: Probes.path("notify"), toPath: tmp.appending("notify").string)
        // Each round's step is a new one, which the cache cannot answer.
        for round in 0..<3 {
            let recipe = try busyboxRecipe(in: tmp) {
                $0 + "\n[[step]]\ncopy = \"notify\"\nto = \"/notify\"\n\n[[step]]\nrun = \"/notify 3000 && rm /notify && echo round \(round)\"\n"
            }
            let result = try berth(["build", recipe] + Self.grant, store: tmp)
            #expect(result.status == 0 && result.stdout.contains("sent=3000") && result.stdout.contains("round \(round)"), "\(result)")
        }
    }

    @Test func aFailingStepShowsItsStatusAndLastLinesAndKeepsOnlyWholeLayers() throws {
        let tmp = try TemporaryDirectory("recipe-fail")
        let recipe = try busyboxRecipe(in: tmp) { $0 + "\n[[step]]\nrun = \"echo about to fail; echo on stderr >&2; exit 3\"\n" }
        let result = try berth(["build", "-q", recipe] + Self.grant, store: tmp)
        #expect(result.status != 0)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.last?.hasPrefix("berth: error: ") == true && lines.last?.contains("step 6") == true, "\(result)")
        #expect(lines.last?.contains("exit status 3") == true, "\(result)")
        #expect(lines.contains("  | about to fail") && lines.contains("  | on stderr"), "\(result)")
        #expect(try berth(["show", "busybox"], store: tmp).status != 0, "nothing is published")
        #expect(try Directory(opening: tmp.appending("store/.berth/staging")).entryNames().isEmpty)
        // The six good steps are cached: fixing the last step builds only it.
        let fixed = try busyboxRecipe(in: tmp) { $0 + "\n[[step]]\nrun = \"echo fixed\"\n" }
        let rebuilt = try berth(["build", "-q", fixed] + Self.grant, store: tmp)
        #expect(rebuilt.stdout.contains("1 step made, 6 from the cache"), "\(rebuilt)")
        #expect(mounts(under: tmp.string).isEmpty)
    }

    @Test func anImageNotBuiltFromARecipeIsNotReplaced() throws {
        let tmp = try TemporaryDirectory("recipe-clash")
        #expect(try berth(["import", "-q", Fixtures.busybox, "busybox"], store: tmp).status == 0)
        expectCleanFailure(try berth(["build"] + Self.grant + [Self.recipes + "/busybox.toml"], store: tmp), "was not built from a recipe")
        #expect(try berth(["show", "busybox"], store: tmp).stdout.contains("Kind: directory"))
    }

    @Test func theDebianRecipeBootsToMultiUser() throws {
        let tmp = try TemporaryDirectory("recipe-debian")
        let built = try berth(["build", "-q", Self.recipes + "/debian-bookworm.toml"], store: tmp)
        #expect(built.status == 0, "\(built)")
        // The probe goes in through a clone mounted on the host, as another tool would put it.
        #expect(try berth(["clone", "debian-bookworm", "probe"], store: tmp).status == 0)
        let mnt = tmp.appending("mnt")
        try Directory(opening: tmp.path).makeDirectory("mnt", mode: 0o755)
        #expect(try berth(["mount", "probe", mnt.string], store: tmp).status == 0)
        _ = try installBootProbe(in: mnt, action: "poweroff")
        #expect(try berth(["umount", mnt.string], store: tmp).status == 0)
        try bootAndProbe(["run", "-q", "-b", "-M", "probe"], store: tmp)
        let hostname = try berth(["run", "-q", "-M", "debian-bookworm", "/bin/cat", "/etc/hostname"], store: tmp)
        #expect(hostname.stdout == "debian\n", "\(hostname)")
    }

    /// One numbering: the progress lines and the errors count the recipe's [[step]] tables
    /// from 1, the base apart; a failing step's output is shown once, as it comes.
    @Test func progressAndErrorsNumberStepsAlikeAndOutputShowsOnce() throws {
        let tmp = try TemporaryDirectory("recipe-numbers")
        let recipe = try busyboxRecipe(in: tmp) { $0 + "\n[[step]]\nrun = \"echo about to fail; echo on stderr >&2; exit 3\"\n" }
        let result = try berth(["build", recipe] + Self.grant, store: tmp)
        #expect(result.status == 1, "\(result)")
        let progress = result.stdout.split(separator: "\n").filter { $0.hasPrefix("Base: ") || $0.hasPrefix("Step ") }
        #expect(progress.first == "Base: scratch", "\(result)")
        #expect(progress.dropFirst().map { String($0.prefix(9)) } == (1...6).map { "Step \($0)/6:" }, "\(result)")
        #expect(progress.last?.hasPrefix("Step 6/6: run: echo about to fail") == true, "\(result)")
        let error = result.stderr.split(separator: "\n").last ?? ""
        #expect(error.hasPrefix("berth: error: \(recipe): step 6 (run: echo about to fail") && error.contains("exit status 3"), "\(result)")
        // Shown as it ran, and not again with the error.
        let everything = result.stdout + result.stderr
        #expect(everything.components(separatedBy: "about to fail\n").count == 2, "\(result)")
        #expect(everything.components(separatedBy: "on stderr\n").count == 2, "\(result)")
        #expect(!result.stderr.contains("  | "), "\(result)")
    }

    /// mmdebstrap's own lines show while it works (it fails here, at its first fetch from a
    /// mirror that refuses connections, after its first phases); with -q they come with the error.
    @Test func theMmdebstrapBaseShowsItsPhases() throws {
        let tmp = try TemporaryDirectory("recipe-mmdebstrap")
        let recipe = tmp.appending("deb.toml")
        try writeFile(recipe, "name = \"deb\"\n[base]\nmmdebstrap = \"bookworm\"\nvariant = \"minbase\"\nmirror = \"http://127.0.0.1:9/debian\"\n")
        let shown = try berth(["build", recipe.string], store: tmp)
        #expect(shown.status == 1, "\(shown)")
        #expect(shown.stdout.hasPrefix("Base: mmdebstrap bookworm (minbase)\n"), "\(shown)")
        // Through the step output's pipe, as a step's output is: on standard output.
        #expect(shown.stdout.contains("\nI: running apt-get update...\n"), "\(shown)")
        let last = shown.stderr.split(separator: "\n").last ?? ""
        #expect(last.hasPrefix("berth: error: \(recipe.string): [base]: mmdebstrap failed with status "), "\(shown)")
        #expect(!shown.stderr.contains("  | "), "\(shown)")
        let quiet = try berth(["build", "-q", recipe.string], store: tmp)
        #expect(quiet.status == 1 && quiet.stdout.isEmpty, "\(quiet)")
        let lines = quiet.stderr.split(separator: "\n")
        #expect(lines.dropLast().allSatisfy { $0.hasPrefix("  | ") } && lines.contains { $0.hasPrefix("  | E: ") }, "\(quiet)")
        #expect(lines.last?.hasPrefix("berth: error: ") == true, "\(quiet)")
        #expect(try Directory(opening: tmp.appending("store/.berth/staging")).entryNames().isEmpty)
        #expect(mounts(under: tmp.string).isEmpty)
    }

    /// A missing base image: the error names the recipe that builds it, from the recipe's own
    /// folder or the working directory's recipes/.
    @Test func aMissingBaseNamesTheRecipeThatBuildsIt() throws {
        let tmp = try TemporaryDirectory("recipe-missing-base")
        try writeFile(tmp.appending("app.toml"), "name = \"app\"\n[base]\nimage = \"mybase\"\n[[step]]\nhostname = \"app\"\n")
        try writeFile(tmp.appending("other.toml"), "name = \"other\"\n[base]\nscratch = true\n")
        try writeFile(tmp.appending("broken.toml"), "this is not toml [\n")
        try writeFile(tmp.appending("mybase.toml"), "name = \"mybase\"\n[base]\nscratch = true\n")
        let app = tmp.appending("app.toml").string
        let result = try berth(["build", app], store: tmp)
        expectCleanFailure(result, "\(app): [base]: no image 'mybase'")
        expectCleanFailure(result, "; \(tmp.appending("mybase.toml").string) builds it: berth build \(tmp.appending("mybase.toml").string)")
        // The shipped recipes, from the project's root, as a user there types it.
        try writeFile(tmp.appending("web.toml"), "name = \"web\"\n[base]\nimage = \"debian-bookworm\"\n")
        let shipped = try shell("cd \(shellQuoted(projectRoot)) && \(shellQuoted(berthBinary)) --store \(shellQuoted(tmp.appending("store").string)) build \(shellQuoted(tmp.appending("web.toml").string))")
        expectCleanFailure(shipped, "no image 'debian-bookworm'")
        expectCleanFailure(shipped, "; recipes/debian-bookworm.toml builds it: berth build recipes/debian-bookworm.toml")
        // Nothing to name: the error as it was.
        try writeFile(tmp.appending("lone.toml"), "name = \"lone\"\n[base]\nimage = \"nowhere\"\n")
        let lone = try berth(["build", tmp.appending("lone.toml").string], store: tmp)
        expectCleanFailure(lone, "no image 'nowhere'")
        #expect(!lone.stderr.contains("builds it"), "\(lone)")
    }
}
