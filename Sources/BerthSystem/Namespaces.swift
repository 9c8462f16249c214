import CBerth

/// A set of Linux namespaces, as clone(2) and unshare(2) name them.
public struct Namespaces: OptionSet, Sendable {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }

    public static let mount = Namespaces(rawValue: UInt(CBERTH_CLONE_NEWNS))
    public static let uts = Namespaces(rawValue: UInt(CBERTH_CLONE_NEWUTS))
    public static let ipc = Namespaces(rawValue: UInt(CBERTH_CLONE_NEWIPC))
    public static let pid = Namespaces(rawValue: UInt(CBERTH_CLONE_NEWPID))
    public static let network = Namespaces(rawValue: UInt(CBERTH_CLONE_NEWNET))
    public static let user = Namespaces(rawValue: UInt(CBERTH_CLONE_NEWUSER))
    public static let cgroup = Namespaces(rawValue: UInt(CBERTH_CLONE_NEWCGROUP))
}
