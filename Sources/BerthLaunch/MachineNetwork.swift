import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// What a machine's network setup made, for the launch to finish the inside with.
public struct MachineNetworkSetup: Equatable, Sendable {
    /// The host's end: `ve-NAME`, or `vb-NAME` on a bridge or zone.
    public var hostLink: String
    /// The machine's addresses on `host0` (none on a user's bridge: its network gives them).
    public var machineAddresses: [IPPrefix]
    /// The machine's /etc/resolv.conf: the host's upstream name servers.
    public var resolvConf: String
    /// A networkd config for `host0` with the same static addresses, for a guest that runs
    /// networkd (bind it at /run/systemd/network/10-berth-host0.network: it sorts before
    /// systemd's 80-container-host0.network, whose DHCP no one answers here).
    public var networkdConfig: String?
    /// One line for the user (IPv4 forwarding switched on), or nil.
    public var notice: String?
}

/// A machine's network, made by berth itself: the veth over rtnetlink (the peer straight into the
/// machine's namespace as `host0`), bridges and zones, addresses from the pool, the default route
/// inside, NAT and port forwards in berth's nftables table. Everything made is first written in the
/// machine's state file, and `tearDown` or the next `tidy` removes exactly that. One lock
/// (`/run/berth/network/.lock`) serializes every berth changing networks.
public enum MachineNetwork {
    /// Sets up `request` for machine `machine`, whose PID 1 `leader` already has a network
    /// namespace of its own. Bad input and taken ports are refused before anything changes;
    /// a failure later undoes what was made.
    public static func setUp(machine: String, leader: pid_t, request: NetworkRequest, settings: NetworkSettings) throws -> MachineNetworkSetup {
        try request.validate(machine: machine)
        let lock = try takeLock(settings)
        defer { withExtendedLifetime(lock) {} }
        let firewall = NetworkFirewall(settings: settings)
        tidyLocked(settings)

        let others = MachineNetworkState.all(in: settings).map(\.state).filter { $0.machine != machine }
        for port in request.ports {
            if let holder = others.first(where: { $0.ports.contains { $0.udp == port.udp && $0.host == port.host } }) {
                throw LaunchError("port \(port.protocolName) \(port.host) is forwarded to machine '\(holder.machine)' already; pick another host port")
            }
            if port.isTakenOnHost() { throw LaunchError("port \(port.protocolName) \(port.host) is in use on the host; pick another host port") }
        }
        let host = try RouteNetlink()
        let hostLink = InterfaceName.hostEnd(machine: machine, bridged: request.bridge != nil)
        if try host.link(named: hostLink) != nil {
            throw LaunchError("network link \(hostLink) exists already on the host; remove it (or the machine using it) first")
        }
        if case .bridge(let name) = request.mode, try host.link(named: name)?.kind != "bridge" {
            throw LaunchError("no bridge \(name) on the host; make it first, or use --network-zone for one berth makes")
        }

        var state = MachineNetworkState(machine: machine, mode: request.mode, hostLink: hostLink, ports: request.ports)
        let pool = NetworkAddressPool(settings: settings)
        let routes = try host.routes().filter { ($0.destination?.length ?? 0) > 0 }
        let routed = routes.compactMap(\.destination)
        switch request.mode {
        case .veth:
            let slot = try pool.slot(for: "veth \(machine)", avoiding: routed)
            (state.host4, state.machine4) = (pool.ipv4(slot: slot, host: 1), pool.ipv4(slot: slot, host: 2))
            (state.host6, state.machine6) = (pool.ipv6(slot: slot, host: 1), pool.ipv6(slot: slot, host: 2))
        case .zone(let zone):
            // A zone that is up keeps its subnet: the routes on its bridge are its own, not another
            // network's. All of them: besides the subnet's route, the local table holds the
            // bridge's address and the subnet's broadcast address as /32s, and when only the
            // subnet's route was let through those two moved every later machine of the zone to
            // a slot of its own, where it could reach neither the bridge nor the zone's others.
            let bridge = try host.link(named: "vz-" + zone)?.index
            let slot = try pool.slot(for: "zone \(zone)", avoiding: routes.filter { $0.outputIndex != bridge }.compactMap(\.destination))
            let n = try pool.member(machine, ofZone: zone)
            (state.host4, state.machine4) = (pool.ipv4(slot: slot, host: 1), pool.ipv4(slot: slot, host: n))
            (state.host6, state.machine6) = (pool.ipv6(slot: slot, host: 1), pool.ipv6(slot: slot, host: n))
        case .bridge: break
        }
        try state.write(in: settings)
        do {
            let notice = try make(state, leader: leader, host: host, firewall: firewall)
            return MachineNetworkSetup(hostLink: hostLink, machineAddresses: [state.machine4, state.machine6].compactMap { $0 },
                                       resolvConf: GuestNetworkFiles.resolvConf(), networkdConfig: GuestNetworkFiles.networkd(state),
                                       notice: notice)
        } catch {
            // The rules come last and in one transaction (NetworkFirewall.add leaves none when it
            // fails): nothing of the firewall is this machine's to take out, and a table left as
            // it was stays so.
            undo(state, settings: settings, firewall: false)
            throw error
        }
    }

    private static func make(_ state: MachineNetworkState, leader: pid_t, host: RouteNetlink, firewall: NetworkFirewall) throws -> String? {
        if let zone = state.zone, try host.link(named: "vz-" + zone) == nil {
            try host.createBridge(name: "vz-" + zone)
            let bridge = try host.link(named: "vz-" + zone)?.index ?? 0
            for address in [state.host4, state.host6].compactMap({ $0 }) { try host.addAddress(address, index: bridge, noDAD: true) }
            try host.setUp("vz-" + zone)
        }
        let namespace = try Descriptor.open(FilePath("/proc/\(leader)/ns/net"), O_RDONLY)
        try host.createVeth(name: state.hostLink, address: InterfaceName.macAddress(machine: state.machine, containerSide: false),
                            peer: "host0", peerAddress: InterfaceName.macAddress(machine: state.machine, containerSide: true),
                            peerNamespace: namespace)
        guard let link = try host.link(named: state.hostLink) else { throw LaunchError("the new link \(state.hostLink) went away") }
        if let bridge = state.mode == .veth ? nil : state.outerLink {
            try host.setMaster(state.hostLink, master: try host.link(named: bridge)?.index ?? 0)
        } else {
            for address in [state.host4, state.host6].compactMap({ $0 }) { try host.addAddress(address, index: link.index, noDAD: true) }
        }
        try host.setUp(state.hostLink)

        let inside = try RouteNetlink(inNamespace: namespace)
        try inside.setUp("lo")
        guard let host0 = try inside.link(named: "host0") else { throw LaunchError("host0 did not arrive in the machine") }
        for address in [state.machine4, state.machine6].compactMap({ $0 }) { try inside.addAddress(address, index: host0.index, noDAD: true) }
        try inside.setUp("host0")
        for gateway in [state.host4, state.host6].compactMap({ $0?.address }) { try inside.addDefaultRoute(via: gateway, index: host0.index) }

        if !state.ports.isEmpty {
            // 127.0.0.1's packets rerouted to the machine are martians without it; only on berth's own link.
            try Descriptor.open(FilePath("/proc/sys/net/ipv4/conf/\(state.outerLink)/route_localnet"), O_WRONLY).writeAll("1\n")
        }
        // The rules last: they name the link, and a failure before leaves none to take out.
        return try firewall.add(state)
    }

    /// Removes what `machine`'s state says berth made for it (the supervisor, as its machine ends).
    public static func tearDown(machine: String, settings: NetworkSettings) throws {
        let lock = try takeLock(settings)
        withExtendedLifetime(lock) { tearDownLocked(machine: machine, settings: settings) }
    }

    /// berth-stage's hidden subcommand that tears a network down for a supervisor that has ended.
    public static let tearDownSubcommand = "__network-down"

    /// The supervisor's last step: `tearDown` in a process of its own, which holds the network
    /// lock until it is done, so the supervisor ends (and `berth run` returns) at once. Deleting
    /// the link and the rules waits out two RCU grace periods of the kernel's, about 30 ms, for
    /// which a user's prompt need not wait; whatever could see the network waits for the lock:
    /// a new machine's setup, `tidy` (every berth command), `poweroff` and `terminate`, which
    /// return once it is gone. (nspawn leaves its veth to the kernel, which deletes it with the
    /// machine's namespace some time after.) Without a process, it is done here.
    public static func tearDownInBackground(machine: String, settings: NetworkSettings) throws {
        let lock = try takeLock(settings)
        guard let executable = try? Descriptor.open(FilePath(Supervisor.stageExecutable), CBERTH_O_PATH),
              let null = try? Descriptor.open("/dev/null", O_RDWR) else {
            return withExtendedLifetime(lock) { tearDownLocked(machine: machine, settings: settings) }
        }
        let argv = (["berth-stage", tearDownSubcommand, "machine=\(Hex.encode(Array(machine.utf8)))"] as [String]).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let envp: [UnsafeMutablePointer<CChar>?] = [nil]
        let streams = [null.rawValue, null.rawValue, null.rawValue]
        let spawned = streams.withUnsafeBufferPointer { cberth_spawn_detached(executable.rawValue, argv, envp, $0.baseAddress, lock.rawValue) }
        if spawned == 0 { lock.handOverLock() } else { withExtendedLifetime(lock) { tearDownLocked(machine: machine, settings: settings) } }
    }

    /// `berth-stage __network-down machine=HEX`, the network lock on descriptor 3.
    public static func tearDownMain(arguments: some Sequence<String>) -> Never {
        let lock = Descriptor(owning: 3)
        let field = arguments.first { $0.hasPrefix("machine=") }?.dropFirst("machine=".count)
        if let name = field.flatMap({ Hex.decode(String($0)) }).map({ String(decoding: $0, as: UTF8.self) }),
           let settings = try? NetworkSettings.host() {
            withExtendedLifetime(lock) { tearDownLocked(machine: name, settings: settings) }
        }
        _exit(0)
    }

    private static func tearDownLocked(machine: String, settings: NetworkSettings) {
        guard let state = MachineNetworkState.read(MachineNetworkState.path(machine, in: settings)) else { return }
        undo(state, settings: settings)
    }

    /// `tidy` of the host's networks, for every berth command: no more than a directory's
    /// listing while no machine has a network of berth's (the settings are read only when a
    /// machine's state is there to look at).
    public static func tidyHost() {
        guard let directory = opendir(RuntimeDirectory.root.string + "/network") else { return }
        var states = false
        while !states, let entry = readdir(directory) {
            states = withUnsafeBytes(of: entry.pointee.d_name) { $0.first.map { $0 != UInt8(ascii: ".") } ?? false }
        }
        closedir(directory)
        if states, let settings = try? NetworkSettings.host() { tidy(settings: settings) }
    }

    /// Tears down the network of every machine that is gone (its lock is free): what a killed
    /// supervisor left behind. Any berth command may call it.
    public static func tidy(settings: NetworkSettings) {
        // Most commands find nothing to tidy: they look before they wait for the lock that a
        // network's setup holds (and tidyLocked looks again, under it).
        guard MachineNetworkState.all(in: settings).contains(where: { isGone($0.state.machine, settings) }),
              let lock = try? takeLock(settings) else { return }
        withExtendedLifetime(lock) { tidyLocked(settings) }
    }

    /// The addresses of machine `name`, whose leader is `leader`, on a network berth made for
    /// it; none for the host's network or loopback alone.
    public static func addresses(ofMachine name: String, leader: pid_t) -> [IPPrefix] {
        guard let settings = try? NetworkSettings.host(),
              (try? FileStatus.of(MachineNetworkState.path(name, in: settings))) != nil else { return [] }
        return addresses(leader: leader)
    }

    /// The addresses inside a running machine (link-local ones included), for ps and status.
    public static func addresses(leader: pid_t) -> [IPPrefix] {
        guard let inside = try? RouteNetlink(namespaceOf: leader), let links = try? inside.links(),
              let addresses = try? inside.addresses() else { return [] }
        let loopback = Set(links.filter { $0.name == "lo" }.map(\.index))
        return addresses.filter { !loopback.contains($0.index) }.map(\.prefix)
    }

    // MARK: Undoing

    private static func tidyLocked(_ settings: NetworkSettings) {
        for (_, state) in MachineNetworkState.all(in: settings) where isGone(state.machine, settings) {
            undo(state, settings: settings)
        }
    }

    /// Best effort, each step on its own: what is already gone is skipped.
    private static func undo(_ state: MachineNetworkState, settings: NetworkSettings, firewall: Bool = true) {
        let remaining = MachineNetworkState.all(in: settings).map(\.state).filter { $0.machine != state.machine }
        // The rules first, the link while their deletion's grace period runs out.
        let rules = firewall ? try? NetworkFirewall(settings: settings).remove(machine: state.machine, remaining: remaining) : nil
        let host = try? RouteNetlink()
        _ = try? host?.deleteLink(state.hostLink)
        if let zone = state.zone, !remaining.contains(where: { $0.zone == zone }), let host,
           let bridge = try? host.link(named: "vz-" + zone), (try? host.links().contains { $0.master == bridge.index }) == false {
            _ = try? host.deleteLink("vz-" + zone)
        }
        withExtendedLifetime(rules) {}
        // The state goes once what it names has gone, so a crash between leaves it to be tidied.
        let path = MachineNetworkState.path(state.machine, in: settings)
        _ = path.withPlatformString { unlink($0) }
    }

    private static func isGone(_ machine: String, _ settings: NetworkSettings) -> Bool {
        let path = settings.machineLocks.appending(MachineRecord.entry(machine) + ".lock")
        guard let lock = try? Descriptor.open(path, O_RDWR) else { return true }
        return (try? lock.lock(.exclusive, wait: false)) ?? false
    }

    private static func takeLock(_ settings: NetworkSettings) throws -> Descriptor {
        let lock = try Descriptor.open(settings.runtimeDirectory.appending(".lock"), O_RDWR | O_CREAT, mode: 0o600)
        _ = try lock.lock(.exclusive, wait: true)
        return lock
    }
}
