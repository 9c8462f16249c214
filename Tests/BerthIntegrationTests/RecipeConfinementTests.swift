import BerthSystem
import BerthTestSupport
import Foundation
import SystemPackage
import Testing

/// A recipe may change the image and nothing else (issue 11, finding 8): no recipe value runs
/// code on the host through mmdebstrap, and no recipe path reads a host file outside what the
/// command line grants.
@Suite struct RecipeConfinementTests {
    /// A hostile recipe. In its text, @SECRET@ is a host file outside the recipe's folder holding
    /// a token, @TAR@ a tarball outside it whose tree holds the token (@TARSHA@ its real digest,
    /// so it would build were it reachable), @MARKER@ what a hook would create on the host.
    struct Hostile: CustomTestStringConvertible, Sendable {
        var name: String
        var text: String
        var expected: String
        var testDescription: String { name }
    }

    static let token = "host-secret-8d1f27c4"
    /// A mirror nothing listens on, so a hook that got through would not reach the network.
    static let mirror = "mirror = \"http://127.0.0.1:9/debian\"\n"
    static let debian = "name = \"x\"\n[base]\nmmdebstrap = \"bookworm\"\n"
    static func copy(_ source: String) -> String { "name = \"x\"\n[base]\nscratch = true\n[[step]]\ncopy = \"\(source)\"\nto = \"/stolen\"\n" }
    static func tarball(_ source: String) -> String { "name = \"x\"\n[base]\ntarball = \"\(source)\"\nsha256 = \"@TARSHA@\"\n" }
    static let outOfContext = "a recipe reads only its build context"

    static let cases: [Hostile] = [
        Hostile(name: "a setup hook as a key", text: debian + mirror + "setup_hook = \"touch @MARKER@\"\n",
                expected: "[base]: unknown key 'setup_hook'"),
        Hostile(name: "mmdebstrap options as a key", text: debian + mirror + "mmdebstrap_options = [\"--setup-hook=touch @MARKER@\"]\n",
                expected: "[base]: unknown key 'mmdebstrap_options'"),
        Hostile(name: "a setup hook as the suite", text: "name = \"x\"\n[base]\nmmdebstrap = \"--setup-hook=touch @MARKER@\"\n" + mirror,
                expected: "[base]: mmdebstrap takes a suite name"),
        Hostile(name: "a setup hook as the mirror", text: debian + "mirror = \"--setup-hook=touch @MARKER@\"\n",
                expected: "[base]: mirror must be an http:// or https:// URL"),
        Hostile(name: "a setup hook after the mirror", text: debian + "mirror = \"http://127.0.0.1:9/debian --setup-hook=touch @MARKER@\"\n",
                expected: "[base]: mirror must be an http:// or https:// URL"),
        Hostile(name: "a host sources.list as the mirror", text: debian + "mirror = \"@SECRET@\"\n",
                expected: "[base]: mirror must be an http:// or https:// URL"),
        Hostile(name: "a host directory as the mirror", text: debian + "mirror = \"file:///\"\n",
                expected: "[base]: mirror must be an http:// or https:// URL"),
        Hostile(name: "a setup hook as the variant", text: debian + mirror + "variant = \"--setup-hook=touch @MARKER@\"\n",
                expected: "[base]: variant must be one of mmdebstrap's"),
        Hostile(name: "a setup hook as a package", text: debian + mirror + "packages = [\"--setup-hook=touch @MARKER@\"]\n",
                expected: "[base]: packages must be Debian package names"),
        Hostile(name: "a host .deb as a package", text: debian + mirror + "packages = [\"@SECRET@\"]\n",
                expected: "[base]: packages must be Debian package names"),
        Hostile(name: "a copy up with ..", text: copy("../secret"), expected: "step 1: copy = \"../secret\" leads out of the build context with '..'"),
        Hostile(name: "a copy of an absolute path", text: copy("@SECRET@"), expected: "step 1: copy = \"@SECRET@\" is an absolute path on the host"),
        Hostile(name: "a copy of a file:// URL", text: copy("file://@SECRET@"), expected: "step 1: copy = \"file://@SECRET@\" is a URL"),
        Hostile(name: "a copy through an absolute symlink", text: copy("link"), expected: "step 1 (copy link to /stolen): link leads out of the build context"),
        Hostile(name: "a copy through a relative symlink", text: copy("up-link"), expected: "step 1 (copy up-link to /stolen): up-link leads out of the build context"),
        Hostile(name: "a copy through a symlinked directory", text: copy("dir-link/secret"), expected: "dir-link/secret leads out of the build context"),
        Hostile(name: "a tarball base at an absolute path", text: tarball("@TAR@"), expected: "[base]: tarball = \"@TAR@\" is an absolute path on the host"),
        Hostile(name: "a tarball base up with ..", text: tarball("../secret.tar"), expected: "[base]: tarball = \"../secret.tar\" leads out of the build context with '..'"),
        Hostile(name: "a tarball base as a file:// URL", text: tarball("file://@TAR@"), expected: "[base]: tarball = \"file://@TAR@\" is a URL"),
        Hostile(name: "a tarball base through a symlink", text: tarball("tar-link"), expected: "[base]: tar-link leads out of the build context"),
    ]

    @Test(arguments: cases)
    func aHostileRecipeReachesNothingOnTheHost(_ hostile: Hostile) throws {
        let tmp = try TemporaryDirectory("recipe-hostile")
        let secret = tmp.appending("secret"), marker = tmp.appending("marker"), tar = tmp.appending("secret.tar")
        try writeFile(secret, "\(Self.token)\n")
        // The tarball's tree holds the token too, so taking it as the base would be seen.
        try Directory(opening: tmp.path).makeDirectory("tree", mode: 0o755)
        try writeFile(tmp.appending("tree/token"), "\(Self.token)\n")
        #expect(try shell("tar -C '\(tmp.appending("tree"))' -cf '\(tar)' .").status == 0)
        let digest = try shell("sha256sum '\(tar)' | cut -c1-64").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        // The recipe's folder, its build context, with symlinks that point out of it.
        let context = tmp.appending("context")
        try Directory(opening: tmp.path).makeDirectory("context", mode: 0o755)
        for (name, target) in [("link", secret.string), ("up-link", "../secret"), ("dir-link", ".."), ("tar-link", tar.string)] {
            #expect(symlink(target, context.appending(name).string) == 0)
        }
        let text = hostile.text.replacingOccurrences(of: "@SECRET@", with: secret.string)
            .replacingOccurrences(of: "@MARKER@", with: marker.string)
            .replacingOccurrences(of: "@TARSHA@", with: digest).replacingOccurrences(of: "@TAR@", with: tar.string)
        let recipe = context.appending("recipe.toml")
        try writeFile(recipe, text)
        let expected = hostile.expected.replacingOccurrences(of: "@SECRET@", with: secret.string)
            .replacingOccurrences(of: "@TAR@", with: tar.string)
        let store = tmp.appending("store")
        // A proxy nothing listens on as well: should a hook get through, apt reaches no network.
        let result = try run(berthBinary, ["--store", store.string, "build", recipe.string],
                             environment: ["http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"])
        expectCleanFailure(result, expected)
        #expect(result.stderr.contains("\(recipe.string): "), "\(result)")
        #expect(try FileStatus.of(marker) == nil, "the hook ran on the host")
        // Refused before the store is opened: nothing built, nothing published, no token anywhere.
        #expect(try FileStatus.of(store) == nil, "\(result)")
        #expect(try shell("grep -rqs '\(Self.token)' '\(store)'").status != 0, "the host file reached the store")
    }

    /// The busybox recipe copies the host's /bin/busybox: only through a grant on the command line.
    @Test func theBusyboxRecipeNeedsItsGrant() throws {
        let tmp = try TemporaryDirectory("recipe-grant")
        let recipe = RecipeTests.recipes + "/busybox.toml"
        expectCleanFailure(try berth(["build", recipe], store: tmp),
                           "\(recipe): step 1 (copy busybox from bin to /bin/busybox): no build context 'bin' was granted; pass berth build --build-context bin=DIR")
        expectCleanFailure(try berth(["build", "--build-context", "bin=\(tmp.appending("none"))", recipe], store: tmp),
                           "cannot open the build context 'bin', \(tmp.appending("none")): No such file or directory")
        expectCleanFailure(try berth(["build", "--build-context", "bin", recipe], store: tmp), "--build-context takes NAME=DIR")
        expectCleanFailure(try berth(["build", "--build-context", "bin=/bin", "--build-context", "bin=/usr/bin", recipe], store: tmp),
                           "--build-context bin is given twice")
        // A context granted for the wrong file is still read beneath itself only.
        expectCleanFailure(try berth(["build", "--build-context", "bin=\(tmp.path)", recipe], store: tmp),
                           "busybox does not exist in the build context 'bin' (\(tmp.path))")
        #expect(try FileStatus.of(tmp.appending("store")) == nil)
        let built = try berth(["build", "-q", "--build-context", "bin=/bin", recipe], store: tmp)
        #expect(built.status == 0, "\(built)")
        let host = try shell("sha256sum /bin/busybox | cut -c1-64").stdout
        #expect(try inImage("busybox", "sha256sum /bin/busybox | cut -c1-64", store: tmp).stdout == host)
    }

    /// `--context DIR` replaces the recipe's folder. Symlinks that stay in the context are
    /// followed; inside a copied directory they are copied as symlinks, not followed.
    @Test func aContextIsReadBeneathItselfOnly() throws {
        let tmp = try TemporaryDirectory("recipe-context")
        let root = try Directory(opening: tmp.path)
        for name in ["recipe", "context", "context/etc", "context/sub"] { try root.makeDirectory(FilePath(name), mode: 0o755) }
        try writeFile(tmp.appending("secret"), "\(Self.token)\n")
        try writeFile(tmp.appending("context/etc/motd"), "from the context\n")
        #expect(symlink("etc/motd", tmp.appending("context/alias").string) == 0)
        #expect(symlink(tmp.appending("secret").string, tmp.appending("context/sub/outside").string) == 0)
        try writeFile(tmp.appending("recipe/r.toml"), "name = \"c\"\n" + RecipeTests.fixtureBase(sha256: try RecipeTests.fixtureDigest())
            + "[[step]]\ncopy = \"alias\"\nto = \"/etc/motd\"\n[[step]]\ncopy = \"sub\"\nto = \"/sub\"\n")
        // Without --context, the recipe's own (empty) folder is the context.
        expectCleanFailure(try berth(["build", tmp.appending("recipe/r.toml").string] + RecipeTests.fixtureGrant, store: tmp),
                           "step 1 (copy alias to /etc/motd): alias does not exist in the build context \(tmp.appending("recipe"))")
        let built = try berth(["build", "--context", tmp.appending("context").string, tmp.appending("recipe/r.toml").string]
                              + RecipeTests.fixtureGrant, store: tmp)
        #expect(built.status == 0, "\(built)")
        let seen = try inImage("c", "cat /etc/motd; readlink /sub/outside; cat /sub/outside || echo unreadable", store: tmp)
        #expect(seen.stdout == "from the context\n\(tmp.appending("secret"))\nunreadable\n", "\(seen)")
        #expect(try shell("grep -rqs '\(Self.token)' '\(tmp.appending("store"))'").status != 0, "the host file reached the store")
    }
}
