import BerthSystem
import Glibc
import SystemPackage

/// How a file of the host's reaches the container's /etc, as nspawn's `--resolv-conf=` and
/// `--timezone=` say it: left as the image has it, copied over the image's (not through a
/// symlink there), replacing whatever the image has, bound read-only, made a symlink into the
/// image's own zoneinfo, or deleted.
public enum HostFileAction: String, Sendable, Equatable {
    case off, copy, replace, bind, symlink, delete
    /// Bound over the image's own file only where it has one, nothing made: a build's step
    /// (`buildResolvConf`), whose layer must hold only what the step wrote.
    case bindOver = "bind-over"
}

/// nspawn 252's modes of both options, and what `auto` comes to for a container.
public enum HostFiles {
    /// The files `--resolv-conf=` names by its modes' second words.
    static let resolvConfSources: [String: FilePath] = [
        "host": "/etc/resolv.conf", "static": "/usr/lib/systemd/resolv.conf",
        "uplink": "/run/systemd/resolve/resolv.conf", "stub": "/run/systemd/resolve/stub-resolv.conf",
    ]
    static let resolvConfModes = ["off", "delete", "auto"]
        + ["copy", "replace", "bind"].flatMap { action in ["host", "static", "uplink", "stub"].map { "\(action)-\($0)" } }
    static let timezoneModes = ["off", "copy", "bind", "symlink", "delete", "auto"]
    /// What a recipe's step runs with, which no command line can name: the host's resolver
    /// bound over the image's own file, for the step's downloads, and nothing written.
    public static let buildResolvConf = "berth-build"

    /// Whether `mode` is one of `--resolv-conf=`'s, or of `--timezone=`'s.
    public static func isResolvConfMode(_ mode: String) -> Bool { resolvConfModes.contains(mode) }
    public static func isTimezoneMode(_ mode: String) -> Bool { timezoneModes.contains(mode) }

    /// What `--resolv-conf=MODE` does, and from which of the host's files. `auto`, as nspawn's:
    /// nothing with a network of the container's own, else the host's file copied in (bound,
    /// where the tree is read-only), or with none on the host the image's deleted. One
    /// difference: on a network berth made (`-n`, `--network-zone`), whose NAT reaches the
    /// host's upstream servers, `auto` binds the file naming them (`generated`), since nothing
    /// else in the machine would. nspawn's first choice, resolved's static file where resolved
    /// listens on the host, needs D-Bus to ask, which berth does without: the host's file is used.
    public static func resolvConf(mode: String, ownNetwork: Bool, readOnly: Bool, generated: FilePath?) -> (HostFileAction, FilePath) {
        if mode == buildResolvConf { return (.bindOver, "/etc/resolv.conf") }
        if mode == "auto" {
            if let generated { return (.bind, generated) }
            if ownNetwork { return (.off, "/etc/resolv.conf") }
            if access("/etc/resolv.conf", F_OK) == 0 { return (readOnly ? .bind : .copy, "/etc/resolv.conf") }
            return (readOnly ? .off : .delete, "/etc/resolv.conf")
        }
        let words = mode.split(separator: "-", maxSplits: 1).map(String.init)
        guard words.count == 2, let action = HostFileAction(rawValue: words[0]), let source = resolvConfSources[words[1]] else {
            return (HostFileAction(rawValue: mode) ?? .off, "/etc/resolv.conf")
        }
        return (action, source)
    }

    /// What `--timezone=MODE` does, and for `symlink` the zone the host's /etc/localtime names
    /// (beneath /usr/share/zoneinfo). `auto`, as nspawn's: a symlink where the host has one
    /// (bound where the tree is read-only), a copy of a plain file, and with none on the host the
    /// image's deleted.
    public static func timezone(mode: String, readOnly: Bool) -> (HostFileAction, zone: String?) {
        let link = try? Directory(Descriptor.open("/etc", O_RDONLY | O_DIRECTORY), displayPath: "/etc").readLink("localtime").string
        let zone = link.flatMap(zoneName)
        switch mode {
        case "auto":
            if access("/etc/localtime", F_OK) != 0 && link == nil { return (readOnly ? .off : .delete, nil) }
            if link == nil { return (readOnly ? .bind : .copy, nil) }
            return (readOnly ? .bind : .symlink, zone)
        case "symlink": return zone.map { (.symlink, $0) } ?? (.off, nil)
        default: return (HostFileAction(rawValue: mode) ?? .off, nil)
        }
    }

    /// The zone a link into zoneinfo names: `Europe/Berlin` of `/usr/share/zoneinfo/Europe/Berlin`
    /// or `../usr/share/zoneinfo/Europe/Berlin`.
    static func zoneName(_ link: String) -> String? {
        for prefix in ["/usr/share/zoneinfo/", "../usr/share/zoneinfo/"] where link.hasPrefix(prefix) && link.count > prefix.count {
            return String(link.dropFirst(prefix.count))
        }
        return nil
    }
}
