import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// Berth's nftables table (`inet berth`): NAT from machines to the host's uplinks and the port
/// forwards, written whole from every machine's state by `nft -f -` in one transaction (a
/// `table` then `delete table` then the new table), so it always says exactly what the running
/// machines need and goes when the last of them ends. Writing nf_tables netlink batches by hand
/// is left for later: nft is one exec per machine start and end.
///
/// Port forwards answer on the host's addresses (prerouting, for other hosts) and on its own,
/// 127.0.0.1 included (output, for the host's processes); ::1 is left to the supervisor's
/// LoopbackRelay. A packet from 127.0.0.1
/// rerouted out of a veth is a martian unless the link has `route_localnet` (set by
/// MachineNetwork on berth's own links only), and its source is masqueraded to the host's end so
/// the machine can answer it: the trap systemd-nspawn's `--port` falls in (systemd issue 6106).
struct NetworkFirewall {
    let settings: NetworkSettings

    /// Where IPv4 forwarding's value before berth switched it on is kept while machines need it.
    var savedForwarding: FilePath { settings.runtimeDirectory.appending(".ip_forward-before") }
    static let forwarding: FilePath = "/proc/sys/net/ipv4/ip_forward"

    /// Makes the table say what `states` need; returns a notice when IPv4 forwarding was switched on.
    func apply(_ states: [MachineNetworkState]) throws -> String? { try start(states).finish() }

    /// An nft transaction under way. The kernel takes about 17 ms to commit one that makes or
    /// removes the table (its hooks' grace period), so the links are made or deleted meanwhile.
    final class Pending {
        let firewall: NetworkFirewall
        let routed: Bool
        private var running: (pid: pid_t, errors: Descriptor)?

        init(firewall: NetworkFirewall, routed: Bool, running: (pid: pid_t, errors: Descriptor)) {
            self.firewall = firewall
            self.routed = routed
            self.running = running
        }

        /// Waits for nft; then forwarding is switched on (the notice) or put back.
        func finish() throws -> String? {
            guard let (pid, errors) = running else { return nil }
            running = nil
            try firewall.wait(pid, errors: errors)
            if routed { return try firewall.switchForwardingOn() }
            firewall.restoreForwarding()
            return nil
        }

        deinit { _ = try? finish() }
    }

    /// Starts the transaction that makes the table say what `states` need.
    func start(_ states: [MachineNetworkState]) throws -> Pending {
        let routed = states.filter { $0.machine4 != nil }
        let ruleset = routed.isEmpty ? "table inet \(settings.table) {}\ndelete table inet \(settings.table)\n" : self.ruleset(routed)
        return Pending(firewall: self, routed: !routed.isEmpty, running: try spawn(ruleset))
    }

    /// The table. Its `loopback` chain keeps `route_localnet` (set on berth's links for the
    /// forwards from 127.0.0.1) from opening the host's loopback to the machines: a packet for
    /// 127.0.0.0/8 that arrives on any other link is dropped unless it belongs to a connection
    /// berth's DNAT made (the answers to those forwards), as kube-proxy does since CVE-2020-8558.
    func ruleset(_ states: [MachineNetworkState]) -> String {
        var ports: [String] = [], postrouting: [String] = []
        for state in states.sorted(by: { $0.machine < $1.machine }) {
            guard let machine4 = state.machine4 else { continue }
            let link = quoted(state.outerLink)
            // By destination, not by link: with br_netfilter loaded, traffic bridged between two
            // machines of a zone passes this hook too, its output link the other machine's port.
            postrouting.append("ip saddr \(machine4.network) ip daddr != \(machine4.network) masquerade")
            for port in state.ports {
                ports.append("meta nfproto ipv4 \(port.protocolName) dport \(port.host) dnat ip to \(machine4.address):\(port.container)")
                if let machine6 = state.machine6 {
                    // Not ::1: its answers could not come back (LoopbackRelay says why), and the
                    // supervisor's relay listens there instead.
                    ports.append("meta nfproto ipv6 ip6 daddr != ::1 \(port.protocolName) dport \(port.host) dnat ip6 to [\(machine6.address)]:\(port.container)")
                }
            }
            if !state.ports.isEmpty {
                postrouting.append("oifname \(link) ip saddr 127.0.0.0/8 masquerade")
            }
        }
        func block(_ lines: [String]) -> String { lines.map { "    \($0)\n" }.joined() }
        return """
            table inet \(settings.table) {}
            delete table inet \(settings.table)
            table inet \(settings.table) {
              chain ports {
            \(block(ports))  }
              chain prerouting {
                type nat hook prerouting priority dstnat; policy accept;
                fib daddr type local jump ports
              }
              chain output {
                type nat hook output priority -100; policy accept;
                fib daddr type local jump ports
              }
              chain postrouting {
                type nat hook postrouting priority srcnat; policy accept;
            \(block(postrouting))  }
              chain loopback {
                type filter hook input priority filter; policy accept;
                iifname != "lo" ip daddr 127.0.0.0/8 ct status & dnat == 0 drop
              }
            }

            """
    }

    private func quoted(_ name: String) -> String { "\"\(name)\"" }

    // MARK: IPv4 forwarding

    /// Switches forwarding on when it is off, keeping what it was; the notice says so once.
    fileprivate func switchForwardingOn() throws -> String? {
        let now = Self.read(Self.forwarding)
        guard now != "1" else { return nil }
        let saved = try Descriptor.open(savedForwarding, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        try saved.writeAll((now ?? "0") + "\n")
        try Descriptor.open(Self.forwarding, O_WRONLY).writeAll("1\n")
        return "switched IPv4 forwarding on for the machines' NAT (it was \(now ?? "0"); it goes back when the last such machine ends)"
    }

    /// Puts back the value berth recorded, if berth switched forwarding on.
    fileprivate func restoreForwarding() {
        guard let before = Self.read(savedForwarding) else { return }
        try? Descriptor.open(Self.forwarding, O_WRONLY).writeAll(before + "\n")
        _ = savedForwarding.withPlatformString { unlink($0) }
    }

    static func read(_ path: FilePath) -> String? {
        (try? Descriptor.open(path, O_RDONLY).readAll(limit: 64)).map { String(decoding: $0, as: UTF8.self).filter { !$0.isWhitespace } }
    }

    // MARK: nft

    static func nftExecutable() throws -> Descriptor {
        for path in ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"] {
            if let found = try? Descriptor.open(FilePath(path), CBERTH_O_PATH) { return found }
        }
        throw LaunchError("networks need nft for their NAT and port forwards: install nftables (apt-get install nftables)")
    }

    /// Starts `nft -f -` with `ruleset` on its standard input; `wait` reads its complaint.
    private func spawn(_ ruleset: String) throws -> (pid: pid_t, errors: Descriptor) {
        let executable = try Self.nftExecutable()
        func ends() throws -> (Descriptor?, Descriptor?) {
            let pipe = try Pipe()
            return (pipe.reader, pipe.writer)
        }
        // Optionals, so the parent's references to the child's ends (and, after writing, to the
        // input's writer) can be dropped: nft sees the end of its input, berth the end of nft's errors.
        var (childInput, writer) = try ends()
        var (errorReader, errorWriter) = try ends()
        let null = try Descriptor.open("/dev/null", O_RDWR)
        let streams: [Int32] = [childInput?.rawValue ?? -1, null.rawValue, errorWriter?.rawValue ?? -1]
        let argv: [UnsafeMutablePointer<CChar>?] = (["nft", "-f", "-"] as [String]).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let envp: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), nil]
        defer { envp.forEach { free($0) } }
        let pid = streams.withUnsafeBufferPointer { cberth_spawn_with_streams(executable.rawValue, argv, envp, $0.baseAddress, -1, 0) }
        guard pid > 0 else { throw LaunchError("cannot run nft: \(SystemError.last("clone"))") }
        // Only the child keeps its ends: the end of file on its errors must come when it exits.
        childInput = nil
        errorWriter = nil
        try? writer?.writeAll(ruleset)
        writer = nil
        guard let errorReader else { throw LaunchError("cannot run nft: its error stream went") }
        return (pid, errorReader)
    }

    /// Waits for the nft started as `pid`; what it wrote on `errors` is the error when it fails.
    fileprivate func wait(_ pid: pid_t, errors: Descriptor) throws {
        let complaint = (try? errors.readAll(limit: 1 << 16)) ?? []
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let code = ExitStatus(waitStatus: status).code
        guard code == 0 else {
            let text = String(decoding: complaint, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? "exit status \(code)"
            throw LaunchError("nft refused berth's table \(settings.table): \(text)")
        }
    }
}
