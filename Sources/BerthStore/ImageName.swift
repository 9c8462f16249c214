/// A machine image's name: what `machinectl` and `systemd-nspawn -M` accept, checked before any work.
public struct ImageName: Hashable, CustomStringConvertible, Sendable {
    public let rawValue: String

    public static let maxLength = 64

    /// Checks `name`: letters, digits, `-`, `_` and `.`, at most 64 characters, not starting with
    /// a dot (hidden, and `.`/`..`) or a dash (it would read as an option).
    public init(_ name: String) throws {
        guard !name.isEmpty else { throw StoreError("an image name cannot be empty") }
        guard name.utf8.count <= Self.maxLength else {
            throw StoreError("image name '\(name)' is longer than \(Self.maxLength) characters; choose a shorter one")
        }
        guard name.utf8.allSatisfy({ Self.allowed($0) }) else {
            throw StoreError("image name '\(name)' may hold only letters, digits, '-', '_' and '.'; choose another")
        }
        guard let first = name.utf8.first, first != UInt8(ascii: "."), first != UInt8(ascii: "-") else {
            throw StoreError("image name '\(name)' cannot start with '.' or '-'; choose another")
        }
        rawValue = name
    }

    private static func allowed(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
            return true
        default:
            return false
        }
    }

    /// The name an import takes from its source: the base name less its archive suffixes
    /// (`debian.tar.zst` gives `debian`), as `machinectl import-tar` does.
    public static func derived(fromSource source: String) throws -> ImageName {
        var base = Substring(source)
        while base.count > 1, base.hasSuffix("/") { base = base.dropLast() }
        if let slash = base.lastIndex(of: "/") { base = base[base.index(after: slash)...] }
        let suffixes = [".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2", ".tgz", ".txz", ".tzst", ".tbz2", ".tbz",
                        ".tar", ".gz", ".xz", ".zst", ".bz2"]
        var stripped = true
        while stripped {
            stripped = false
            for suffix in suffixes where base.count > suffix.count && base.hasSuffix(suffix) {
                base = base.dropLast(suffix.count)
                stripped = true
                break
            }
        }
        do {
            return try ImageName(String(base))
        } catch let error as StoreError {
            throw StoreError("cannot name the image after '\(source)': \(error.message); give a NAME")
        }
    }

    public var description: String { rawValue }
}
