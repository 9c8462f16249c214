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

    /// The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap).
    public static func lastKnown() -> Int {
        let text = (try? Descriptor.open("/proc/sys/kernel/cap_last_cap", O_RDONLY).readAll(limit: 16)) ?? []
        return Int(String(decoding: text.filter { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }, as: UTF8.self)) ?? 40
    }

    /// Drops every capability not in `kept` from this process's bounding set, so that no exec
    /// can gain it again.
    public static func limitBoundingSet(to kept: Capabilities) throws {
        for number in 0...lastKnown() where !kept.contains(Capabilities(number: number)) {
            _ = try retryingInterrupts("drop capability \(number)") { cberth_drop_bounding_capability(Int32(number)) }
        }
    }
}
