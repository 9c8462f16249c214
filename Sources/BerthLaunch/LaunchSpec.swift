import BerthSystem

/// A container launch, described as a value: what the command line asked for, resolved to a
/// root directory. The supervisor hands it to the container's first process as NUL-separated
/// key/value pairs on descriptor 3.
public struct LaunchSpec: Equatable, Sendable {
    public struct BindMount: Equatable, Sendable {
        public var source: String
        public var destination: String
        public var readOnly: Bool
        /// With the source's submounts (nspawn's `rbind`, the default; `norbind` without).
        public var recursive = true
        /// Shown through the container's id mapping, so the host's owners stay the owners
        /// inside (the default under a user namespace; `noidmap` shows them unmapped).
        public var idmap = true

        public init(source: String, destination: String, readOnly: Bool) {
            self.source = source
            self.destination = destination
            self.readOnly = readOnly
        }
    }

    /// The tree to run, as a host path.
    public var root: String
    public var machineName: String
    public var hostname: String
    /// The command, or with `boot` the arguments for init; empty for the root shell.
    public var arguments: [String] = []
    public var boot = false
    /// The command runs as PID 2 under a minimal init.
    public var asPID2 = false
    public var readOnly = false
    /// Changes go to a tmpfs layer over the root (or over `lowerLayers`), gone with the container.
    public var ephemeral = false
    /// For a layered image: the layers to stack over `root`, top first.
    public var lowerLayers: [String] = []
    /// For a writable run of a layered image: its writable layer and overlayfs's work directory.
    public var upperLayer: String?
    public var overlayWork: String?
    public var privateNetwork = false
    /// The user namespace (the default picks a range for the machine).
    public var privateUsers = PrivateUsers.pick
    /// How the container's console reaches berth's streams (`--console=`, `-P`).
    public var consoleMode = ConsoleMode.automatic
    /// No status lines (`-q`): only the container's own output.
    public var quiet = false
    /// Where the user knows the tree to be (an image's path in the store), for the status line.
    public var displayRoot: String?
    /// `NAME=VALUE` settings from -E, already resolved.
    public var environment: [String] = []
    public var bindMounts: [BindMount] = []
    public var workingDirectory: String?
    public var user: String?
    public var uuid: String
    public var term: String
    /// The unified-hierarchy cgroup a booted system runs in, as its own root.
    var systemCgroup: String?
    /// Which of the container's standard streams are its pty (the caller's that are terminals);
    /// empty when it has none.
    var consoleStreams: [Int32] = []
    /// What each descriptor passed beside the description holds, in order (`PreparedMounts`).
    var descriptorRoles: [String] = []

    public init(root: String, machineName: String, uuid: String, term: String) {
        self.root = root
        self.machineName = machineName
        self.hostname = machineName
        self.uuid = uuid
        self.term = term
    }

    /// A random (version 4) UUID, as nspawn gives each container in `container_uuid`.
    public static func randomUUID() -> String {
        var digits = Array(Hex.random(32).utf8)
        digits[12] = UInt8(ascii: "4")
        digits[16] = Array("89ab".utf8)[Int(digits[16] % 4)]
        for dash in [20, 16, 12, 8] { digits.insert(UInt8(ascii: "-"), at: dash) }
        return String(decoding: digits, as: UTF8.self)
    }

    func encoded() -> [UInt8] {
        var fields: [(String, String)] = [
            ("root", root), ("machine", machineName), ("hostname", hostname), ("uuid", uuid), ("term", term),
            ("boot", boot ? "1" : "0"), ("as-pid2", asPID2 ? "1" : "0"), ("read-only", readOnly ? "1" : "0"), ("ephemeral", ephemeral ? "1" : "0"),
            ("private-network", privateNetwork ? "1" : "0"),
        ]
        fields += arguments.map { ("arg", $0) } + environment.map { ("env", $0) } + lowerLayers.map { ("lower", $0) }
        if let upperLayer, let overlayWork { fields += [("upper", upperLayer), ("work", overlayWork)] }
        for bind in bindMounts {
            fields += [("bind-source", bind.source), ("bind-destination", bind.destination), ("bind-ro", bind.readOnly ? "1" : "0")]
        }
        if let workingDirectory { fields.append(("chdir", workingDirectory)) }
        if let user { fields.append(("user", user)) }
        if let systemCgroup { fields.append(("system-cgroup", systemCgroup)) }
        fields += consoleStreams.map { ("console-stream", String($0)) } + descriptorRoles.map { ("fd", $0) }
        var bytes: [UInt8] = []
        for (key, value) in fields {
            bytes += Array(key.utf8) + [0] + Array(value.utf8) + [0]
        }
        return bytes
    }

    init?(decoding bytes: [UInt8]) {
        let parts = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard parts.count % 2 == 1, parts.last == "" else { return nil }
        var single: [String: String] = [:]
        var spec = LaunchSpec(root: "", machineName: "", uuid: "", term: "")
        var bind = BindMount(source: "", destination: "", readOnly: false)
        for i in stride(from: 0, to: parts.count - 1, by: 2) {
            let (key, value) = (parts[i], parts[i + 1])
            switch key {
            case "arg": spec.arguments.append(value)
            case "env": spec.environment.append(value)
            case "lower": spec.lowerLayers.append(value)
            case "console-stream": if let fd = Int32(value) { spec.consoleStreams.append(fd) }
            case "fd": spec.descriptorRoles.append(value)
            case "bind-source": bind.source = value
            case "bind-destination": bind.destination = value
            case "bind-ro":
                bind.readOnly = value == "1"
                spec.bindMounts.append(bind)
            default: single[key] = value
            }
        }
        guard let root = single["root"], let machine = single["machine"], let hostname = single["hostname"],
              let uuid = single["uuid"], let term = single["term"] else { return nil }
        spec.root = root
        spec.machineName = machine
        spec.hostname = hostname
        spec.uuid = uuid
        spec.term = term
        spec.boot = single["boot"] == "1"
        spec.asPID2 = single["as-pid2"] == "1"
        spec.readOnly = single["read-only"] == "1"
        spec.ephemeral = single["ephemeral"] == "1"
        spec.upperLayer = single["upper"]
        spec.overlayWork = single["work"]
        spec.privateNetwork = single["private-network"] == "1"
        spec.workingDirectory = single["chdir"]
        spec.user = single["user"]
        spec.systemCgroup = single["system-cgroup"]
        self = spec
    }
}
