import Glibc
import SystemPackage

/// The path `path` resolves to, symlinks followed (realpath(3)), by its bytes; nil when it
/// does not exist.
public func realPath(_ path: FilePath) -> FilePath? {
    guard let resolved = path.withPlatformString({ Glibc.realpath($0, nil) }) else { return nil }
    defer { free(resolved) }
    return FilePath(platformString: resolved)
}
