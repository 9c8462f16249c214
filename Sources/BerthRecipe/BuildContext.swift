import BerthSystem
import Glibc
import SystemPackage

/// The host directories a build may read, as the command line grants them, in the manner of
/// `docker build`: the default context (the recipe's folder, or `--context DIR`, as docker's
/// positional PATH with `-f`) and named ones (`--build-context NAME=DIR`, as docker buildx's,
/// which a recipe names with `from = "NAME"` as a Dockerfile writes `COPY --from=NAME`). Each is
/// opened once, by the caller's own path lookup: the paths on the command line are trusted, the
/// recipe's are not, and are looked up beneath one of these only.
public final class BuildContext {
    let defaultDirectory: Directory
    let named: [String: Directory]

    /// Opens `directory` as the default context and `grants` (the `NAME=DIR` texts of
    /// `--build-context`) as named ones.
    public init(directory: FilePath, grants: [String]) throws {
        defaultDirectory = try Self.open(directory, what: "the build context")
        var named: [String: Directory] = [:]
        for grant in grants {
            guard let equals = grant.firstIndex(of: "="), RecipeChecks.isContextName(String(grant[..<equals])),
                  grant.index(after: equals) < grant.endIndex else {
                throw RecipeError("--build-context takes NAME=DIR (NAME of letters, digits, '.', '_', '-'), not \(RecipeChecks.quoted(grant))")
            }
            let name = String(grant[..<equals])
            guard named[name] == nil else { throw RecipeError("--build-context \(name) is given twice") }
            named[name] = try Self.open(FilePath(String(grant[grant.index(after: equals)...])), what: "the build context '\(name)'")
        }
        self.named = named
    }

    private static func open(_ path: FilePath, what: String) throws -> Directory {
        do {
            return try Directory(opening: path.isEmpty ? "." : path)
        } catch let error as SystemError {
            throw RecipeError("cannot open \(what), \(path): \(String(cString: strerror(error.errno.rawValue))); give a directory")
        }
    }

    /// Opens `source` beneath its context; `place` starts each error.
    func open(_ source: Recipe.Source, place: String) throws -> ContextFile {
        let directory: Directory
        if let name = source.context {
            guard let granted = named[name] else {
                throw RecipeError("\(place): no build context '\(name)' was granted; pass berth build --build-context \(name)=DIR")
            }
            directory = granted
        } else {
            directory = defaultDirectory
        }
        let where_ = source.context.map { "the build context '\($0)' (\(directory.displayPath))" }
            ?? "the build context \(directory.displayPath)"
        do {
            let descriptor = try directory.openPath(beneath: source.path)
            return ContextFile(descriptor: descriptor, status: try descriptor.status(), name: source.description)
        } catch let error as SystemError {
            switch error.errno {
            case .noSuchFileOrDirectory:
                throw RecipeError("\(place): \(source.path) does not exist in \(where_)")
            case .improperLink:
                // EXDEV: RESOLVE_BENEATH met an absolute symlink or a `..` above the context.
                throw RecipeError("\(place): \(source.path) leads out of \(where_) through a symlink; a recipe reads only beneath its build context")
            case .tooManySymbolicLinkLevels:
                throw RecipeError("\(place): \(source.path) in \(where_) goes through a magic link or too many symlinks")
            default:
                throw RecipeError("\(place): cannot open \(source.path) in \(where_): \(String(cString: strerror(error.errno.rawValue)))")
            }
        }
    }
}

/// A file or directory of a build context, held open (O_PATH) from the check before the build
/// to its use, so what is hashed for the cache and what is copied is one and the same file.
struct ContextFile {
    let descriptor: Descriptor
    let status: FileStatus
    /// As the recipe names it, for messages.
    let name: String

    /// Reopens it for reading, through /proc/self/fd: the same inode, no lookup by name.
    func openFile() throws -> Descriptor {
        try Descriptor.open(descriptor.procPath, O_RDONLY | O_NOCTTY)
    }

    func openDirectory() throws -> Directory {
        Directory(try Descriptor.open(descriptor.procPath, O_RDONLY | O_DIRECTORY), displayPath: name)
    }
}

/// Every host file a recipe takes, opened beneath its context before anything is built or the
/// store is opened, so a recipe that reaches out of its context is refused having done nothing.
public struct RecipeSources {
    var tarball: ContextFile?
    /// By step index.
    var copies: [Int: ContextFile] = [:]

    public init(recipe: Recipe, context: BuildContext) throws {
        if case .tarball(let source, _) = recipe.base {
            let file = try context.open(source, place: "\(recipe.file): [base]")
            guard file.status.kind == .regular else {
                throw RecipeError("\(recipe.file): [base]: tarball \(source) is a \(file.status.kind.rawValue), not a file")
            }
            tarball = file
        }
        for (index, step) in recipe.steps.enumerated() {
            guard case .copy(let source, let to, _) = step else { continue }
            let place = "\(recipe.file): step \(index + 1) (copy \(source) to \(to))"
            let file = try context.open(source, place: place)
            guard file.status.kind == .regular || file.status.kind == .directory else {
                throw RecipeError("\(place): \(source) is a \(file.status.kind.rawValue); copy takes files and directories")
            }
            copies[index] = file
        }
    }

    /// The file opened for the copy at step `index` (counting from 0) of `recipe`.
    func copy(ofStep index: Int, recipe: Recipe) throws -> ContextFile {
        guard let file = copies[index] else {
            throw RecipeError("\(recipe.file): step \(index + 1): its source was not opened with the recipe's files; build it again")
        }
        return file
    }
}
