import BerthSystem
import Glibc
import SystemPackage

/// What network a machine asked for: nspawn's `--network-veth`, `--network-bridge=BR`,
/// `--network-zone=Z`, and its `--port`s.
public struct NetworkRequest: Equatable, Sendable {
    public enum Mode: Equatable, Sendable {
        /// A veth pair, `ve-NAME` on the host, with an address pair of its own.
        case veth
        /// The host's end joins an existing bridge, whose owner's network addresses the machine.
        case bridge(String)
        /// The host's end joins `vz-ZONE`, which berth makes (with a subnet) and removes when empty.
        case zone(String)
    }

    public var mode: Mode
    public var ports: [PortForward]

    public init(mode: Mode, ports: [PortForward] = []) {
        self.mode = mode
        self.ports = ports
    }

    /// The bridge the host's end joins, if any: the user's, or the zone's `vz-ZONE`.
    public var bridge: String? {
        switch mode {
        case .veth: return nil
        case .bridge(let name): return name
        case .zone(let zone): return "vz-" + zone
        }
    }

    /// Refuses what no host could give, before anything is changed: names too long or with
    /// characters an interface can't have, ports on a bridge whose addresses berth does not know.
    public func validate(machine: String) throws {
        if let problem = InterfaceName.problem(InterfaceName.hostEnd(machine: machine, bridged: bridge != nil)) {
            throw LaunchError("machine name '\(machine)' can't name its network link: \(problem); pick another name with -M")
        }
        switch mode {
        case .veth: break
        case .bridge(let name):
            if let problem = InterfaceName.problem(name) { throw LaunchError("--network-bridge: \(problem)") }
            if !ports.isEmpty {
                throw LaunchError("--port needs --network-veth or --network-zone: on --network-bridge=\(name) the bridge's own network gives the machine its address, which berth does not know")
            }
        case .zone(let zone):
            if let problem = InterfaceName.problem("vz-" + zone) {
                throw LaunchError("--network-zone=\(Printable.escaping(zone)): \(problem) (a zone's name is at most 12 bytes)")
            }
        }
        var seen = Set<String>()
        for port in ports where !seen.insert("\(port.protocolName):\(port.host)").inserted {
            throw LaunchError("--port \(port.protocolName):\(port.host) is given twice")
        }
    }
}

/// `-p/--port=[tcp|udp:]HOST[:CONTAINER]`: a host port forwarded to one of the machine's.
public struct PortForward: Equatable, Sendable, CustomStringConvertible {
    public var udp: Bool
    public var host: UInt16
    public var container: UInt16

    public init(udp: Bool = false, host: UInt16, container: UInt16) {
        self.udp = udp
        self.host = host
        self.container = container
    }

    /// Parses nspawn's syntax; the container's port defaults to the host's.
    public init(parsing text: String) throws {
        var rest = Substring(text)
        udp = false
        if rest.hasPrefix("tcp:") { rest = rest.dropFirst(4) } else if rest.hasPrefix("udp:") {
            udp = true
            rest = rest.dropFirst(4)
        }
        let parts = rest.split(separator: ":", omittingEmptySubsequences: false)
        func port(_ s: Substring) -> UInt16? {
            guard !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(s), (1...65535).contains(n) else { return nil }
            return UInt16(n)
        }
        guard (1...2).contains(parts.count), let hostPort = port(parts[0]), let containerPort = parts.count == 2 ? port(parts[1]) : hostPort else {
            throw LaunchError("--port \(Printable.escaping(text)): expected [tcp|udp:]HOST[:CONTAINER], ports 1 to 65535 (-p 8080:80)")
        }
        host = hostPort
        container = containerPort
    }

    public var protocolName: String { udp ? "udp" : "tcp" }
    public var description: String { "\(protocolName):\(host):\(container)" }

    /// Whether a process on the host holds the port (bound on any address, either family): berth's
    /// forward would take its traffic from under it, so the run is refused instead.
    func isTakenOnHost() -> Bool {
        for family in [AF_INET, AF_INET6] {
            let fd = socket(family, Int32(udp ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { continue }  // no IPv6 on this host
            defer { close(fd) }
            // A TCP port is taken by a listener, not by a connection of it in TIME_WAIT (the
            // LoopbackRelay of a machine that just ended leaves those on [::1]:HOST for a minute).
            var reuse: Int32 = udp ? 0 : 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
            var result: Int32
            if family == AF_INET {
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_port = host.bigEndian
                result = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            } else {
                var only: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &only, socklen_t(MemoryLayout<Int32>.size))
                var address = sockaddr_in6()
                address.sin6_family = sa_family_t(AF_INET6)
                address.sin6_port = host.bigEndian
                result = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
            }
            if result != 0 && errno == EADDRINUSE { return true }
        }
        return false
    }
}

/// Where the network's state lives and which addresses it hands out. The defaults are the
/// host's; tests give their own directories and table so they never meet a real machine's.
public struct NetworkSettings: Sendable {
    /// Per-machine state (`NAME`), the lock, and IPv4 forwarding's recorded value.
    public var runtimeDirectory: FilePath
    /// Where machines' `NAME.lock` files are (a machine is gone once its lock is free).
    public var machineLocks: FilePath
    /// Which machine has which address slot, kept across restarts of machine and host.
    public var allocations: FilePath
    /// IPv4 addresses are handed out in /28 slots of this prefix.
    public var pool: IPPrefix
    /// Each slot's IPv6 /64 is the slot's number below this /48 (a ULA prefix, so ::1 can be forwarded).
    public var pool6: IPPrefix
    /// The nftables table (`inet NAME`) holding every machine's NAT and port forwards.
    public var table: String

    public init(runtimeDirectory: FilePath, machineLocks: FilePath, allocations: FilePath, pool: IPPrefix, pool6: IPPrefix, table: String) {
        self.runtimeDirectory = runtimeDirectory
        self.machineLocks = machineLocks
        self.allocations = allocations
        self.pool = pool
        self.pool6 = pool6
        self.table = table
    }

    /// 10.200.0.0/16 (docker takes 172.17-31 and 192.168, podman 10.88 and 10.89) and
    /// fd42:6265:7274::/48 ("berth" in its bytes); `BERTH_NETWORK_POOL=CIDR` or the first line of
    /// /etc/berth/network-pool sets another IPv4 pool (from /16 to /24).
    public static func host() throws -> NetworkSettings {
        let configured = getenv("BERTH_NETWORK_POOL").map { String(cString: $0) }
            ?? (try? Descriptor.open("/etc/berth/network-pool", O_RDONLY).readAll(limit: 256))
            .map { String(decoding: $0, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? "" }
        var pool = IPPrefix("10.200.0.0/16")
        if let configured, !configured.isEmpty {
            guard let parsed = IPPrefix(configured.trimmingSpaces), parsed.address.isIPv4, (16...24).contains(parsed.length) else {
                throw LaunchError("network pool '\(Printable.escaping(configured))' is not an IPv4 prefix from /16 to /24 (BERTH_NETWORK_POOL or /etc/berth/network-pool)")
            }
            pool = parsed.network
        }
        guard let pool, let pool6 = IPPrefix("fd42:6265:7274::/48") else { throw LaunchError("the default network pool does not parse") }
        return NetworkSettings(runtimeDirectory: try RuntimeDirectory.path("network"), machineLocks: try MachineRecord.directory(),
                               allocations: "/var/lib/berth/network-addresses", pool: pool, pool6: pool6, table: "berth")
    }
}

extension String {
    fileprivate var trimmingSpaces: String { String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed()) }
}
