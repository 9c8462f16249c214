@testable import BerthLaunch
import BerthSystem
import BerthTestSupport
import Foundation
import Glibc
import SystemPackage
import Testing

/// Machines' networks on the real kernel and nftables, in namespaces the tests make: each
/// "machine" is a namespace with a held lock, as a supervisor holds its machine's. Every test
/// uses its own state directory and nftables table, and checks that nothing stays behind.
/// Serialized: they switch the host's IPv4 forwarding on and back.
@Suite(.serialized) struct MachineNetworkTests {
    final class Lab {
        let directory: TemporaryDirectory
        let settings: NetworkSettings
        var locks: [String: Descriptor] = [:]
        let forwardingBefore: String

        init() throws {
            directory = try TemporaryDirectory("network")
            for sub in ["run", "machines"] { mkdir(directory.appending(sub).string, 0o700) }
            let tag = getpid() % 100_000
            settings = NetworkSettings(runtimeDirectory: directory.appending("run"), machineLocks: directory.appending("machines"),
                                       allocations: directory.appending("lib/addresses"), pool: IPPrefix("10.251.0.0/16")!,
                                       pool6: IPPrefix("fd42:6274:7374::/48")!, table: "berthtest\(tag)")
            // A machine of another suite's may still be taking its network down, in the
            // background under the host's network lock (MachineNetwork.tearDownInBackground),
            // and put forwarding back after this reads it: that is waited for.
            if let hostLock = try? Descriptor.open("/run/berth/network/.lock", O_RDWR) { _ = try? hostLock.lock(.exclusive, wait: true) }
            forwardingBefore = NetworkFirewall.read(NetworkFirewall.forwarding) ?? "0"
        }

        /// A running machine's lock.
        func hold(_ machine: String) throws {
            let lock = try Descriptor.open(settings.machineLocks.appending(MachineRecord.entry(machine) + ".lock"), O_RDWR | O_CREAT, mode: 0o600)
            _ = try lock.lock(.exclusive, wait: false)
            locks[machine] = lock
        }

        func release(_ machine: String) { locks[machine] = nil }

        var tableExists: Bool { (try? run("/usr/sbin/nft", ["list", "table", "inet", settings.table]))?.status == 0 }
        var stateFiles: [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: settings.runtimeDirectory.string)) ?? []).filter { !$0.hasPrefix(".") }
        }

        /// What must hold once every machine is gone.
        func expectNothingLeft(links: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
            let host = try RouteNetlink()
            for link in links { #expect(try host.link(named: link) == nil, "\(link) is left", sourceLocation: sourceLocation) }
            #expect(try !host.routes().contains { $0.destination.map { settings.pool.overlaps($0) } == true }, sourceLocation: sourceLocation)
            #expect(!tableExists, "table \(settings.table) is left", sourceLocation: sourceLocation)
            #expect(stateFiles.isEmpty, "\(stateFiles)", sourceLocation: sourceLocation)
            #expect(NetworkFirewall.read(NetworkFirewall.forwarding) == forwardingBefore, sourceLocation: sourceLocation)
        }

        /// Removes whatever a failed test left, then the table.
        func cleanUp(links: [String]) {
            locks = [:]
            MachineNetwork.tidy(settings: settings)
            for link in links { _ = try? RouteNetlink().deleteLink(link) }
            _ = try? run("/usr/sbin/nft", ["delete", "table", "inet", settings.table])
            _ = try? Descriptor.open(NetworkFirewall.forwarding, O_WRONLY).writeAll(forwardingBefore + "\n")
        }
    }

    /// A free TCP port on the host for the test's forwards.
    private func freePort(_ offset: Int) -> UInt16 {
        var port = UInt16(20_000 + (Int(getpid()) * 7 + offset * 101) % 20_000)
        while PortForward(host: port, container: 80).isTakenOnHost() { port += 1 }
        return port
    }

    /// A web server in `namespace` on port 80 answering `body`.
    private func serve(_ body: String, in namespace: TestNetworkNamespace, _ lab: Lab, port: Int = 80) throws -> Process {
        let root = lab.directory.appending("www-\(namespace.pid)")
        mkdir(root.string, 0o755)
        try body.write(toFile: root.appending("index.html").string, atomically: true, encoding: .utf8)
        let server = try namespace.start("/usr/bin/busybox httpd -f -p \(port) -h \(root.string)")
        waitUntil(timeout: 10) { (try? namespace.run("/usr/bin/busybox netstat -ltn | grep -q ':\(port) '"))?.status == 0 }
        return server
    }

    private func fetch(_ url: String) throws -> CommandResult {
        try run("/usr/bin/curl", ["-sS", "--max-time", "10", url])
    }

    /// curl's answer from `url`, `relay` served until curl is done, as a supervisor serves it.
    private func fetch(_ url: String, through relay: LoopbackRelay) throws -> String {
        let curl = Process()
        curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        curl.arguments = ["-sS", "-g", "--max-time", "10", url]
        let output = Foundation.Pipe()
        curl.standardOutput = output
        try curl.run()
        while curl.isRunning {
            var fds = relay.pollDescriptors
            _ = poll(&fds, nfds_t(fds.count), 50)
            relay.handle(ready: fds)
        }
        curl.waitUntilExit()
        // Both ends of the finished connection are seen closed on the next rounds.
        for _ in 0..<20 where relay.connectionCount > 0 {
            var fds = relay.pollDescriptors
            _ = poll(&fds, nfds_t(fds.count), 50)
            relay.handle(ready: fds)
        }
        return String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    /// The table berth writes over netlink is the one nft compiles from its text: the same
    /// expressions, rule for rule (`nft --debug=netlink` lists both), for a machine with ports
    /// on its own veth and one in a zone. A machine's end takes its rules and no other's; the
    /// last one's takes the table.
    @Test func theTableIsWhatNftCompilesFromItsTextAndGoesRuleByRule() throws {
        let lab = try Lab()
        let reference = lab.settings.table + "ref"
        defer {
            _ = try? run("/usr/sbin/nft", ["delete", "table", "inet", lab.settings.table])
            _ = try? run("/usr/sbin/nft", ["delete", "table", "inet", reference])
            _ = try? Descriptor.open(NetworkFirewall.forwarding, O_WRONLY).writeAll(lab.forwardingBefore + "\n")
        }
        let web = MachineNetworkState(machine: "web", mode: .veth, hostLink: "ve-web", host4: IPPrefix("10.251.3.17/28"),
                                      machine4: IPPrefix("10.251.3.18/28"), host6: IPPrefix("fd42:6274:7374:3::1/64"),
                                      machine6: IPPrefix("fd42:6274:7374:3::2/64"),
                                      ports: [PortForward(host: 8080, container: 80), PortForward(udp: true, host: 5353, container: 53)])
        let zoned = MachineNetworkState(machine: "db", mode: .zone("lab"), hostLink: "vb-db", host4: IPPrefix("10.251.0.1/28"),
                                        machine4: IPPrefix("10.251.0.3/28"), host6: nil, machine6: nil,
                                        ports: [PortForward(host: 5432, container: 5432)])
        let firewall = NetworkFirewall(settings: lab.settings)
        _ = try firewall.add(web)
        _ = try firewall.add(zoned)
        let text = """
            table inet \(reference) {
              chain ports {
                meta nfproto ipv4 tcp dport 8080 dnat ip to 10.251.3.18:80 comment "berth machine web"
                meta nfproto ipv6 ip6 daddr != ::1 tcp dport 8080 dnat ip6 to [fd42:6274:7374:3::2]:80 comment "berth machine web"
                meta nfproto ipv4 udp dport 5353 dnat ip to 10.251.3.18:53 comment "berth machine web"
                meta nfproto ipv6 ip6 daddr != ::1 udp dport 5353 dnat ip6 to [fd42:6274:7374:3::2]:53 comment "berth machine web"
                meta nfproto ipv4 tcp dport 5432 dnat ip to 10.251.0.3:5432 comment "berth machine db"
              }
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
                ip saddr 10.251.3.16/28 ip daddr != 10.251.3.16/28 masquerade comment "berth machine web"
                oifname "ve-web" ip saddr 127.0.0.0/8 masquerade comment "berth machine web"
                ip saddr 10.251.0.0/28 ip daddr != 10.251.0.0/28 masquerade comment "berth machine db"
                oifname "vz-lab" ip saddr 127.0.0.0/8 masquerade comment "berth machine db"
              }
              chain loopback {
                type filter hook input priority filter; policy accept;
                iifname != "lo" ip daddr 127.0.0.0/8 ct status & dnat == 0 drop
              }
            }

            """
        let input = try TemporaryDirectory("nft-reference")
        try writeFile(input.appending("table.nft"), text)
        let loaded = try run("/usr/sbin/nft", ["-f", input.appending("table.nft").string])
        #expect(loaded.status == 0, "\(loaded)")
        /// The table's rules as the kernel holds them, chain by chain, without names or handles.
        func bytecode(_ table: String) throws -> [String] {
            let listed = try run("/usr/sbin/nft", ["--debug=netlink", "list", "table", "inet", table])
            #expect(listed.status == 0, "\(listed)")
            var rules: [String] = [], current = ""
            for line in listed.stdout.split(separator: "\n").map(String.init) {
                if line.hasPrefix("inet \(table) ") {
                    if !current.isEmpty { rules.append(current) }
                    current = String(line.dropFirst("inet \(table) ".count).prefix { $0 != " " }) + "\n"
                } else if line.hasPrefix("  [") || line.hasPrefix("  userdata") {
                    current += line + "\n"
                }
            }
            if !current.isEmpty { rules.append(current) }
            return rules.sorted()
        }
        let ours = try bytecode(lab.settings.table), nfts = try bytecode(reference)
        #expect(ours.count == 12 && ours == nfts, "berth:\n\(ours.joined())\nnft:\n\(nfts.joined())")
        #expect(try run("/usr/sbin/nft", ["list", "table", "inet", lab.settings.table]).stdout
                    .replacingOccurrences(of: lab.settings.table, with: reference)
                == run("/usr/sbin/nft", ["list", "table", "inet", reference]).stdout)

        // web's end: db's rules stay, web's go.
        try firewall.remove(machine: "web", remaining: [zoned])
        let left = try run("/usr/sbin/nft", ["list", "table", "inet", lab.settings.table]).stdout
        #expect(!left.contains("machine web") && left.components(separatedBy: "machine db").count == 4, "\(left)")
        #expect(left.contains("iifname != \"lo\""), "\(left)")
        try firewall.remove(machine: "db", remaining: [])
        #expect(!lab.tableExists)
        #expect(NetworkFirewall.read(NetworkFirewall.forwarding) == lab.forwardingBefore)
    }

    @Test func vethPortsOnLoopbackAndNATThroughTheHostThenNothingLeft() throws {
        let serialized = NetworkTestLock()
        defer { withExtendedLifetime(serialized) {} }
        let lab = try Lab()
        let machine = "nt\(getpid() % 100_000)"
        let hostLink = InterfaceName.hostEnd(machine: machine, bridged: false)
        let outsideLink = "bto\(getpid() % 100_000)"
        defer { lab.cleanUp(links: [hostLink, outsideLink]) }
        let namespace = try TestNetworkNamespace()
        defer { namespace.end() }
        try lab.hold(machine)
        let port = freePort(0)

        let setup = try MachineNetwork.setUp(machine: machine, leader: namespace.pid,
                                             request: NetworkRequest(mode: .veth, ports: [PortForward(host: port, container: 80)]),
                                             settings: lab.settings)
        #expect(setup.hostLink == hostLink)
        let machine4 = try #require(setup.machineAddresses.first { $0.address.isIPv4 })
        #expect(lab.settings.pool.contains(machine4.address))
        #expect(!setup.resolvConf.contains("127.0.0.53"))
        #expect(setup.networkdConfig?.contains("Address=\(machine4)") == true)
        let inside = try namespace.run("ip -br addr; ip route; ip -6 route")
        #expect(inside.stdout.contains("host0@") && inside.stdout.contains(machine4.description), "\(inside)")
        #expect(inside.stdout.contains("lo               UNKNOWN") && inside.stdout.contains("default via"), "\(inside)")

        let server = try serve("machine's page", in: namespace, lab)
        defer { endProcess(server) }
        let v4 = try fetch("http://127.0.0.1:\(port)/")
        #expect(v4.stdout == "machine's page", "\(v4)")
        // ::1 goes through the relay the supervisor runs (NAT can't: see LoopbackRelay), driven
        // here as the supervisor's loop drives it; twice, so a finished connection is let go.
        do {
            let relay = try #require(try LoopbackRelay.forMachine(machine, settings: lab.settings))
            #expect(relay.listeningPorts == [port])
            for _ in 0..<2 {
                let v6 = try fetch("http://[::1]:\(port)/", through: relay)
                #expect(v6 == "machine's page", "\(v6)")
            }
            #expect(relay.connectionCount == 0)
            #expect(PortForward(host: port, container: 80).isTakenOnHost())
        }
        // The relay gone, so is its listener.
        #expect(!PortForward(host: port, container: 80).isTakenOnHost())

        // The outside world: a namespace behind a link of the test's, with no route to the pool,
        // so only NAT on the host lets the machine's requests back in.
        let outside = try TestNetworkNamespace()
        defer { outside.end() }
        let host = try RouteNetlink()
        try host.createVeth(name: outsideLink, peer: "eth0", peerNamespace: try Descriptor.open(FilePath("/proc/\(outside.pid)/ns/net"), O_RDONLY))
        let link = try #require(try host.link(named: outsideLink))
        try host.addAddress(IPPrefix("10.252.9.1/30")!, index: link.index)
        try host.setUp(outsideLink)
        let world = try RouteNetlink(namespaceOf: outside.pid)
        try world.addAddress(IPPrefix("10.252.9.2/30")!, index: try #require(try world.link(named: "eth0")).index)
        try world.setUp("eth0")
        let worldServer = try serve("the world", in: outside, lab, port: 8000)
        defer { endProcess(worldServer) }
        let out = try namespace.run("/usr/bin/curl -sS --max-time 10 http://10.252.9.2:8000/")
        #expect(out.stdout == "the world", "\(out)")
        #expect(NetworkFirewall.read(NetworkFirewall.forwarding) == "1")

        // The same machine set up again keeps its addresses.
        try MachineNetwork.tearDown(machine: machine, settings: lab.settings)
        try lab.expectNothingLeft(links: [hostLink])
        let again = try MachineNetwork.setUp(machine: machine, leader: namespace.pid, request: NetworkRequest(mode: .veth), settings: lab.settings)
        #expect(again.machineAddresses == setup.machineAddresses)
        try MachineNetwork.tearDown(machine: machine, settings: lab.settings)
        try lab.expectNothingLeft(links: [hostLink])
    }

    /// A UDP forward answers on 127.0.0.1 (NAT) and on ::1, through the relay's session for the
    /// client: an echo server in the machine gets each datagram, and its answers come back to
    /// the client from [::1]:HOST.
    @Test func udpForwardsAnswerOnBothLoopbacks() throws {
        let serialized = NetworkTestLock()
        defer { withExtendedLifetime(serialized) {} }
        let lab = try Lab()
        let machine = "nu\(getpid() % 100_000)"
        let hostLink = InterfaceName.hostEnd(machine: machine, bridged: false)
        defer { lab.cleanUp(links: [hostLink]) }
        let namespace = try TestNetworkNamespace()
        defer { namespace.end() }
        try lab.hold(machine)
        var port = freePort(7)
        while PortForward(udp: true, host: port, container: 5353).isTakenOnHost() { port += 1 }
        _ = try MachineNetwork.setUp(machine: machine, leader: namespace.pid,
                                     request: NetworkRequest(mode: .veth, ports: [PortForward(udp: true, host: port, container: 5353)]),
                                     settings: lab.settings)
        let server = "import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\ns.bind(('::', 5353))\nwhile True:\n  d, a = s.recvfrom(2048)\n  s.sendto(b'echo ' + d, a)\n"
        let script = lab.directory.appending("echo.py")
        try writeFile(script, server)
        let echo = try namespace.start("/usr/bin/python3 \(script.string)")
        defer { endProcess(echo) }
        #expect(waitUntil(timeout: 10) { (try? namespace.run("/usr/bin/busybox netstat -lun | grep -q ':5353 '"))?.status == 0 })
        /// What a client on the host gets back for two datagrams to `address`, the relay served meanwhile.
        func exchange(_ address: String, through relay: LoopbackRelay?) throws -> String {
            let family = address.contains(":") ? "AF_INET6" : "AF_INET"
            let client = Process()
            client.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            client.arguments = ["-c", "import socket\ns = socket.socket(socket.\(family), socket.SOCK_DGRAM)\ns.settimeout(5)\n"
                                + "for word in (b'one', b'two'):\n  s.sendto(word, ('\(address)', \(port)))\n  print(s.recv(100).decode())\n"]
            let output = Foundation.Pipe()
            client.standardOutput = output
            try client.run()
            while client.isRunning {
                guard let relay else { usleep(20_000); continue }
                var fds = relay.pollDescriptors
                _ = poll(&fds, nfds_t(fds.count), 20)
                relay.handle(ready: fds)
            }
            client.waitUntilExit()
            return String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        }
        #expect(try exchange("127.0.0.1", through: nil) == "echo one\necho two\n")
        do {
            let relay = try #require(try LoopbackRelay.forMachine(machine, settings: lab.settings))
            #expect(relay.listeningPorts == [port])
            #expect(try exchange("::1", through: relay) == "echo one\necho two\n")
            #expect(relay.sessionCount == 1)
        }
        try MachineNetwork.tearDown(machine: machine, settings: lab.settings)
        lab.release(machine)
        try lab.expectNothingLeft(links: [hostLink])
    }

    @Test func aKilledSupervisorsNetworkIsTidiedByTheNextCommand() throws {
        let serialized = NetworkTestLock()
        defer { withExtendedLifetime(serialized) {} }
        let lab = try Lab()
        let machine = "nk\(getpid() % 100_000)"
        let hostLink = InterfaceName.hostEnd(machine: machine, bridged: false)
        defer { lab.cleanUp(links: [hostLink]) }
        let namespace = try TestNetworkNamespace()
        try lab.hold(machine)
        _ = try MachineNetwork.setUp(machine: machine, leader: namespace.pid,
                                     request: NetworkRequest(mode: .veth, ports: [PortForward(udp: true, host: freePort(1), container: 53)]),
                                     settings: lab.settings)
        // A running machine's network is left alone.
        MachineNetwork.tidy(settings: lab.settings)
        #expect(lab.tableExists && lab.stateFiles.count == 1)
        // Its supervisor is killed: the lock goes, and the namespace with its last process.
        lab.release(machine)
        namespace.end()
        MachineNetwork.tidy(settings: lab.settings)
        try lab.expectNothingLeft(links: [hostLink])
    }

    @Test func aZoneIsMadeForItsFirstMachineAndRemovedAfterItsLast() throws {
        let serialized = NetworkTestLock()
        defer { withExtendedLifetime(serialized) {} }
        let lab = try Lab()
        let tag = getpid() % 100_000
        let zone = "z\(tag)", bridge = "vz-z\(tag)"
        let names = ["za\(tag)", "zb\(tag)"]
        let links = names.map { InterfaceName.hostEnd(machine: $0, bridged: true) }
        defer { lab.cleanUp(links: links + [bridge]) }
        let namespaces = try names.map { _ in try TestNetworkNamespace() }
        defer { namespaces.forEach { $0.end() } }
        var addresses: [IPPrefix] = []
        for (name, namespace) in zip(names, namespaces) {
            try lab.hold(name)
            let setup = try MachineNetwork.setUp(machine: name, leader: namespace.pid, request: NetworkRequest(mode: .zone(zone)), settings: lab.settings)
            addresses += setup.machineAddresses.filter { $0.address.isIPv4 }
        }
        let host = try RouteNetlink()
        let made = try #require(try host.link(named: bridge))
        #expect(made.kind == "bridge")
        #expect(try links.allSatisfy { try host.link(named: $0)?.master == made.index })
        #expect(Set(addresses).count == 2)
        // One subnet, the bridge's: the second machine once got a slot of its own (the zone's
        // own local routes counted as another network's), and the two could not reach each other.
        #expect(Set(addresses.map(\.network)).count == 1, "\(addresses)")
        let bridgeAddresses = try host.addresses().filter { $0.index == made.index }.map(\.prefix)
        #expect(bridgeAddresses.filter { $0.address.isIPv4 }.map(\.network) == [addresses[0].network], "\(bridgeAddresses)")
        for (from, to) in [(0, 1), (1, 0)] {
            let ping = try namespaces[from].run("/usr/bin/busybox ping -c 1 -W 3 \(addresses[to].address)")
            #expect(ping.status == 0, "\(ping)")
        }
        let gateway = try namespaces[1].run("/usr/bin/busybox ping -c 1 -W 3 \(try #require(bridgeAddresses.first { $0.address.isIPv4 }).address)")
        #expect(gateway.status == 0, "\(gateway)")

        try MachineNetwork.tearDown(machine: names[0], settings: lab.settings)
        #expect(try host.link(named: bridge) != nil)
        try MachineNetwork.tearDown(machine: names[1], settings: lab.settings)
        try lab.expectNothingLeft(links: links + [bridge])
    }

    @Test func badRequestsAreRefusedAndChangeNothing() throws {
        let serialized = NetworkTestLock()
        defer { withExtendedLifetime(serialized) {} }
        let lab = try Lab()
        let machine = "nb\(getpid() % 100_000)"
        let hostLink = InterfaceName.hostEnd(machine: machine, bridged: false)
        defer { lab.cleanUp(links: [hostLink]) }
        let namespace = try TestNetworkNamespace()
        defer { namespace.end() }
        try lab.hold(machine)

        // A port a host process listens on (here on 127.0.0.1 only).
        let port = freePort(2)
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        #expect(listen(listener, 1) == 0)

        let cases: [(NetworkRequest, String)] = [
            (NetworkRequest(mode: .veth, ports: [PortForward(host: port, container: 80)]), "in use on the host"),
            (NetworkRequest(mode: .bridge("btnobridge\(getpid() % 1000)")), "no bridge"),
            (NetworkRequest(mode: .zone("thirteen-byte")), "at most 12 bytes"),
            (NetworkRequest(mode: .bridge("br0"), ports: [PortForward(host: 8080, container: 80)]), "--port needs"),
        ]
        for (request, message) in cases {
            let error = #expect(throws: LaunchError.self) {
                try MachineNetwork.setUp(machine: machine, leader: namespace.pid, request: request, settings: lab.settings)
            }
            #expect(error?.message.contains(message) == true, "\(String(describing: error))")
            try lab.expectNothingLeft(links: [hostLink])
        }
        let long = #expect(throws: LaunchError.self) { try NetworkRequest(mode: .veth).validate(machine: "a b") }
        #expect(long != nil)
    }

    @Test(arguments: [("8080", false, 8080, 8080), ("tcp:80:8000", false, 80, 8000), ("udp:53", true, 53, 53), ("65535:1", false, 65535, 1)]
          as [(String, Bool, UInt16, UInt16)])
    func portsParseAsNspawnsDo(_ text: String, _ udp: Bool, _ host: UInt16, _ container: UInt16) throws {
        #expect(try PortForward(parsing: text) == PortForward(udp: udp, host: host, container: container))
    }

    @Test(arguments: ["", "0", "65536", "sctp:80", "80:", ":80", "80:90:100", "-1", "tcp:", "8o"])
    func badPortsAreRefused(_ text: String) {
        #expect(throws: LaunchError.self) { try PortForward(parsing: text) }
    }

    @Test func resolvConfNamesTheUpstreamServersNotTheStub() throws {
        let tmp = try TemporaryDirectory("resolv")
        try "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.test\n".write(toFile: tmp.appending("stub").string, atomically: true, encoding: .utf8)
        try "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch corp.test\n".write(toFile: tmp.appending("upstream").string, atomically: true, encoding: .utf8)
        let text = GuestNetworkFiles.resolvConf(host: tmp.appending("stub"), resolved: tmp.appending("upstream"))
        #expect(text.contains("nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch corp.test\n"), "\(text)")
        #expect(!text.contains("127.0.0.53"))
        try "nameserver 198.51.100.1\n".write(toFile: tmp.appending("plain").string, atomically: true, encoding: .utf8)
        #expect(GuestNetworkFiles.resolvConf(host: tmp.appending("plain"), resolved: tmp.appending("upstream")).contains("nameserver 198.51.100.1\n"))
    }
}
