import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// Berth's nftables table (`inet berth`): NAT from machines to the host's uplinks and the port
/// forwards, written over netlink in batches (`NetfilterNetlink`), each one transaction. The first
/// machine that needs it makes the table with its chains; each machine adds its own rules, marked
/// with its name as their comment, and takes them out as it ends; the last one takes the table.
/// Nothing is ever replaced: a deletion in nf_tables costs an RCU grace period (about 17 ms here)
/// before the socket that made it may close, so a machine's start deletes nothing, and the rules
/// of machines that run stay as they are.
///
/// Port forwards answer on the host's addresses (prerouting, for other hosts) and on its own,
/// 127.0.0.1 included (output, for the host's processes); ::1 is left to the supervisor's
/// LoopbackRelay. A packet from 127.0.0.1 rerouted out of a veth is a martian unless the link has
/// `route_localnet` (set by MachineNetwork on berth's own links only), and its source is
/// masqueraded to the host's end so the machine can answer it: the trap systemd-nspawn's `--port`
/// falls in (systemd issue 6106). The `loopback` chain keeps `route_localnet` from opening the
/// host's loopback to the machines: a packet for 127.0.0.0/8 that arrives on any other link is
/// dropped unless it belongs to a connection berth's DNAT made (the answers to those forwards),
/// as kube-proxy does since CVE-2020-8558.
struct NetworkFirewall {
    let settings: NetworkSettings

    /// Where IPv4 forwarding's value before berth switched it on is kept while machines need it.
    var savedForwarding: FilePath { settings.runtimeDirectory.appending(".ip_forward-before") }
    static let forwarding: FilePath = "/proc/sys/net/ipv4/ip_forward"

    /// Adds `state`'s rules, making the table first when there is none; returns a notice when
    /// IPv4 forwarding was switched on. A machine without an address of berth's (on a user's
    /// bridge) needs no rules. When it throws, no rule of the machine's is left (and no table
    /// it made).
    func add(_ state: MachineNetworkState) throws -> String? {
        guard state.machine4 != nil else { return nil }
        let socket = try NetfilterNetlink()
        var batch = NetfilterNetlink.Batch(family: NFTables.inet, table: settings.table)
        let existed = try socket.tableExists(settings.table, family: NFTables.inet)
        if !existed { Self.addSkeleton(to: &batch) }
        for rule in Self.rules(for: state) { batch.addRule(rule) }
        do { try socket.commit(batch) } catch let error as SystemError {
            // A table of that name that lacks berth's chains was made, or changed, by someone else.
            let hint = existed && error.errno == .noSuchFileOrDirectory
                ? "; the table is not as berth makes it: if no machine of berth's runs, delete it (nft delete table inet \(settings.table))" : ""
            throw LaunchError("cannot add machine \(state.machine)'s rules to nftables table inet \(settings.table): \(error)\(hint)")
        }
        do { return try switchForwardingOn() } catch {
            var undo = NetfilterNetlink.Batch(family: NFTables.inet, table: settings.table)
            if existed { try? deleteRules(of: state.machine, into: &undo, listedBy: socket) } else { undo.deleteTable() }
            try? socket.commit(undo)
            throw error
        }
    }

    /// Adds to `batch` the deletion of every rule of machine `machine` (by its comment), as
    /// `socket` lists the table's rules.
    private func deleteRules(of machine: String, into batch: inout NetfilterNetlink.Batch, listedBy socket: NetfilterNetlink) throws {
        let comment = Self.comment(machine)
        for rule in try socket.rules(ofTable: settings.table, family: NFTables.inet) where rule.comment == comment {
            batch.deleteRule(chain: rule.chain, handle: rule.handle)
        }
    }

    /// Takes machine `machine`'s rules out; when no machine in `remaining` needs the table, the
    /// table goes instead and IPv4 forwarding is put back. Returns the socket that did it: its
    /// close waits out the deletion's RCU grace period (nf_tables frees what was deleted first),
    /// so the caller keeps it open while it deletes the link, which waits out one of its own.
    @discardableResult
    func remove(machine: String, remaining: [MachineNetworkState]) throws -> NetfilterNetlink {
        let socket = try NetfilterNetlink()
        guard try socket.tableExists(settings.table, family: NFTables.inet) else {
            restoreForwarding()
            return socket
        }
        var batch = NetfilterNetlink.Batch(family: NFTables.inet, table: settings.table)
        if remaining.contains(where: { $0.machine4 != nil }) {
            try deleteRules(of: machine, into: &batch, listedBy: socket)
            try socket.commit(batch)
        } else {
            batch.deleteTable()
            try socket.commit(batch)
            restoreForwarding()
        }
        return socket
    }

    // MARK: The rules

    /// The table, its chains, and the rules that are not any machine's.
    static func addSkeleton(to batch: inout NetfilterNetlink.Batch) {
        batch.addTable()
        batch.addChain("ports")
        batch.addChain("prerouting", hook: (.prerouting, type: "nat", priority: -100))  // dstnat
        batch.addChain("output", hook: (.output, type: "nat", priority: -100))
        batch.addChain("postrouting", hook: (.postrouting, type: "nat", priority: 100))  // srcnat
        batch.addChain("loopback", hook: (.input, type: "filter", priority: 0))
        // fib daddr type local jump ports
        let local: [NFTExpression] = [.fib(result: NFTables.fibAddressType, flags: NFTables.fibDestination, into: r1),
                                      .compare(register: r1, equal: true, data: hostOrder(NFTables.routeLocal)),
                                      .verdict(.jump("ports"))]
        batch.addRule(NFTRule(chain: "prerouting", local))
        batch.addRule(NFTRule(chain: "output", local))
        // iifname != "lo" ip daddr 127.0.0.0/8 ct status & dnat == 0 drop
        batch.addRule(NFTRule(chain: "loopback", [.meta(key: NFTables.metaInputName, into: r1),
                                                  .compare(register: r1, equal: false, data: interfaceName("lo"))]
                              + family(NFTables.ipv4) + address(offset: 16, in: IPPrefix("127.0.0.0/8"), equal: true)
                              + [.conntrack(key: NFTables.conntrackStatus, into: r1),
                                 .bitwise(register: r1, mask: hostOrder(NFTables.statusDestinationNAT), xor: [0, 0, 0, 0]),
                                 .compare(register: r1, equal: true, data: [0, 0, 0, 0]), .verdict(.drop)]))
    }

    /// One machine's rules, each with the machine's comment.
    static func rules(for state: MachineNetworkState) -> [NFTRule] {
        guard let machine4 = state.machine4 else { return [] }
        let comment = comment(state.machine)
        var rules: [NFTRule] = []
        // ip saddr NET ip daddr != NET masquerade: by destination, not by link, since with
        // br_netfilter loaded, traffic bridged between two machines of a zone passes this hook
        // too, its output link the other machine's port.
        rules.append(NFTRule(chain: "postrouting", family(NFTables.ipv4) + address(offset: 12, in: machine4.network, equal: true)
                             + address(offset: 16, in: machine4.network, equal: false) + [.masquerade], comment: comment))
        for port in state.ports {
            let transport: [NFTExpression] = [.meta(key: NFTables.metaTransport, into: r1),
                                              .compare(register: r1, equal: true, data: [port.udp ? 17 : 6]),
                                              .payload(base: NFTables.transportHeader, offset: 2, length: 2, into: r1),
                                              .compare(register: r1, equal: true, data: networkOrder(port.host))]
            // meta nfproto ipv4 PROTO dport HOST dnat ip to ADDRESS:PORT
            rules.append(NFTRule(chain: "ports", family(NFTables.ipv4) + transport + dnat(NFTables.ipv4, machine4.address, port.container),
                                 comment: comment))
            if let machine6 = state.machine6, let loopback6 = IPAddress("::1") {
                // meta nfproto ipv6 ip6 daddr != ::1 PROTO dport HOST dnat ip6 to [ADDRESS]:PORT. Not
                // ::1: its answers could not come back (LoopbackRelay says why), and the
                // supervisor's relay listens there instead.
                rules.append(NFTRule(chain: "ports", family(NFTables.ipv6)
                                     + [.payload(base: NFTables.networkHeader, offset: 24, length: 16, into: r1),
                                        .compare(register: r1, equal: false, data: loopback6.bytes)]
                                     + transport + dnat(NFTables.ipv6, machine6.address, port.container), comment: comment))
            }
        }
        if !state.ports.isEmpty {
            // oifname LINK ip saddr 127.0.0.0/8 masquerade
            rules.append(NFTRule(chain: "postrouting", [.meta(key: NFTables.metaOutputName, into: r1),
                                                        .compare(register: r1, equal: true, data: interfaceName(state.outerLink))]
                                 + family(NFTables.ipv4) + address(offset: 12, in: IPPrefix("127.0.0.0/8"), equal: true) + [.masquerade],
                                 comment: comment))
        }
        return rules
    }

    /// The comment that marks machine `machine`'s rules.
    static func comment(_ machine: String) -> String { "berth machine " + MachineRecord.entry(machine) }

    private static let r1 = NFTables.register1, r2 = NFTables.register2

    /// meta nfproto FAMILY.
    private static func family(_ family: UInt8) -> [NFTExpression] {
        [.meta(key: NFTables.metaFamily, into: r1), .compare(register: r1, equal: true, data: [family])]
    }

    /// An IPv4 header's address at `offset` in (or not in) `prefix`, as nft compiles it: whole
    /// bytes are loaded and compared as they are, a prefix that ends inside a byte is masked.
    private static func address(offset: UInt32, in prefix: IPPrefix?, equal: Bool) -> [NFTExpression] {
        guard let prefix else { return [] }
        let bytes = prefix.address.bytes
        if prefix.length % 8 == 0 {
            let count = prefix.length / 8
            return [.payload(base: NFTables.networkHeader, offset: offset, length: UInt32(count), into: r1),
                    .compare(register: r1, equal: equal, data: Array(bytes.prefix(count)))]
        }
        let mask = (0..<bytes.count).map { i -> UInt8 in
            let bits = min(8, max(0, prefix.length - i * 8))
            return UInt8(truncatingIfNeeded: 0xff << (8 - bits))
        }
        return [.payload(base: NFTables.networkHeader, offset: offset, length: UInt32(bytes.count), into: r1),
                .bitwise(register: r1, mask: mask, xor: [UInt8](repeating: 0, count: bytes.count)),
                .compare(register: r1, equal: equal, data: zip(bytes, mask).map { $0 & $1 })]
    }

    /// dnat ip (or ip6) to ADDRESS:PORT.
    private static func dnat(_ family: UInt8, _ address: IPAddress, _ port: UInt16) -> [NFTExpression] {
        [.immediate(register: r1, data: address.bytes), .immediate(register: r2, data: networkOrder(port)),
         .destinationNAT(family: family, address: r1, port: r2)]
    }

    /// An interface name as meta iifname and oifname load it: IFNAMSIZ bytes, NUL-padded.
    private static func interfaceName(_ name: String) -> [UInt8] {
        let bytes = Array(name.utf8.prefix(15))
        return bytes + [UInt8](repeating: 0, count: 16 - bytes.count)
    }

    private static func hostOrder(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }
    private static func networkOrder(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xff)] }

    // MARK: IPv4 forwarding

    /// Switches forwarding on when it is off, keeping what it was; the notice says so once.
    private func switchForwardingOn() throws -> String? {
        let now = Self.read(Self.forwarding)
        guard now != "1" else { return nil }
        let saved = try Descriptor.open(savedForwarding, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        try saved.writeAll((now ?? "0") + "\n")
        try Descriptor.open(Self.forwarding, O_WRONLY).writeAll("1\n")
        return "switched IPv4 forwarding on for the machines' NAT (it was \(now ?? "0"); it goes back when the last such machine ends)"
    }

    /// Puts back the value berth recorded, if berth switched forwarding on.
    private func restoreForwarding() {
        guard let before = Self.read(savedForwarding) else { return }
        try? Descriptor.open(Self.forwarding, O_WRONLY).writeAll(before + "\n")
        _ = savedForwarding.withPlatformString { unlink($0) }
    }

    static func read(_ path: FilePath) -> String? {
        (try? Descriptor.open(path, O_RDONLY).readAll(limit: 64)).map { String(decoding: $0, as: UTF8.self).filter { !$0.isWhitespace } }
    }
}
