import BerthArchive
import BerthLaunch
import BerthStore
import BerthSystem
import Glibc
import SystemPackage

/// What a build did.
public struct BuildSummary {
    public var name: String
    /// Steps (the base counted as one) made now, and taken from the cache.
    public var built = 0
    public var cached = 0
}

/// Builds an image from a recipe: the base, then each step as one frozen layer over the ones
/// before. Each layer is cached under a key that hashes its parent's key, the step's own text and
/// the content of any host file it copies, so an unchanged recipe does no work and an edited
/// step rebuilds itself and what follows only.
public final class RecipeBuilder {
    let store: ImageStore
    let recipe: Recipe
    let sources: RecipeSources
    public var useCache = true
    /// Whether steps' output is shown (it is always kept, for the error of a failing step).
    public var showOutput = true
    /// Called with a line for each step as it starts: `Base: ...`, then `Step N/M: ...`, N
    /// counting the recipe's [[step]] tables from 1 as its errors do ("step N (...)").
    public var onStep: (String) -> Void = { _ in }

    /// `sources` are the recipe's host files, opened beneath their contexts.
    public init(store: ImageStore, recipe: Recipe, sources: RecipeSources) {
        self.store = store
        self.recipe = recipe
        self.sources = sources
    }

    public func build(as name: ImageName) throws -> BuildSummary {
        var summary = BuildSummary(name: name.rawValue)
        var (key, stack) = try base(&summary)
        for (index, step) in recipe.steps.enumerated() {
            let label = "Step \(index + 1)/\(recipe.steps.count): \(Self.summary(of: step))"
            key = try Self.key(of: step, index: index, parent: key, sources: sources)
            if useCache, let cached = try store.cachedStack(key) {
                onStep("\(label) (cached)")
                summary.cached += 1
                stack = cached
                continue
            }
            onStep(label)
            let layer = try store.makeLayer(on: stack) { try run(step, number: index + 1, in: $0, name: name) }
            stack.append(layer)
            try store.cacheStack(key, stack)
            summary.built += 1
        }
        var base: ImageName?
        if case .image(let imageName) = recipe.base { base = try ImageName(imageName) }
        try store.publishBuilt(name, stack: stack, base: base, description: recipe.description, recipe: recipe.file)
        return summary
    }

    // MARK: The base

    private func base(_ summary: inout BuildSummary) throws -> (String, [String]) {
        let label = "Base: \(Self.summary(of: recipe.base))"
        if case .image(let imageName) = recipe.base {
            // An image's frozen layers are their own key: no work to cache.
            onStep(label)
            let stack: [String]
            do {
                stack = try store.contentLayers(of: ImageName(imageName))
            } catch let error as StoreError {
                var message = "\(recipe.file): [base]: \(error.message)"
                if let name = try? ImageName(imageName), (try? store.imageExists(name)) == false,
                   let builder = BaseRecipes.recipe(building: imageName, besides: recipe.file) {
                    message += "; \(builder) builds it: berth build \(builder)"
                }
                throw RecipeError(message)
            }
            summary.cached += 1
            return (SHA256.hex("berth-build 1\nimage \(stack.joined(separator: " "))"), stack)
        }
        let key = Self.key(of: recipe.base)
        if useCache, let cached = try store.cachedStack(key) {
            onStep("\(label) (cached)")
            summary.cached += 1
            return (key, cached)
        }
        onStep(label)
        let layer: String
        switch recipe.base {
        case .scratch:
            layer = try store.makeBaseLayer { _ in }
        case .tarball(let source, let sha256):
            // The store reads the file opened beneath its context, through /proc/self/fd.
            guard let file = sources.tarball else {
                throw RecipeError("\(recipe.file): [base]: tarball \(source) was not opened with the recipe's files; build it again")
            }
            let path = file.descriptor.procPath
            do {
                layer = try store.makeBaseLayer(fromTarball: path, sha256: sha256)
            } catch let error as StoreError {
                let message = error.message.replacingOccurrences(of: path.string, with: source.description)
                throw RecipeError("\(recipe.file): [base]: \(message)")
            }
        case .mmdebstrap(let bootstrap):
            layer = try store.makeBaseLayer { try bootstrapDebian(bootstrap, into: $0) }
        case .image:
            fatalError("handled above")
        }
        try store.cacheStack(key, [layer])
        summary.built += 1
        return (key, [layer])
    }

    /// The cache key of a base that is not an image (whose layers are their own key).
    static func key(of base: Recipe.Base) -> String {
        SHA256.hex("berth-build 1\n\(baseText(base))")
    }

    private static func baseText(_ base: Recipe.Base) -> String {
        switch base {
        case .scratch: return "scratch"
        case .tarball(_, let sha256): return "tarball sha256=\(sha256)"
        case .image(let name): return "image \(name)"
        case .mmdebstrap(let b):
            return "mmdebstrap suite=\(b.suite) variant=\(b.variant) packages=\(b.packages.joined(separator: ",")) mirror=\(b.mirror) epoch=\(b.sourceDateEpoch)"
        }
    }

    /// mmdebstrap runs on the host as root, so the recipe's values reach it only in checked forms
    /// (Recipe reads them through RecipeChecks) and the positional ones after `--`: no recipe
    /// value can become an option, a hook, a sources.list file or a .deb path.
    private func bootstrapDebian(_ b: Recipe.Bootstrap, into tree: FilePath) throws {
        // Its own progress, a line per phase ("I: downloading packages with apt..."), is what
        // shows while it works, unless -q; its output is kept for the error, as a step's is.
        var arguments = ["mmdebstrap"] + (showOutput ? [] : ["--quiet"]) + ["--variant=\(b.variant)"]
        if !b.packages.isEmpty { arguments.append("--include=\(b.packages.joined(separator: ","))") }
        arguments += ["--", b.suite, tree.string, b.mirror]
        let output = try OutputTee(echo: showOutput)
        let status: Int32
        do {
            status = try spawnAndWait(arguments, environment: ["SOURCE_DATE_EPOCH=\(b.sourceDateEpoch)"])
        } catch {
            _ = output.finish()
            throw error
        }
        let lines = output.finish()
        guard status == 0 else {
            throw RecipeError("\(recipe.file): [base]: mmdebstrap failed with status \(status); no image was published",
                              output: showOutput ? [] : lines)
        }
    }

    // MARK: Steps

    static func summary(of base: Recipe.Base) -> String {
        switch base {
        case .scratch: return "scratch"
        case .tarball(let path, _): return "tarball \(path)"
        case .image(let name): return "image \(name)"
        case .mmdebstrap(let b): return "mmdebstrap \(b.suite) (\(b.variant))"
        }
    }

    static func summary(of step: Recipe.Step) -> String {
        switch step {
        case .run(let argv, _):
            let line = argv.joined(separator: " ").split(whereSeparator: \.isWhitespace).joined(separator: " ")
            return "run: " + (line.count > 60 ? line.prefix(57) + "..." : line)
        case .copy(let source, let to, _): return "copy \(source) to \(to)"
        case .write(let path, _, _): return "write \(path)"
        case .hostname(let name): return "hostname \(name)"
        case .enable(let units): return "enable \(units.joined(separator: " "))"
        }
    }

    /// The cache key of step `index` over the layers whose key is `parent`.
    static func key(of step: Recipe.Step, index: Int, parent: String, sources: RecipeSources) throws -> String {
        SHA256.hex("berth-build 1\n\(parent)\n\(try text(of: step, index: index, sources: sources))")
    }

    /// The step as the cache key sees it: its own text, and for a copy the content copied.
    private static func text(of step: Recipe.Step, index: Int, sources: RecipeSources) throws -> String {
        switch step {
        case .run(let argv, let shell): return "run shell=\(shell)\n" + argv.joined(separator: "\u{0}")
        case .copy(_, let to, let mode):
            guard let source = sources.copies[index] else {
                throw RecipeError("step \(index + 1): its source was not opened with the recipe's files; build it again")
            }
            return "copy to=\(to) mode=\(mode.map { String($0, radix: 8) } ?? "-")\n" + (try contentDigest(of: source))
        case .write(let path, let content, let mode):
            // Lengths first, so that no path and content can read as another pair.
            return "write \(path.utf8.count) \(content.utf8.count) mode=\(String(mode, radix: 8))\n\(path)\n\(content)"
        case .hostname(let name): return "hostname \(name)"
        case .enable(let units): return "enable \(units.joined(separator: " "))"
        }
    }

    private func run(_ step: Recipe.Step, number: Int, in layer: LayerInProgress, name: ImageName) throws {
        let place = "\(recipe.file): step \(number) (\(Self.summary(of: step)))"
        do {
            switch step {
            case .run(let argv, let shell):
                try runInContainer(shell ? ["/bin/sh", "-c", argv[0]] : argv, in: layer, name: name, place: place)
            case .enable(let units):
                try runInContainer(["systemctl", "enable"] + units, in: layer, name: name, place: place)
            case .copy(_, let to, let mode):
                let source = try sources.copy(ofStep: number - 1, recipe: recipe)
                try layer.withMergedTree { root in try TreeCopy.copy(source, to: FilePath(to), in: root, mode: mode) }
            case .write(let path, let content, let mode):
                try layer.withMergedTree { root in try TreeCopy.write(Array(content.utf8), to: FilePath(path), in: root, mode: mode) }
            case .hostname(let hostname):
                try layer.withMergedTree { root in try TreeCopy.write(Array("\(hostname)\n".utf8), to: "/etc/hostname", in: root, mode: 0o644) }
            }
        } catch let error as SystemError {
            throw RecipeError("\(place): \(error)")
        } catch let error as LaunchError {
            throw RecipeError("\(place): \(error.message)")
        }
    }

    /// Runs `argv` in a container over the layer, as `berth run` does, with the host's network;
    /// its output is shown and its last lines kept for the error, should it fail.
    private func runInContainer(_ argv: [String], in layer: LayerInProgress, name: ImageName, place: String) throws {
        var spec = LaunchSpec(tree: layer.tree, machineName: "build-\(name)",
                              uuid: SHA256.hex("\(getpid()) \(time(nil)) \(place)").prefix(32).lowercased(), term: "dumb")
        spec.arguments = argv
        // The step's own output only: the build says which step runs.
        spec.quiet = true
        // The layer holds what the step wrote, nothing of the host's: its resolver bound over
        // the image's file, the image's own time zone.
        (spec.resolvConfMode, spec.timezoneMode) = (HostFiles.buildResolvConf, "off")
        let output = try OutputTee(echo: showOutput)
        let status: Int32
        do {
            status = try Supervisor.run(spec)
        } catch {
            _ = output.finish()
            throw error
        }
        let lines = output.finish()
        guard status == 0 else {
            // Shown as it came unless -q; the error then repeats none of it.
            throw RecipeError("\(place) failed with exit status \(status); no image was published", output: showOutput ? [] : lines)
        }
    }

    /// A digest of what a copy takes from its context: names, kinds, modes and contents, in order.
    private static func contentDigest(of source: ContextFile) throws -> String {
        let hasher = SHA256()
        if source.status.kind == .directory {
            try TreeCopy.digest(source.openDirectory(), prefix: "", into: hasher)
        } else {
            try TreeCopy.digestFile(source.openFile(), into: hasher)
            hasher.update("mode \(String(source.status.permissions, radix: 8))")
        }
        return hasher.finalize()
    }
}

/// Runs `arguments` (found on PATH) with the caller's streams and environment plus `environment`,
/// and returns its exit status.
func spawnAndWait(_ arguments: [String], environment: [String]) throws -> Int32 {
    var env: [String] = []
    var e = environ
    while let entry = e.pointee {
        env.append(String(cString: entry))
        e += 1
    }
    env += environment
    let cArgs = arguments.map { strdup($0) } + [nil]
    let cEnv = env.map { strdup($0) } + [nil]
    defer { (cArgs + cEnv).forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, arguments[0], nil, nil, cArgs, cEnv)
    guard rc == 0 else { throw RecipeError("cannot run \(arguments[0]): \(String(cString: strerror(rc)))") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return ExitStatus(waitStatus: status).code
}
