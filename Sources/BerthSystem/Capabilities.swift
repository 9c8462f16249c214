import CBerth
import Glibc

/// A set of Linux capabilities (<linux/capability.h>), as a bit each.
public struct Capabilities: OptionSet, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The capability numbered `number`.
    public init(number: Int) { rawValue = 1 << UInt64(number) }

    public static let netAdmin = Capabilities(number: 12)
    public static let ipcLock = Capabilities(number: 14)
    public static let sysModule = Capabilities(number: 16)
    public static let sysRawIO = Capabilities(number: 17)
    public static let sysPtrace = Capabilities(number: 19)
    public static let sysPacct = Capabilities(number: 20)
    public static let sysBoot = Capabilities(number: 22)
    public static let sysResource = Capabilities(number: 24)
    public static let sysTime = Capabilities(number: 25)
    public static let sysTTYConfig = Capabilities(number: 26)
    public static let syslog = Capabilities(number: 34)

    /// The bounding set systemd-nspawn 252 keeps by default (`CapBnd` 0xfcecafff): all of 0-31
    /// but CAP_NET_ADMIN, CAP_IPC_LOCK, CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_PACCT,
    /// CAP_SYS_RESOURCE and CAP_SYS_TIME, and none from 32 up.
    public static let nspawnDefault = Capabilities(rawValue: 0xffff_ffff)
        .subtracting([.netAdmin, .ipcLock, .sysModule, .sysRawIO, .sysPacct, .sysResource, .sysTime])

    /// The kernel's names of the capabilities, by number (without the `cap_` prefix).
    public static let names = [
        "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
        "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
        "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
        "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
        "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf",
        "checkpoint_restore",
    ]

    /// Every capability up to 62, the most systemd's lists take.
    public static let all = Capabilities(rawValue: (1 << 63) - 1)

    /// A list as systemd-nspawn's `--capability=` takes it: names with their `CAP_` prefix
    /// (in either case), numbers, or `all`, separated by commas. Nil for a word that is none.
    public init?(parsingList list: String) {
        var set = Capabilities()
        for word in list.split(separator: ",") {
            if word == "all" {
                set.formUnion(.all)
            } else if let number = Int(word), number >= 0, number < 63 {
                set.insert(Capabilities(number: number))
            } else if word.lowercased().hasPrefix("cap_"), let number = Self.names.firstIndex(of: String(word.lowercased().dropFirst(4))) {
                set.insert(Capabilities(number: number))
            } else {
                return nil
            }
        }
        self = set
    }

    /// The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap).
    public static func lastKnown() -> Int {
        let text = (try? Descriptor.open("/proc/sys/kernel/cap_last_cap", O_RDONLY).readAll(limit: 16)) ?? []
        return Int(String(decoding: text.filter { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }, as: UTF8.self)) ?? 40
    }

    /// Drops every capability not in `kept` from this process's bounding set, so that no exec
    /// can gain it again.
    /// What is left of the set is returned: `kept` less what this process's set lacked already.
    @discardableResult
    public static func limitBoundingSet(to kept: Capabilities) throws -> Capabilities {
        var left = Capabilities()
        for number in 0...lastKnown() {
            let capability = Capabilities(number: number)
            if !kept.contains(capability) {
                _ = try retryingInterrupts("drop capability \(number)") { cberth_drop_bounding_capability(Int32(number)) }
            } else if cberth_bounding_holds(Int32(number)) == 1 {
                left.insert(capability)
            }
        }
        return left
    }

    /// Makes these capabilities this thread's inheritable set, as nspawn leaves it for its
    /// payload (the bounding set; a program of the image with file capabilities gains them).
    public func makeInheritable() throws {
        _ = try retryingInterrupts("capset") { cberth_set_inheritable_capabilities(rawValue) }
    }

    /// Raises each of these capabilities in the ambient set, which an exec by any user keeps:
    /// each must be permitted and inheritable already.
    public func raiseAmbient() throws {
        for number in 0..<63 where contains(Capabilities(number: number)) {
            _ = try retryingInterrupts("raise ambient capability \(number)") { cberth_raise_ambient_capability(Int32(number)) }
        }
    }
}
