import BerthSystem
import Glibc
import SystemPackage

/// How a container's user ids relate to the host's (`-U`, `--private-users=`), as in nspawn.
public enum PrivateUsers: Equatable, Sendable {
    /// No user namespace: root inside is root on the host. Not a security boundary.
    case off
    /// 65536 ids picked from nspawn's range, from a hash of the machine's name, never shared
    /// with another running machine (the default, and `-U`).
    case pick
    /// A user namespace that maps ids 0-65535 onto themselves: the capabilities are the
    /// namespace's, not the host's, but the ids are the host's.
    case identity
    /// `BASE[:COUNT]`.
    case range(IDRange)

    /// nspawn's `--private-users=` values: a boolean, `pick`, `identity`, or `BASE[:COUNT]`
    /// (digits are always a base).
    /// (nspawn's `yes` takes the range from the owner of the image's root; berth keeps images
    /// 0-based on disk, so there is no such owner, and `yes` picks.)
    public init(parsing text: String) throws {
        // As nspawn: digits are a base, never a boolean; the other boolean spellings in any case.
        let word = text.lowercased()
        if text.allSatisfy(\.isASCII), !text.isEmpty, text.allSatisfy({ $0 == ":" || $0.isNumber }) {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2, let base = UInt32(parts[0]), let count = parts.count == 2 ? UInt32(parts[1]) : 65536,
                  count > 0, UInt64(base) + UInt64(count) <= UInt64(UInt32.max) else {
                throw LaunchError("--private-users takes no, pick, identity or BASE[:COUNT], not '\(text)'")
            }
            self = .range(IDRange(base: base, count: count))
        } else if ["no", "n", "false", "f", "off"].contains(word) {
            self = .off
        } else if ["yes", "y", "true", "t", "on"].contains(word) || text == "pick" {
            self = .pick
        } else if text == "identity" {
            self = .identity
        } else {
            throw LaunchError("--private-users takes no, pick, identity or BASE[:COUNT], not '\(text)'")
        }
    }

    /// nspawn's automatic range: 64K-aligned blocks from 0x00080000 up to 0x6FFF0000.
    static let pickedBlocks = (first: UInt32(0x0008_0000), end: UInt32(0x6FFF_0000), size: UInt32(0x1_0000))

    /// The range for a machine named `machine` and the locks that keep it the machine's alone
    /// while it runs (held until their descriptors close); nil for `.off`.
    func allocate(for machine: String) throws -> (range: IDRange, locks: [Descriptor])? {
        switch self {
        case .off: return nil
        case .identity: return (IDRange(base: 0, count: 65536), [])
        case .range(let range):
            guard let locks = try Self.lockRange(range) else {
                throw LaunchError("the user ids \(range.base)-\(UInt64(range.base) + UInt64(range.count) - 1) are in use by another running machine; give another --private-users=BASE, or pick")
            }
            return (range, locks)
        case .pick:
            let blocks = (Self.pickedBlocks.end - Self.pickedBlocks.first) / Self.pickedBlocks.size
            // FNV-1a: the same name gets the same range from one run to the next.
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in machine.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
            for probe in 0..<UInt64(256) {
                let block = UInt32((hash &+ probe) % UInt64(blocks))
                let range = IDRange(base: Self.pickedBlocks.first + block * Self.pickedBlocks.size, count: 65536)
                if let locks = try Self.lockRange(range) { return (range, locks) }
            }
            throw LaunchError("no free range of user ids for a user namespace (256 tried); stop a machine, or give --private-users=BASE")
        }
    }

    /// Takes the locks of every 64K block `range` touches, under /run/berth/userns; nil when
    /// another running machine holds one of them.
    private static func lockRange(_ range: IDRange) throws -> [Descriptor]? {
        let directory = try RuntimeDirectory.path("userns")
        let first = range.base / pickedBlocks.size, last = UInt32((UInt64(range.base) + UInt64(range.count) - 1) / UInt64(pickedBlocks.size))
        guard last - first < 4096 else { throw LaunchError("--private-users takes at most 4096 blocks of 65536 ids") }
        var locks: [Descriptor] = []
        for block in first...last {
            let lock = try Descriptor.open(directory.appending(String(block * pickedBlocks.size, radix: 16) + ".lock"), O_RDWR | O_CREAT, mode: 0o600)
            guard try lock.lock(.exclusive, wait: false) else { return nil }
            locks.append(lock)
        }
        return locks
    }
}

/// nspawn's `--private-users-ownership=`. Berth keeps images 0-based on disk and maps their ids
/// with idmapped mounts (`map`; `auto` means the same); `chown`, which rewrites a tree's owners
/// on disk, would break that promise for every clone sharing its layers, so it is refused.
public enum PrivateUsersOwnership: String, Sendable {
    case map, auto

    public init(parsing text: String) throws {
        if text == "chown" {
            throw LaunchError("--private-users-ownership=chown is not supported: berth keeps images 0-based on disk and maps ids with idmapped mounts; use map (the default)")
        }
        guard let value = PrivateUsersOwnership(rawValue: text) else {
            throw LaunchError("--private-users-ownership takes map or auto, not '\(text)'")
        }
        self = value
    }
}

/// `/run/berth`: what running machines hold, gone at the host's reboot.
enum RuntimeDirectory {
    static let root: FilePath = "/run/berth"

    /// `/run/berth/NAME`, made (0700) when missing.
    static func path(_ name: String) throws -> FilePath {
        for directory in [root, root.appending(name)] {
            let made = directory.withPlatformString { mkdir($0, 0o700) }
            if made != 0 && errno != EEXIST { throw SystemError.last("mkdir", path: directory.string) }
        }
        return root.appending(name)
    }
}
