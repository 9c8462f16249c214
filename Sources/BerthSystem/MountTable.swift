import CBerth
import Glibc
import SystemPackage

/// One mount as a namespace's mountinfo lists it.
public struct MountEntry: Sendable {
    public let id: Int
    public let parentID: Int
    /// The file system's device, as mountinfo writes it ("major:minor").
    public let device: String
    /// The directory of its file system that is mounted ("/" for the whole of it).
    public let root: FilePath
    /// Where it is mounted, seen from the reader's root.
    public let point: FilePath
    public let type: String
    /// The file system's own options ("rw,memory" for a cgroup v1 hierarchy).
    public let superOptions: String
    /// The peer group it shares mount and unmount events with (`shared:N`), and the one it
    /// receives them from (`master:N`).
    public let peerGroup: Int?
    public let master: Int?

    /// Whether mount events of peer group `group` reach this mount: it is in the group or a slave of it.
    func receives(from group: Int) -> Bool { peerGroup == group || master == group }

    /// The entries of mountinfo `bytes`, in its order (parents before children, the topmost of
    /// mounts stacked at one point last).
    public static func table(_ bytes: [UInt8]) -> [MountEntry] {
        // Bytes, not Strings: a host's mountinfo has hundreds of lines, and a scan reads one a namespace.
        bytes.split(separator: UInt8(ascii: "\n")).compactMap { line in
            let fields = line.split(separator: UInt8(ascii: " "))
            guard fields.count > 7, let dash = fields.firstIndex(where: { $0.elementsEqual([UInt8(ascii: "-")]) }), dash > 5,
                  dash + 1 < fields.count, let id = number(fields[0]), let parent = number(fields[1]) else { return nil }
            var peerGroup: Int?, master: Int?
            for tag in fields[6..<dash] {
                if tag.starts(with: Array("shared:".utf8)) { peerGroup = number(tag.dropFirst(7)) }
                if tag.starts(with: Array("master:".utf8)) { master = number(tag.dropFirst(7)) }
            }
            return MountEntry(id: id, parentID: parent, device: String(decoding: fields[2], as: UTF8.self),
                              root: unescapedPath(fields[3]), point: unescapedPath(fields[4]),
                              type: String(decoding: fields[dash + 1], as: UTF8.self),
                              superOptions: dash + 3 < fields.count ? String(decoding: fields[dash + 3], as: UTF8.self) : "",
                              peerGroup: peerGroup, master: master)
        }
    }

    private static func number(_ bytes: ArraySlice<UInt8>) -> Int? { Int(String(decoding: bytes, as: UTF8.self)) }

    /// mountinfo writes space, tab, newline and backslash in paths as octal escapes.
    private static func unescapedPath(_ field: ArraySlice<UInt8>) -> FilePath {
        var bytes: [UInt8] = []
        var i = field.startIndex
        while i < field.endIndex {
            if field[i] == UInt8(ascii: "\\"), field.distance(from: i, to: field.endIndex) >= 4,
               let code = UInt8(String(decoding: field[(i + 1)..<(i + 4)], as: UTF8.self), radix: 8) {
                bytes.append(code)
                i += 4
            } else {
                bytes.append(field[i])
                i += 1
            }
        }
        bytes.append(0)
        return FilePath(platformString: bytes.map { CChar(bitPattern: $0) })
    }
}

/// What keeps a file system mounted besides the mount in question.
public enum MountHolder: Equatable, Sendable {
    /// Another mount of it in this namespace, at this point.
    case mount(FilePath)
    /// A process of another mount namespace, which has a mount of it.
    case process(pid_t, command: String)
}

extension Mount {
    /// The mounts of this mount namespace.
    public static func entries() throws -> [MountEntry] {
        MountEntry.table(try Descriptor.open("/proc/self/mountinfo", O_RDONLY).readAll())
    }

    /// The mount points of this mount namespace, with their file system types.
    public static func table() throws -> [(path: FilePath, type: String)] {
        try entries().map { ($0.point, $0.type) }
    }

    /// The mount under which `path` (a real path, no symlinks) lies: the topmost mount at the
    /// longest mount point that is `path` or one of its parents.
    public static func containing(_ path: FilePath, in table: [MountEntry]) -> MountEntry? {
        var best: MountEntry?
        for entry in table where path.starts(with: entry.point) {
            if best.map({ entry.point.components.count >= $0.point.components.count }) ?? true { best = entry }
        }
        return best
    }

    /// What holds the file system of `tree` (a mount of this namespace's `table`) anywhere but
    /// at `tree` itself and the copies of it the kernel takes away with it: another mount of it
    /// here, or a process of another mount namespace; nil when nothing does.
    ///
    /// A tool that copied the host's mounts into a mount namespace of its own (systemd-nspawn
    /// does, for as long as its container runs; so does a service with PrivateTmp=) keeps the
    /// file system alive after the host unmounts it, unless mount events reach its copy: a copy
    /// at the same place, in the peer group of `tree` or a slave of it, on a parent that receives
    /// `tree`'s parent's events, in a namespace of this user namespace (a less privileged one
    /// holds its copies locked), is unmounted with it, or makes the unmount fail busy. Every
    /// other mount of it, anywhere, counts. A namespace's table is read whole, from its own root
    /// (its processes may be chrooted or pivoted elsewhere, where their own mountinfo would not
    /// show the copy), once, through one of its processes; processes that go meanwhile are
    /// passed over. A holder whose command is among `lastResort` is named only when there is no other.
    public static func otherHolder(of tree: MountEntry, in table: [MountEntry], lastResort: Set<String> = []) -> MountHolder? {
        if let bind = table.last(where: { $0.device == tree.device && $0.id != tree.id }) { return .mount(bind.point) }
        let parentGroup = table.last(where: { $0.id == tree.parentID })?.peerGroup
        let own = namespaceLink("self", "mnt"), ownUsers = namespaceLink("self", "user")
        var fallback: MountHolder?
        var seen: Set<String> = []
        guard let proc = try? Directory(opening: "/proc") else { return nil }
        for entry in (try? proc.entryNames()) ?? [] {
            guard let pid = pid_t(entry.string), let namespace = namespaceLink(entry.string, "mnt"), namespace != own,
                  !seen.contains(namespace), let mounts = namespaceTable(of: pid, proc: proc), !mounts.isEmpty else { continue }
            seen.insert(namespace)
            let propagates = namespaceLink(entry.string, "user") == ownUsers
            for copy in mounts where copy.device == tree.device {
                if propagates, copy.point == tree.point, let group = tree.peerGroup, copy.receives(from: group),
                   let parentGroup, mounts.last(where: { $0.id == copy.parentID })?.receives(from: parentGroup) == true { continue }
                // A process gone since its table was read is passed over, and its namespace with
                // it unless another process of the namespace still holds the copy.
                guard let command = (try? Descriptor.open(FilePath("/proc/\(pid)/comm"), O_RDONLY).readAll(limit: 64))
                    .map({ String(decoding: $0.filter { $0 != UInt8(ascii: "\n") }, as: UTF8.self) }) else {
                    seen.remove(namespace)
                    break
                }
                guard lastResort.contains(command) else { return .process(pid, command: command) }
                if fallback == nil { fallback = .process(pid, command: command) }
                break
            }
        }
        return fallback
    }

    /// Namespace `kind` of /proc/`process`, as its link names it.
    private static func namespaceLink(_ process: String, _ kind: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 64)
        let n = readlink("/proc/\(process)/ns/\(kind)", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The whole mount table of `pid`'s mount namespace, read by a child that enters it; where
    /// that is not allowed, what the process's own mountinfo shows.
    private static func namespaceTable(of pid: pid_t, proc: Directory) -> [MountEntry]? {
        guard let namespace = try? Descriptor.open(FilePath("/proc/\(pid)/ns/mnt"), O_RDONLY) else { return nil }
        // Asked again when a child fails (a fork refused under load): the fallback below cannot
        // see a copy under a process chrooted away, which would then pass for no use at all.
        for _ in 0..<3 {
            var child: pid_t = -1
            var reader: Descriptor?
            if let pipe = try? Pipe() {
                // The writing end closes here, as the block ends: the child's is then the only one.
                child = withExtendedLifetime(pipe.writer) {
                    cberth_read_mount_namespace(namespace.rawValue, proc.descriptor.rawValue, pipe.writer.rawValue)
                }
                reader = pipe.reader
            }
            guard child > 0 else { continue }
            let bytes = try? reader?.readAll()
            var status: Int32 = 0
            while waitpid(child, &status, 0) < 0 && errno == EINTR {}
            if let bytes, status == 0 { return MountEntry.table(bytes) }
        }
        return (try? Descriptor.open(FilePath("/proc/\(pid)/mountinfo"), O_RDONLY).readAll()).map(MountEntry.table)
    }
}
