import BerthSystem
import Glibc
import SystemPackage

/// `.berth/cache/KEY`: the stack of frozen layers (bottom first) a build step's key stands for.
/// KEY is a SHA-256 digest; the file holds layer names separated by spaces. An entry is
/// believed only when it reads exactly as berth writes it and every layer it names is there:
/// anything else is a miss, so a hostile or stale entry makes the step run again, never
/// stacks something that is not a layer.
struct BuildCache {
    let store: StoreDirectories

    /// The cache's directory; with `make`, made where missing. nil when it is not there.
    private func directory(make: Bool) throws -> Directory? {
        try store.optionalDirectory("cache", make: make)
    }

    /// The stack cached under `key`, when the entry is sound and all its layers are there.
    func stack(_ key: String) throws -> [String]? {
        guard let cache = try directory(make: false) else { return nil }
        return try stack(key, in: cache)
    }

    private func stack(_ key: String, in cache: Directory) throws -> [String]? {
        guard LayerStack.isCacheKey(key), let status = try cache.status(FilePath(key)), status.kind == .regular else { return nil }
        let bytes = try cache.openFile(FilePath(key), O_RDONLY).readAll(limit: Self.maxSize + 1)
        guard let stack = Self.decode(bytes),
              try stack.allSatisfy({ try store.layers.status(FilePath($0))?.kind == .directory }) else { return nil }
        return stack
    }

    /// Larger than any stack berth writes (a thousand layers).
    static let maxSize = 16 << 10

    /// The layer names of an entry's bytes: one line, names separated by single spaces, each a
    /// layer name berth makes, none twice. nil for anything else.
    static func decode(_ bytes: [UInt8]) -> [String]? {
        guard bytes.count <= maxSize, bytes.last == UInt8(ascii: "\n"), !bytes.contains(0) else { return nil }
        let text = String(decoding: bytes.dropLast(), as: UTF8.self)
        let stack = text.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        guard !stack.isEmpty, stack.allSatisfy(LayerStack.isLayerName), Set(stack).count == stack.count else { return nil }
        return stack
    }

    /// Every stack the cache names, for gc and remove.
    func stacks() throws -> [[String]] {
        guard let cache = try directory(make: false) else { return [] }
        return try cache.entryNames().compactMap { try stack($0.string, in: cache) }
    }

    /// Forgets every cache entry (their layers go with the next gc, unless an image uses them).
    func drop() throws {
        try store.withStoreLock {
            guard let cache = try directory(make: false) else { return }
            for entry in try cache.entryNames() { try cache.remove(entry, isDirectory: false) }
        }
    }

    /// Records `stack` under `key`, replacing what was there, in one rename.
    func record(_ key: String, _ stack: [String]) throws {
        guard LayerStack.isCacheKey(key), !stack.isEmpty, stack.allSatisfy(LayerStack.isLayerName) else {
            throw StoreError(.invalidInput, "a build cache entry needs a SHA-256 key and layer names, not '\(key)'")
        }
        guard let cache = try directory(make: true) else { return }
        let partial = FilePath(".\(key).\(randomSuffix())")
        let file = try cache.createFile(partial, mode: 0o600)
        try file.writeAll(stack.joined(separator: " ") + "\n")
        try file.sync()
        try cache.rename(partial, to: FilePath(key), .replace)
        try cache.sync()
    }
}
