import BerthSystem
import BerthTestSupport
@testable import BerthRecipe
import Glibc
import SystemPackage
import Testing

/// A build caches each layer under a key of its parent's key, the step's text and what a copy
/// takes from the host. The same inputs must give the same key, from one run (and release) to
/// the next, and any change of an input a different key: else an edited step would be taken
/// from the cache unbuilt.
@Suite struct StepKeyTests {
    /// A recipe of `steps` (TOML) over scratch, in `dir`, with its sources opened.
    static func keys(_ steps: String, in dir: TemporaryDirectory, parent: String = "parent") throws -> [String] {
        try writeFile(dir.appending("recipe.toml"), "[base]\nscratch = true\n" + steps)
        let recipe = try Recipe(contentsOf: dir.appending("recipe.toml").string)
        let sources = try RecipeSources(recipe: recipe, context: BuildContext(directory: dir.path, grants: []))
        var key = parent
        return try recipe.steps.indices.map { index in
            key = try RecipeBuilder.key(of: recipe.steps[index], index: index, parent: key, sources: sources)
            return key
        }
    }

    static func key(_ step: String, in dir: TemporaryDirectory, parent: String = "parent") throws -> String {
        try #require(try keys("[[step]]\n" + step, in: dir, parent: parent).first)
    }

    /// Pinned: a change here empties every user's build cache. Change it only on purpose (and
    /// then the key's "berth-build 1" with it).
    @Test func theKeysOfARecipeDoNotChangeFromOneReleaseToTheNext() throws {
        #expect(RecipeBuilder.key(of: .scratch) == "eb8096ad4f17518a9f99a4f7c6a5508efd859e90b027a25d25d157b53c4dde8d")
        let dir = try TemporaryDirectory("berth-keys")
        let run = try Self.key("run = \"echo hi\"", in: dir, parent: RecipeBuilder.key(of: .scratch))
        #expect(run == "83d7cd8fc7687bbb9b4b250d12929c69600fc5dbf584b989de542c1b9073da63")
    }

    @Test func theSameStepsGiveTheSameKeys() throws {
        let dir = try TemporaryDirectory("berth-keys")
        try writeFile(dir.appending("f"), "content")
        let steps = "[[step]]\nrun = \"a\"\n[[step]]\ncopy = \"f\"\nto = \"/f\"\n[[step]]\nwrite = \"/w\"\ncontent = \"c\"\n[[step]]\nhostname = \"h\"\n[[step]]\nenable = \"u\""
        let first = try Self.keys(steps, in: dir)
        #expect(try Self.keys(steps, in: dir) == first)
        #expect(Set(first).count == first.count, "two steps share a key")
        // A key depends on every step before it, through its parent.
        #expect(try Self.keys(steps, in: dir, parent: "another parent").allSatisfy { !first.contains($0) })
    }

    /// Each pair differs in one input only.
    @Test(arguments: [
        ("run = \"echo a\"", "run = \"echo b\""),
        ("run = \"echo a\"", "run = [\"echo a\"]"),             // a shell line is not an argv
        ("run = [\"echo\", \"a b\"]", "run = [\"echo\", \"a\", \"b\"]"),
        ("run = [\"echo\", \"ab\"]", "run = [\"echo\", \"a\", \"b\"]"),
        ("run = [\"a\", \"\"]", "run = [\"a\"]"),
        ("write = \"/a\"\ncontent = \"x\"", "write = \"/b\"\ncontent = \"x\""),
        ("write = \"/a\"\ncontent = \"x\"", "write = \"/a\"\ncontent = \"y\""),
        ("write = \"/a\"\ncontent = \"x\"", "write = \"/a\"\ncontent = \"x\"\nmode = \"0600\""),
        ("write = \"/a\"\ncontent = \"\"", "write = \"/a\"\ncontent = \"\\n\""),
        ("hostname = \"a\"", "hostname = \"b\""),
        ("enable = \"a.service\"", "enable = [\"a.service\", \"b.service\"]"),
        ("enable = \"a.service\"", "enable = \"b.service\""),
        ("hostname = \"a\"", "enable = \"a\""),
        ("copy = \"f\"\nto = \"/f\"", "copy = \"f\"\nto = \"/g\""),
        ("copy = \"f\"\nto = \"/f\"", "copy = \"f\"\nto = \"/f\"\nmode = \"0600\""),
        ("copy = \"f\"\nto = \"/f\"\nmode = \"0600\"", "copy = \"f\"\nto = \"/f\"\nmode = \"0640\""),
        ("copy = \"f\"\nto = \"/f\"", "copy = \"g\"\nto = \"/f\""),  // another content
    ])
    func aChangedInputChangesTheKey(_ one: String, _ other: String) throws {
        let dir = try TemporaryDirectory("berth-keys")
        try writeFile(dir.appending("f"), "content f")
        try writeFile(dir.appending("g"), "content g")
        #expect(try Self.key(one, in: dir) != Self.key(other, in: dir))
        #expect(try Self.key(one, in: dir) == Self.key(one, in: dir))
        #expect(try Self.key(one, in: dir, parent: "p1") != Self.key(one, in: dir, parent: "p2"))
    }

    /// A copy's key is its content's, not its name's: an edited file rebuilds, a renamed one
    /// with the same bytes does not.
    @Test func aCopysKeyFollowsWhatItCopies() throws {
        let dir = try TemporaryDirectory("berth-keys")
        try writeFile(dir.appending("f"), "one")
        try writeFile(dir.appending("same"), "one")
        let step = "copy = \"f\"\nto = \"/f\""
        let original = try Self.key(step, in: dir)
        #expect(try Self.key("copy = \"same\"\nto = \"/f\"", in: dir) == original)
        try writeFile(dir.appending("f"), "two")
        let edited = try Self.key(step, in: dir)
        #expect(edited != original)
        #expect(chmod(dir.appending("f").string, 0o600) == 0)
        #expect(try Self.key(step, in: dir) != edited, "the file's mode is copied too")
    }

    @Test func aCopiedDirectorysKeyFollowsItsTree() throws {
        let dir = try TemporaryDirectory("berth-keys")
        #expect(mkdir(dir.appending("d").string, 0o755) == 0)
        try writeFile(dir.appending("d/a"), "a")
        let step = "copy = \"d\"\nto = \"/d\""
        var seen = [try Self.key(step, in: dir)]
        func changed(_ what: String) throws {
            let key = try Self.key(step, in: dir)
            #expect(!seen.contains(key), "\(what) left the key as it was")
            seen.append(key)
        }
        try writeFile(dir.appending("d/a"), "b")
        try changed("editing a file")
        try writeFile(dir.appending("d/new"), "")
        try changed("adding an empty file")
        #expect(rename(dir.appending("d/new").string, dir.appending("d/renamed").string) == 0)
        try changed("renaming a file")
        #expect(mkdir(dir.appending("d/sub").string, 0o755) == 0)
        try changed("adding a directory")
        #expect(symlink("a", dir.appending("d/sub/link").string) == 0)
        try changed("adding a symlink")
        #expect(unlink(dir.appending("d/sub/link").string) == 0)
        #expect(symlink("renamed", dir.appending("d/sub/link").string) == 0)
        try changed("pointing the symlink elsewhere")
        #expect(chmod(dir.appending("d/sub").string, 0o700) == 0)
        try changed("a directory's mode")
    }

    @Test(arguments: [
        ("mmdebstrap = \"bookworm\"", "mmdebstrap = \"trixie\""),
        ("mmdebstrap = \"bookworm\"", "mmdebstrap = \"bookworm\"\nvariant = \"apt\""),
        ("mmdebstrap = \"bookworm\"", "mmdebstrap = \"bookworm\"\npackages = [\"systemd\"]"),
        ("mmdebstrap = \"bookworm\"\npackages = [\"ab\", \"cd\"]", "mmdebstrap = \"bookworm\"\npackages = [\"cd\", \"ab\"]"),
        ("mmdebstrap = \"bookworm\"", "mmdebstrap = \"bookworm\"\nmirror = \"http://127.0.0.1/debian\""),
        ("mmdebstrap = \"bookworm\"", "mmdebstrap = \"bookworm\"\nsource_date_epoch = 0"),
        ("scratch = true", "mmdebstrap = \"bookworm\""),
        ("tarball = \"t\"\nsha256 = \"\(String(repeating: "0", count: 64))\"", "tarball = \"t\"\nsha256 = \"\(String(repeating: "1", count: 64))\""),
        ("scratch = true", "tarball = \"t\"\nsha256 = \"\(String(repeating: "0", count: 64))\""),
    ])
    func aChangedBaseChangesItsKey(_ one: String, _ other: String) throws {
        let a = try parse("[base]\n" + one).base, b = try parse("[base]\n" + other).base
        #expect(RecipeBuilder.key(of: a) != RecipeBuilder.key(of: b))
        #expect(RecipeBuilder.key(of: a) == RecipeBuilder.key(of: try parse("[base]\n" + one).base))
    }

    /// A tarball base's key is its digest, not its name: the same bytes under another name are
    /// the same base.
    @Test func aTarballsKeyIsItsDigest() throws {
        let digest = String(repeating: "a", count: 64)
        #expect(RecipeBuilder.key(of: try parse("[base]\ntarball = \"one.tar\"\nsha256 = \"\(digest)\"").base)
                == RecipeBuilder.key(of: try parse("[base]\ntarball = \"other.tar\"\nfrom = \"ctx\"\nsha256 = \"\(digest)\"").base))
    }

    /// Two different steps must never share a text. A write's path ends at " mode=", which a
    /// path may hold too.
    @Test func twoDifferentWritesNeverShareAKey() throws {
        let dir = try TemporaryDirectory("berth-keys")
        let one = try Self.key("write = \"/a mode=644\\nX\"\ncontent = \"Y\"", in: dir)
        let other = try Self.key("write = \"/a\"\ncontent = \"X mode=644\\nY\"", in: dir)
        #expect(one != other)
    }
}
