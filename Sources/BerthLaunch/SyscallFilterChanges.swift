import CSeccomp
import Glibc

/// What a run changes of nspawn's default system call filter (`SyscallFilter`):
/// `--system-call-filter=` adds calls and groups to what the container may make, or with `~`
/// refuses them (a refusal wins over an addition, as in nspawn, whatever their order), and
/// `--suppress-sync=yes` makes the sync calls do nothing. A machine's shell gets the same
/// filter, so the changes travel as one line of words (`encoded`): in the launch's description,
/// the machine's record, `berth shell`'s joiner and the key of the program kept for it.
public struct SyscallFilterChanges: Equatable, Sendable {
    public var suppressSync = false
    /// Calls and `@groups` allowed beyond the default list, and those refused, in the order given.
    public private(set) var allowed: [String] = []
    public private(set) var denied: [String] = []

    public init() {}

    /// Adds one `--system-call-filter=` value: names separated by white space, the whole list
    /// refused when it starts with `~`. Unlike nspawn 252, which passes over a name it does not
    /// know (a typo in a `~` list would silently leave the call allowed), a name that is neither a
    /// group nor a call libseccomp knows on any of this machine's ABIs is refused.
    public mutating func add(list: String) throws {
        let refusing = list.hasPrefix("~")
        let names = list.dropFirst(refusing ? 1 : 0).split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init)
        for name in names {
            guard Self.isKnown(name) else {
                throw LaunchError("--system-call-filter names '\(name)', which is neither a system call this machine knows nor a group (@default, @clock, @keyring, ...; 'systemd-analyze syscall-filter' lists them)")
            }
        }
        if refusing { denied += names } else { allowed += names }
    }

    /// A group of `SyscallFilter.groups`, `@known`, or a call some ABI of this machine has.
    static func isKnown(_ name: String) -> Bool {
        if name.hasPrefix("@") { return name == "@known" || SyscallFilter.groups[name] != nil }
        guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { return false }
        return SyscallFilter.abis.contains { seccomp_syscall_resolve_name_arch($0.seccompArch, name) >= 0 }
    }

    public var isEmpty: Bool { self == SyscallFilterChanges() }

    /// One line: `suppress-sync`, `+NAME` for each allowed, `~NAME` for each refused.
    public var encoded: String {
        ((suppressSync ? ["suppress-sync"] : []) + allowed.map { "+" + $0 } + denied.map { "~" + $0 }).joined(separator: " ")
    }

    /// The changes `encoded` wrote; nil for a line it never writes.
    public init?(encoded: String) {
        for word in encoded.split(separator: " ") {
            switch word.first {
            case "+" where Self.isKnown(String(word.dropFirst())): allowed.append(String(word.dropFirst()))
            case "~" where Self.isKnown(String(word.dropFirst())): denied.append(String(word.dropFirst()))
            default:
                guard word == "suppress-sync" else { return nil }
                suppressSync = true
            }
        }
    }
}
