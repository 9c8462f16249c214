@testable import BerthRecipe
import SystemPackage
import Testing

/// The values a recipe hands to the host, mmdebstrap's and host paths, each held to a form
/// that can mean nothing else. Each is tried through a whole recipe, as a user's file gives it.
@Suite struct RecipeChecksTests {
    static func mmdebstrap(_ keys: String) -> String { "[base]\n" + keys }

    @Test(arguments: [
        "-oAPT::Get::AllowUnauthenticated=1", "--hook-dir=/tmp/h", "--customize-hook=sh", "/etc/apt/sources.list", "./local",
        "bookworm main", "bookworm\n", "", ".bookworm", "_x", "+x", "book/worm", "bookworm;id", "bookworm$(id)", "bôokworm",
        String(repeating: "a", count: 65),
    ])
    func aSuiteIsASuiteName(_ suite: String) throws {
        let message = try #require(try parseError(Self.mmdebstrap("mmdebstrap = \(toml(suite))")))
        #expect(message.hasPrefix("FILE: [base]: mmdebstrap takes a suite name such as \"bookworm\""), "\(message)")
    }

    @Test(arguments: ["bookworm", "stable", "bookworm-backports", "Debian_12.1+b2", "0", String(repeating: "a", count: 64)])
    func suitesThatAreNames(_ suite: String) throws {
        #expect(try parse(Self.mmdebstrap("mmdebstrap = \(toml(suite))")).base == .mmdebstrap(Recipe.Bootstrap(suite: suite)))
    }

    @Test(arguments: ["-", "--variant=apt", "mini", "MINBASE", "minbase ", "", "apt,essential", "-minbase"])
    func aVariantIsOneOfMmdebstraps(_ variant: String) throws {
        let message = try #require(try parseError(Self.mmdebstrap("mmdebstrap = \"bookworm\"\nvariant = \(toml(variant))")))
        #expect(message.hasPrefix("FILE: [base]: variant must be one of mmdebstrap's: extract, custom,"), "\(message)")
    }

    @Test(arguments: RecipeChecks.variants)
    func everyVariantOfMmdebstrapIsTaken(_ variant: String) throws {
        guard case .mmdebstrap(let b) = try parse(Self.mmdebstrap("mmdebstrap = \"bookworm\"\nvariant = \(toml(variant))")).base else {
            Issue.record("not an mmdebstrap base")
            return
        }
        #expect(b.variant == variant)
    }

    @Test(arguments: [
        "-x", "--hook-dir=/tmp", "../evil.deb", "/tmp/evil.deb", "./evil.deb", "pkg=1.0", "pkg/bookworm", "Pkg", "a", "",
        "pkg name", "pkg,other", "pkg:amd64", "pkg\n", "+pkg", ".pkg", String(repeating: "p", count: 129),
    ])
    func aPackageIsAPackageName(_ package: String) throws {
        let message = try #require(try parseError(Self.mmdebstrap("mmdebstrap = \"bookworm\"\npackages = [\"systemd\", \(toml(package))]")))
        #expect(message.hasPrefix("FILE: [base]: packages must be Debian package names"), "\(message)")
        if package.contains("\n") { #expect(message.hasSuffix("not a value with control characters")) }
    }

    @Test(arguments: ["libc6", "g++", "python3.11", "0ad", "xz-utils", String(repeating: "p", count: 128)])
    func packageNames(_ package: String) throws {
        guard case .mmdebstrap(let b) = try parse(Self.mmdebstrap("mmdebstrap = \"bookworm\"\npackages = [\(toml(package))]")).base else {
            Issue.record("not an mmdebstrap base")
            return
        }
        #expect(b.packages == [package])
    }

    @Test(arguments: [
        "--aptopt=Acquire::AllowInsecureRepositories=1", "-v", "file:///srv/mirror", "/etc/apt/sources.list", "./sources.list",
        "http://x [trusted=yes]", "[trusted=yes] http://x", "deb http://x bookworm main", "ftp://deb.debian.org/debian",
        "http://", "https://", "http://a\nb", "http://a\tb", "http://a b", "http://a\"b", "http://a`id`", "http://a<b>", "",
        "mirror.example/debian", "http://" + String(repeating: "a", count: 1020),
    ])
    func aMirrorIsAnHTTPURL(_ mirror: String) throws {
        let message = try #require(try parseError(Self.mmdebstrap("mmdebstrap = \"bookworm\"\nmirror = \(toml(mirror))")))
        #expect(message.hasPrefix("FILE: [base]: mirror must be an http:// or https:// URL of a Debian archive"), "\(message)")
    }

    @Test(arguments: ["http://127.0.0.1:8080/debian", "https://deb.debian.org/debian/", "HTTP://[::1]/d", "http://u@h/p?q=1&r=(2)%20"])
    func mirrorsThatAreURLs(_ mirror: String) throws {
        guard case .mmdebstrap(let b) = try parse(Self.mmdebstrap("mmdebstrap = \"bookworm\"\nmirror = \(toml(mirror))")).base else {
            Issue.record("not an mmdebstrap base")
            return
        }
        #expect(b.mirror == mirror)
    }

    /// A copy's source and a tarball are read beneath the build context only.
    @Test(arguments: [
        ("../secret", "leads out of the build context with '..'"),
        ("a/../../secret", "leads out of the build context with '..'"),
        ("a/b/..", "leads out of the build context with '..'"),
        ("..", "leads out of the build context with '..'"),
        ("/etc/shadow", "is an absolute path on the host"),
        ("//etc/shadow", "is an absolute path on the host"),
        ("http://example.com/x", "is a URL"),
        ("file:///etc/shadow", "is a URL"),
        ("FILE:etc/shadow", "is a URL"),
        ("s3://bucket/x", "is a URL"),
        ("", "is empty; give a path in the build context"),
        ("a\u{1}b", "holds control characters"),
        ("a\nb", "holds control characters"),
        ("a\u{7f}", "holds control characters"),
        ("a\u{9b}b", "holds control characters"),
    ])
    func copySourcesStayInTheContext(_ source: String, _ problem: String) throws {
        let asCopy = try #require(try parseError("[base]\nscratch = true\n[[step]]\ncopy = \(toml(source))\nto = \"/x\""))
        #expect(asCopy.hasPrefix("FILE: step 1: copy"), "\(asCopy)")
        #expect(asCopy.contains(problem), "\(asCopy)")
        let asTarball = try #require(try parseError("[base]\ntarball = \(toml(source))\nsha256 = \"\(String(repeating: "0", count: 64))\""))
        #expect(asTarball.hasPrefix("FILE: [base]: tarball"), "\(asTarball)")
        #expect(asTarball.contains(problem), "\(asTarball)")
    }

    @Test(arguments: ["a", "dir/file.txt", "./a", "a/./b", "...", "a..b", ".hidden"])
    func pathsBeneathTheContext(_ source: String) throws {
        let recipe = try parse("[base]\nscratch = true\n[[step]]\ncopy = \(toml(source))\nto = \"/x\"")
        guard case .copy(let read, _, _) = try #require(recipe.steps.first) else {
            Issue.record("not a copy")
            return
        }
        #expect(read.path == FilePath(source))
    }

    @Test(arguments: ["", "-x", "../up", "a b", "a/b", ".ctx", "a=b", String(repeating: "c", count: 65), "ctx\n"])
    func aContextNameIsAName(_ name: String) throws {
        let message = try #require(try parseError("[base]\nscratch = true\n[[step]]\ncopy = \"a\"\nfrom = \(toml(name))\nto = \"/x\""))
        #expect(message.hasPrefix("FILE: step 1: from names a build context"), "\(message)")
    }

    @Test func aValueWithControlCharactersIsNotQuotedInTheError() {
        #expect(RecipeChecks.quoted("plain") == "\"plain\"")
        #expect(RecipeChecks.quoted("bad\u{1b}[2J") == "a value with control characters")
    }
}

/// `text` as a TOML basic string, control characters escaped.
func toml(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value):
            let hex = String(scalar.value, radix: 16, uppercase: true)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
