import BerthSystem
import Glibc
import SystemPackage

/// Finds the recipe that builds a missing base image, for the error that names it: one in the
/// failing recipe's own folder, or in `recipes/` of the working directory (where the shipped
/// ones are), whose `name` is the image's. Only names are read from them; one that does not
/// parse is passed over.
enum BaseRecipes {
    static func recipe(building image: String, besides recipeFile: String) -> String? {
        let folder = recipeFile.lastIndex(of: "/").map { String(recipeFile[..<$0]) } ?? "."
        var seen = Set<String>()
        for directory in [folder.isEmpty ? "/" : folder, "recipes"] {
            for file in tomlFiles(in: directory) where seen.insert(canonical(file)).inserted {
                // A regular file only: a FIFO named *.toml would hold the error up forever.
                var st = stat()
                guard canonical(file) != canonical(recipeFile), stat(file, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
                if (try? Recipe(contentsOf: file))?.name == image { return file }
            }
        }
        return nil
    }

    /// The `.toml` files of `directory`, sorted, as paths starting with it (`./` dropped).
    private static func tomlFiles(in directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasSuffix(".toml") && !name.hasPrefix(".") { names.append(name) }
        }
        let prefix = directory == "." ? "" : directory.hasSuffix("/") ? directory : directory + "/"
        return names.sorted().map { prefix + $0 }
    }

    private static func canonical(_ path: String) -> String {
        realPath(FilePath(path))?.string ?? path
    }
}
