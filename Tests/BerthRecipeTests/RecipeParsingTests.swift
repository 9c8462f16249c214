import BerthTestSupport
@testable import BerthRecipe
import SystemPackage
import Testing

/// Reads `text` as the recipe file `recipe.toml` in a fresh temporary directory.
func parse(_ text: String) throws -> Recipe {
    let dir = try TemporaryDirectory("berth-recipe")
    try writeFile(dir.appending("recipe.toml"), text)
    return try Recipe(contentsOf: dir.appending("recipe.toml").string)
}

/// The one-line error reading `text` gives, with the file's own path taken out.
func parseError(_ text: String) throws -> String? {
    let dir = try TemporaryDirectory("berth-recipe")
    let file = dir.appending("recipe.toml").string
    try writeFile(dir.appending("recipe.toml"), text)
    do {
        _ = try Recipe(contentsOf: file)
        return nil
    } catch let error as RecipeError {
        #expect(!error.message.contains("\n"), "an error of more than one line: \(error.message)")
        return error.message.replacingOccurrences(of: file, with: "FILE")
    }
}

@Suite struct RecipeParsingTests {
    @Test func everyKindOfStepIsRead() throws {
        let recipe = try parse("""
            name = "demo"
            description = "A demo"
            [base]
            mmdebstrap = "bookworm-backports"
            variant = "apt"
            packages = ["systemd", "libc6-dev", "g++", "python3.11"]
            mirror = "http://127.0.0.1:8080/debian"
            source_date_epoch = 0
            [[step]]
            run = "echo hi > /x"
            [[step]]
            run = ["/bin/echo", "a b"]
            [[step]]
            copy = "files/conf"
            to = "/etc/conf"
            mode = "0600"
            [[step]]
            copy = "x/y"
            from = "extra.ctx-1"
            to = "/x"
            [[step]]
            write = "/etc/motd"
            content = "hello\\n"
            mode = 0o640
            [[step]]
            write = "/etc/issue"
            content = ""
            [[step]]
            hostname = "box"
            [[step]]
            enable = "ssh.service"
            [[step]]
            enable = ["a.service", "b.timer"]
            """)
        #expect(recipe.name == "demo")
        #expect(recipe.description == "A demo")
        var bootstrap = Recipe.Bootstrap(suite: "bookworm-backports")
        bootstrap.variant = "apt"
        bootstrap.packages = ["systemd", "libc6-dev", "g++", "python3.11"]
        bootstrap.mirror = "http://127.0.0.1:8080/debian"
        bootstrap.sourceDateEpoch = 0
        #expect(recipe.base == .mmdebstrap(bootstrap))
        #expect(recipe.steps == [
            .run(["echo hi > /x"], shell: true),
            .run(["/bin/echo", "a b"], shell: false),
            .copy(Recipe.Source(context: nil, path: "files/conf"), to: "/etc/conf", mode: 0o600),
            .copy(Recipe.Source(context: "extra.ctx-1", path: "x/y"), to: "/x", mode: nil),
            .write("/etc/motd", content: "hello\n", mode: 0o640),
            .write("/etc/issue", content: "", mode: 0o644),
            .hostname("box"),
            .enable(["ssh.service"]),
            .enable(["a.service", "b.timer"]),
        ])
    }

    @Test(arguments: [
        ("[base]\nscratch = true", Recipe.Base.scratch),
        ("[base]\nimage = \"debian\"", .image("debian")),
        ("[base]\ntarball = \"root.tar.zst\"\nsha256 = \"\(String(repeating: "AB", count: 32))\"",
         .tarball(Recipe.Source(context: nil, path: "root.tar.zst"), sha256: String(repeating: "ab", count: 32))),
        ("[base]\ntarball = \"r.tar\"\nfrom = \"fixtures\"\nsha256 = \"\(String(repeating: "0", count: 64))\"",
         .tarball(Recipe.Source(context: "fixtures", path: "r.tar"), sha256: String(repeating: "0", count: 64))),
        ("[base]\nmmdebstrap = \"bookworm\"", .mmdebstrap(Recipe.Bootstrap(suite: "bookworm"))),
    ])
    func eachBaseIsRead(_ text: String, _ base: Recipe.Base) throws {
        let recipe = try parse(text)
        #expect(recipe.base == base)
        #expect(recipe.steps.isEmpty && recipe.name == nil && recipe.description == nil)
    }

    @Test func theDefaultsOfABootstrapAreDebiansOwn() throws {
        guard case .mmdebstrap(let b) = try parse("[base]\nmmdebstrap = \"stable\"").base else {
            Issue.record("not an mmdebstrap base")
            return
        }
        #expect(b.variant == "minbase" && b.packages.isEmpty && b.mirror == "http://deb.debian.org/debian" && b.sourceDateEpoch == 1_700_000_000)
    }

    /// What a recipe gets wrong, and the line that says so.
    @Test(arguments: [
        // Unknown keys, at each level.
        ("nmae = \"x\"\n[base]\nscratch = true", "FILE: unknown key 'nmae' (known here: name, description, base, step)"),
        ("[base]\nscratch = true\nextra = 1", "FILE: [base]: unknown key 'extra' (known here: scratch)"),
        ("[base]\nimage = \"d\"\nsha256 = \"x\"", "FILE: [base]: unknown key 'sha256' (known here: image)"),
        ("[base]\nmmdebstrap = \"bookworm\"\ncomponents = [\"main\"]", "FILE: [base]: unknown key 'components'"),
        ("[base]\nscratch = true\n[[step]]\nrun = \"x\"\nuser = \"root\"", "FILE: step 1: unknown key 'user' (known here: run)"),
        ("[base]\nscratch = true\n[[step]]\nhostname = \"h\"\n[[step]]\nwrite = \"/x\"\ncontent = \"\"\nowner = 0",
         "FILE: step 2: unknown key 'owner' (known here: write, content, mode)"),
        ("[base]\nscratch = true\n[[step]]\ncopy = \"a\"\nto = \"/a\"\nchmod = \"0644\"", "FILE: step 1: unknown key 'chmod'"),
        ("[base]\nscratch = true\n[[step]]\nenable = \"a\"\nnow = true", "FILE: step 1: unknown key 'now' (known here: enable)"),
        // The base, missing or doubled.
        ("name = \"x\"", "FILE: no [base] table; give one of scratch, tarball, image or mmdebstrap"),
        ("base = \"scratch\"", "FILE: no [base] table"),
        ("[base]", "FILE: [base]: give exactly one of scratch, tarball, image, mmdebstrap"),
        ("[base]\nscratch = true\nimage = \"d\"", "FILE: [base]: give exactly one of scratch, tarball, image, mmdebstrap, not scratch and image"),
        // Steps, of no kind or of two.
        ("[base]\nscratch = true\n[[step]]\nto = \"/x\"", "FILE: step 1: give exactly one of run, copy, write, hostname, enable"),
        ("[base]\nscratch = true\n[[step]]\nrun = \"x\"\nhostname = \"h\"", "FILE: step 1: give exactly one of run, copy, write, hostname, enable, not run and hostname"),
        ("step = \"run\"\n[base]\nscratch = true", "FILE: 'step' must be an array of tables: [[step]]"),
        ("step = [1]\n[base]\nscratch = true", "FILE: step 1: a step must be a table"),
        // Wrong types.
        ("name = 1\n[base]\nscratch = true", "FILE: 'name' must be a string"),
        ("description = [\"x\"]\n[base]\nscratch = true", "FILE: 'description' must be a string"),
        ("description = \"two\\nlines\"\n[base]\nscratch = true", "FILE: description must be one line"),
        ("[base]\nscratch = \"yes\"", "FILE: [base]: 'scratch' must be true or false"),
        ("[base]\nscratch = false", "FILE: [base]: scratch must be true"),
        ("[base]\nimage = 1", "FILE: [base]: 'image' must be a string"),
        ("[base]\ntarball = \"r.tar\"", "FILE: [base]: a tarball base needs its sha256"),
        ("[base]\ntarball = \"r.tar\"\nsha256 = \"abc\"", "FILE: [base]: sha256 must be 64 hexadecimal digits"),
        ("[base]\ntarball = \"r.tar\"\nsha256 = \"\(String(repeating: "g", count: 64))\"", "FILE: [base]: sha256 must be 64 hexadecimal digits"),
        ("[base]\ntarball = 5\nsha256 = \"\(String(repeating: "0", count: 64))\"", "FILE: [base]: 'tarball' must be a string"),
        ("[base]\nmmdebstrap = \"bookworm\"\npackages = \"systemd\"", "FILE: [base]: 'packages' must be an array of strings"),
        ("[base]\nmmdebstrap = \"bookworm\"\npackages = [\"a1\", 2]", "FILE: [base]: 'packages' must be an array of strings"),
        ("[base]\nmmdebstrap = \"bookworm\"\nsource_date_epoch = \"1\"", "FILE: [base]: 'source_date_epoch' must be an integer"),
        ("[base]\nmmdebstrap = \"bookworm\"\nsource_date_epoch = -1", "FILE: [base]: source_date_epoch must not be negative"),
        ("[base]\nmmdebstrap = \"bookworm\"\nvariant = 1", "FILE: [base]: 'variant' must be a string"),
        ("[base]\nscratch = true\n[[step]]\nrun = []", "FILE: step 1: run takes a command line or a non-empty array of arguments"),
        ("[base]\nscratch = true\n[[step]]\nrun = 1", "FILE: step 1: 'run' must be an array of strings"),
        ("[base]\nscratch = true\n[[step]]\nrun = [\"a\", 1]", "FILE: step 1: 'run' must be an array of strings"),
        ("[base]\nscratch = true\n[[step]]\nenable = []", "FILE: step 1: enable takes a unit or an array of units"),
        ("[base]\nscratch = true\n[[step]]\nhostname = true", "FILE: step 1: 'hostname' must be a string"),
        ("[base]\nscratch = true\n[[step]]\ncopy = \"a\"", "FILE: step 1: copy needs 'to', an absolute path in the image"),
        ("[base]\nscratch = true\n[[step]]\ncopy = \"a\"\nto = \"etc/a\"", "FILE: step 1: copy needs 'to', an absolute path in the image"),
        ("[base]\nscratch = true\n[[step]]\nwrite = \"etc/motd\"\ncontent = \"\"", "FILE: step 1: write takes an absolute path in the image"),
        ("[base]\nscratch = true\n[[step]]\nwrite = \"/etc/motd\"", "FILE: step 1: write needs 'content'"),
        ("[base]\nscratch = true\n[[step]]\nwrite = \"/x\"\ncontent = 1", "FILE: step 1: 'content' must be a string"),
        ("[base]\nscratch = true\n[[step]]\nwrite = \"/x\"\ncontent = \"\"\nmode = \"0999\"", "FILE: step 1: 'mode' must be an octal mode such as \"0644\""),
        ("[base]\nscratch = true\n[[step]]\nwrite = \"/x\"\ncontent = \"\"\nmode = 0o17777", "FILE: step 1: 'mode' must be an octal mode"),
        ("[base]\nscratch = true\n[[step]]\nwrite = \"/x\"\ncontent = \"\"\nmode = -1", "FILE: step 1: 'mode' must be an octal mode"),
        ("[base]\nscratch = true\n[[step]]\nwrite = \"/x\"\ncontent = \"\"\nmode = true", "FILE: step 1: 'mode' must be an octal mode"),
        // Not TOML at all: the line and column.
        ("[base\nscratch = true", "FILE:1:"),
        ("[base]\nscratch = true\nscratch = true", "FILE:3:"),
    ])
    func mistakesAreOneLineNamingThePlace(_ text: String, _ expected: String) throws {
        let message = try #require(try parseError(text), "\(text) was read")
        #expect(message.hasPrefix(expected), "\(message)")
    }

    @Test func aMissingFileIsNamed() throws {
        let dir = try TemporaryDirectory("berth-recipe")
        let path = dir.appending("none.toml").string
        let error = #expect(throws: RecipeError.self) { try Recipe(contentsOf: path) }
        #expect(error?.message == "cannot read the recipe \(path): No such file or directory")
    }
}
