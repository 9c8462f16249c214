import BerthSystem
import Glibc

/// A user as the image's own /etc/passwd and /etc/group describe it (never the host's).
struct ImageUser {
    var name: String
    var uid: uid_t
    var gid: gid_t
    var home: String
    var shell: String
    var groups: [gid_t]

    /// Looks `user` (a name or a number) up in the files of the current root.
    static func lookup(_ user: String) throws -> ImageUser {
        let passwd = readLines("/etc/passwd")
        let byName = passwd.first { $0[0] == user }
        let entry = byName ?? passwd.first { fields in UInt32(user).map { fields[2] == String($0) } ?? false }
        guard let entry, let uid = uid_t(entry[2]), let gid = gid_t(entry[3]) else {
            // root needs no entry, as under nspawn (which looks it up only when asked for it):
            // an image without /etc/passwd (--volatile=yes's empty /etc) still runs as root.
            if user == "root" || user == "0" {
                return ImageUser(name: "root", uid: 0, gid: 0, home: "/root", shell: "/bin/sh", groups: [])
            }
            throw LaunchError("user '\(user)' is not in the image's /etc/passwd")
        }
        // Given by number, as nspawn 252 takes it: USER is the number, and only the primary
        // group, since no name was given to look groups up by.
        let name = byName == nil ? user : entry[0]
        let groups = byName == nil ? [] : readLines("/etc/group").compactMap { fields -> gid_t? in
            guard fields.count >= 4, fields[3].split(separator: ",").contains(Substring(name)) else { return nil }
            return gid_t(fields[2])
        }
        return ImageUser(name: name, uid: uid, gid: gid, home: entry[5].isEmpty ? "/" : entry[5],
                         shell: entry[6].isEmpty ? "/bin/sh" : entry[6], groups: groups)
    }

    /// Makes the user's home directory where the image lacks it, as nspawn does: 0755, the
    /// user's, its missing parents root's. A read-only tree keeps going without it.
    func makeHome() throws {
        guard home.hasPrefix("/"), access(home, F_OK) != 0 else { return }
        var path = ""
        for component in home.split(separator: "/") {
            path += "/" + component
            if mkdir(path, 0o755) != 0 {
                if errno == EEXIST { continue }
                if errno == EROFS { return }
                throw LaunchError("cannot make \(name)'s home \(path) in the container: \(SystemError.last("mkdir").errno)")
            }
            if path == home, chown(path, uid, gid) != 0 {
                throw LaunchError("cannot give \(name) their home \(path): \(SystemError.last("chown").errno)")
            }
        }
    }

    /// argv[0] of the user's login shell, as nspawn starts it: `-` and the shell's name.
    var loginShellName: String { "-" + (shell.split(separator: "/").last.map(String.init) ?? "sh") }

    /// The environment every program berth runs in a container as this user starts from: TERM
    /// when there is one, SHELL for a login (`berth shell`; nspawn gives a run none).
    func environment(term: String, shell withShell: Bool = true) -> [String] {
        ["PATH=\(ContainerStage.defaultPath)", "container=berth"] + (term.isEmpty ? [] : ["TERM=\(term)"])
            + ["HOME=\(home)", "USER=\(name)", "LOGNAME=\(name)"] + (withShell ? ["SHELL=\(shell)"] : [])
    }

    /// Takes this user's groups and ids (the caller is the namespace's root).
    func become() throws {
        var list = groups
        _ = try retryingInterrupts("setgroups") { setgroups(list.count, &list) }
        _ = try retryingInterrupts("setgid") { setgid(gid) }
        _ = try retryingInterrupts("setuid") { setuid(uid) }
    }

    /// The lines of a colon-separated database with at least seven fields (padded with "").
    private static func readLines(_ path: String) -> [[String]] {
        guard let file = fopen(path, "re") else { return [] }
        defer { fclose(file) }
        var lines: [[String]] = []
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        while getline(&line, &capacity, file) > 0, let line {
            var text = String(cString: line)
            if text.hasSuffix("\n") { text.removeLast() }
            if text.hasPrefix("#") || text.isEmpty { continue }
            var fields = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            while fields.count < 7 { fields.append("") }
            lines.append(fields)
        }
        free(line)
        return lines
    }
}

/// Why a container could not be started.
public struct LaunchError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
