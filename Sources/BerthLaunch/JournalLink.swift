import BerthSystem
import Glibc
import SystemPackage

/// nspawn's `--link-journal=`: whether the machine's journal, `/var/log/journal/ID` inside (ID its
/// machine id), shows on the host's `/var/log/journal/ID`, where the host's journalctl finds it
/// (`journalctl -m`, `--directory`). The steps are nspawn 252's `setup_journal`, in its order:
///
/// - `no`: nothing. Nor with `-x`, whose tree is thrown away.
/// - `auto` (the default): `/var/log/journal` is made in the tree (journald then keeps a booted
///   system's journal on disk), and the host's `/var/log/journal/ID` is bound there when the
///   host has that directory, as `host` left it.
/// - `host`: the host's `/var/log/journal/ID` is made (its parents not: a host without a
///   persistent journal is not given one) and bound onto the tree's.
/// - `guest`: the host's `/var/log/journal/ID` becomes a symlink to the tree's directory.
/// - `try-host`, `try-guest` (`-j`): the same, but a step that cannot be done (a read-only tree,
///   a host without `/var/log/journal`) leaves the journal unlinked rather than failing the run.
///
/// The supervisor does the host's part as the host's root (`prepareHost`); the setup process
/// makes the tree's directories as the container's root (`TreePart`), and attaches the bind.
public struct JournalLink: Equatable, Sendable {
    public enum Mode: String, Sendable { case no, auto, host, guest }
    public var mode: Mode
    /// `try-`: a failure leaves the journal unlinked.
    public var tolerant: Bool

    public static let automatic = JournalLink(mode: .auto, tolerant: true)

    init(mode: Mode, tolerant: Bool) { (self.mode, self.tolerant) = (mode, tolerant) }

    /// `try-host`, `try-guest`: `-j` is `JournalLink(trying: .guest)`.
    public init(trying mode: Mode) { self.init(mode: mode, tolerant: true) }

    /// nspawn's words: no, auto, host, try-host, guest, try-guest.
    public init(parsing text: String) throws {
        switch text {
        case "no": self.init(mode: .no, tolerant: false)
        case "auto": self = .automatic
        case "host", "guest": self.init(mode: Mode(rawValue: text) ?? .no, tolerant: false)
        case "try-host", "try-guest": self.init(mode: Mode(rawValue: String(text.dropFirst(4))) ?? .no, tolerant: true)
        default: throw LaunchError("--link-journal takes no, auto, host, try-host, guest or try-guest, not '\(text)'")
        }
    }

    /// How the link travels in the launch's description.
    var encoded: String { (tolerant && mode != .auto ? "try-" : "") + mode.rawValue }

    /// What the setup process makes in the tree: nothing; `/var/log/journal`; that and the
    /// machine's own directory in it; or that with the host's directory bound onto it.
    enum TreePart: String, Sendable {
        case nothing, directories, ownDirectory, hostDirectory
    }

    /// The host's `/var/log/journal/ID` for `machineID` (the container's uuid, 8-4-4-4-12).
    static func hostDirectory(_ machineID: String) -> FilePath {
        FilePath("/var/log/journal").appending(machineID.filter { $0 != "-" })
    }

    /// Does the host's part, as the host's root, for the machine `machineID` whose tree the host
    /// knows at `treePath`; returns what the tree gets.
    func prepareHost(machineID: String, treePath: FilePath, ephemeral: Bool) throws -> TreePart {
        guard mode != .no, !ephemeral else { return .nothing }
        let id = machineID.filter { $0 != "-" }
        func refuse(_ reason: String) throws -> TreePart {
            if tolerant { return .directories }
            throw LaunchError("cannot link the machine's journal (--link-journal=\(encoded)): \(reason)")
        }
        if let hostID = try? Descriptor.open("/etc/machine-id", O_RDONLY).readAll(limit: 64),
           String(decoding: hostID.filter { $0 != UInt8(ascii: "\n") }, as: UTF8.self) == id {
            return try refuse("the machine's id is the host's (\(id)); give it one of its own with --uuid=")
        }
        let host = Self.hostDirectory(machineID)
        let inTree = treePath.appending("var/log/journal").appending(id)
        // What the host has there: a symlink (a guest's link), something else, or nothing.
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        let length = host.withPlatformString { readlink($0, &buffer, buffer.count - 1) }
        if length >= 0 {
            let target = FilePath(String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self))
            if mode != .host && target == inTree { return .ownDirectory }
            guard host.withPlatformString({ unlink($0) }) == 0 else { return try refuse("cannot remove the symlink \(host): \(Errno(rawValue: errno))") }
        } else if errno == EINVAL && mode == .guest {
            guard host.withPlatformString({ rmdir($0) }) == 0 else {
                return try refuse("\(host) is there, and could not be removed (\(Errno(rawValue: errno))); move it away")
            }
        }
        switch mode {
        case .guest:
            guard inTree.withPlatformString({ target in host.withPlatformString { symlink(target, $0) } }) == 0 else {
                return try refuse("cannot make the symlink \(host): \(Errno(rawValue: errno)) (the host has no /var/log/journal?)")
            }
            return .ownDirectory
        case .host:
            guard host.withPlatformString({ mkdir($0, 0o755) }) == 0 || errno == EEXIST else {
                return try refuse("cannot make \(host): \(Errno(rawValue: errno)) (the host has no /var/log/journal?)")
            }
            return .hostDirectory
        case .auto:
            return (try? FileStatus.of(host))??.kind == .directory ? .hostDirectory : .directories
        case .no:
            return .nothing
        }
    }
}
