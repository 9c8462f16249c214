import ArgumentParser
import BerthRecipe
import BerthStore
import SystemPackage

struct BuildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build", abstract: "Build an image from a recipe, each step cached as a layer.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The recipe (TOML; see recipes/README.md).") var recipe: String
    @Option(help: "The image's name (default: the recipe's name).") var name: String?
    @Option(name: .customLong("context"),
            help: ArgumentHelp("The build context: the directory the recipe's copy and tarball paths are in (default: the recipe's folder).", valueName: "DIR"))
    var context: String?
    @Option(name: .customLong("build-context"),
            help: ArgumentHelp("Grant the recipe the host directory DIR, which it names with from = \"NAME\" (repeatable).", valueName: "NAME=DIR"))
    var buildContexts: [String] = []
    @Flag(name: .customLong("no-cache"), help: "Build every step again.") var noCache = false
    @Flag(name: [.customShort("q"), .long], help: "Print only the result.") var quiet = false

    func run() throws {
        let parsed = try Recipe(contentsOf: recipe)
        guard let chosen = name ?? parsed.name else {
            throw RecipeError("\(recipe): the recipe has no name; add name = \"...\" or pass --name")
        }
        let imageName = try ImageName(chosen)
        // The recipe's host files are opened beneath what the command line grants before the
        // store is opened: a recipe reaching out of its context is refused having touched nothing.
        let contexts = try BuildContext(directory: context.map { FilePath($0) } ?? FilePath(recipe).removingLastComponent(),
                                        grants: buildContexts)
        let sources = try RecipeSources(recipe: parsed, context: contexts)
        let builder = RecipeBuilder(store: try store.open(create: true), recipe: parsed, sources: sources)
        builder.useCache = !noCache
        builder.showOutput = !quiet
        if !quiet { builder.onStep = { writeOut(1, "\($0)\n") } }
        let summary = try builder.build(as: imageName)
        print("Built '\(summary.name)': \(summary.built) step\(summary.built == 1 ? "" : "s") made, \(summary.cached) from the cache.")
    }
}
