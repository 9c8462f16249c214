import BerthSystem
import BerthTestSupport
import Glibc
import SystemPackage
import Testing

/// rtnetlink against the real kernel: links, addresses and routes made in the host's namespace and
/// in namespaces the tests make, observed with `ip` (the product never runs it).
@Suite(.serialized) struct NetlinkTests {
    /// A link name no other test run uses: `bt` and the pid's digits and a letter.
    private func linkName(_ tag: String) -> String { "bt\(getpid() % 1_000_000)\(tag)" }

    @Test func sipHashMatchesTheReferenceVectors() {
        let key = (0..<16).map { UInt8($0) }
        #expect(SipHash24.hash([], key: key) == 0x726f_db47_dd0e_0e31)
        #expect(SipHash24.hash((0..<15).map { UInt8($0) }, key: key) == 0xa129_ca61_49be_45e5)
        #expect(SipHash24.hash((0..<8).map { UInt8($0) }, key: key) == 0x93f5_f579_9a93_2462)
    }

    @Test func longNamesAreShortenedAsNspawn252Does() {
        // systemd-nspawn 252 -M averyveryverylongmachine --network-veth printed this name.
        #expect(InterfaceName.hostEnd(machine: "averyveryverylongmachine", bridged: false) == "ve-averyvervmnQ")
        #expect(InterfaceName.hostEnd(machine: "web", bridged: false) == "ve-web")
        #expect(InterfaceName.hostEnd(machine: "web", bridged: true) == "vb-web")
        #expect(InterfaceName.shortened("ve-twelve-chars") == "ve-twelve-chars")
    }

    @Test(arguments: ["", "sixteen-bytes-xx", "a/b", "a:b", "a b", "all", "..", "tab\t", "caf\u{e9}"])
    func badInterfaceNamesAreRefused(_ name: String) {
        #expect(InterfaceName.problem(name) != nil)
    }

    @Test(arguments: ["br0", "vz-zone", "ve-a.b_c-d", "fifteen-bytes-x"])
    func goodInterfaceNamesPass(_ name: String) {
        #expect(InterfaceName.problem(name) == nil)
    }

    @Test func addressesParseAndPrint() throws {
        let p = try #require(IPPrefix("10.200.3.7/30"))
        #expect(p.network.description == "10.200.3.4/30")
        #expect(p.contains(try #require(IPAddress("10.200.3.5"))))
        #expect(!p.contains(try #require(IPAddress("10.200.3.8"))))
        #expect(try #require(IPAddress("fd42::")).adding(0x1_0002).description == "fd42::1:2")
        #expect(try #require(IPPrefix("10.0.0.0/8")).overlaps(try #require(IPPrefix("10.200.0.0/16"))))
        #expect(IPPrefix("10.0.0.0/33") == nil && IPPrefix("10.0.0/8") == nil && IPPrefix("10.0.0.0/x") == nil)
    }

    @Test func vethIntoANamespaceWithAddressesAndARoute() throws {
        let namespace = try TestNetworkNamespace()
        defer { namespace.end() }
        let host = try RouteNetlink()
        let name = linkName("v")
        defer { _ = try? host.deleteLink(name) }
        let netns = try Descriptor.open(FilePath("/proc/\(namespace.pid)/ns/net"), O_RDONLY)
        try host.createVeth(name: name, peer: "host0", peerNamespace: netns)

        let hostLink = try #require(try host.link(named: name))
        #expect(hostLink.kind == "veth")
        #expect(try host.link(named: "host0") == nil)  // the peer went straight into the namespace
        let inside = try RouteNetlink(namespaceOf: namespace.pid)
        let peer = try #require(try inside.link(named: "host0"))
        #expect(peer.kind == "veth")

        try host.addAddress(try #require(IPPrefix("10.251.77.1/30")), index: hostLink.index)
        try host.setUp(name)
        try inside.setUp("lo")
        try inside.addAddress(try #require(IPPrefix("10.251.77.2/30")), index: peer.index)
        try inside.addAddress(try #require(IPPrefix("fd42:6274:7374::2/64")), index: peer.index, noDAD: true)
        try inside.setUp("host0")
        try inside.addDefaultRoute(via: try #require(IPAddress("10.251.77.1")), index: peer.index)

        #expect(try host.addresses().contains { $0.index == hostLink.index && $0.prefix.description == "10.251.77.1/30" })
        let insideAddresses = try inside.addresses().filter { $0.index == peer.index }.map(\.prefix.description)
        #expect(insideAddresses.contains("10.251.77.2/30") && insideAddresses.contains("fd42:6274:7374::2/64"), "\(insideAddresses)")
        let defaultRoute = try inside.routes().first { $0.destination == nil && $0.gateway?.isIPv4 == true && $0.table == 254 }
        #expect(defaultRoute?.gateway?.description == "10.251.77.1" && defaultRoute?.outputIndex == peer.index)
        #expect(try host.routes().contains { $0.destination?.description == "10.251.77.0/30" && $0.outputIndex == hostLink.index })

        // What ip sees inside, and a ping across the pair (to the test's own namespace only).
        let seen = try namespace.run("ip -br addr show dev host0; ip route show default")
        #expect(seen.stdout.contains("10.251.77.2/30") && seen.stdout.contains("default via 10.251.77.1 dev host0"), "\(seen)")
        let ping = try BerthTestSupport.run("/usr/bin/busybox", ["ping", "-c", "1", "-W", "5", "10.251.77.2"])
        #expect(ping.status == 0, "\(ping)")

        #expect(try host.deleteLink(name))
        #expect(try host.link(named: name) == nil)
        #expect(try inside.link(named: "host0") == nil)  // a veth's peer goes with it
        #expect(try !host.routes().contains { $0.destination?.description == "10.251.77.0/30" })
        #expect(try !host.deleteLink(name))
    }

    @Test func bridgeWithAPortAndClearErrors() throws {
        let host = try RouteNetlink()
        let bridge = linkName("b"), port = linkName("p")
        defer {
            _ = try? host.deleteLink(port)
            _ = try? host.deleteLink(bridge)
        }
        try host.createBridge(name: bridge)
        let made = try #require(try host.link(named: bridge))
        #expect(made.kind == "bridge")
        try host.createVeth(name: port, peer: port + "x", peerNamespace: nil)
        try host.setMaster(port, master: made.index)
        try host.setUp(bridge)
        #expect(try host.link(named: port)?.master == made.index)
        #expect(try host.link(named: bridge)?.isUp == true)
        let ip = try BerthTestSupport.run("/sbin/ip", ["-o", "link", "show", "master", bridge])
        #expect(ip.stdout.contains(port), "\(ip)")

        // A second bridge of the same name is refused with the kernel's errno and what was tried.
        let error = #expect(throws: SystemError.self) { try host.createBridge(name: bridge) }
        #expect(error?.errno == .fileExists)
        #expect(error?.description.contains("create bridge \(bridge)") == true)
        let missing = #expect(throws: SystemError.self) { try host.setUp(linkName("n")) }
        #expect(missing?.errno.rawValue == ENODEV)

        #expect(try host.deleteLink(port))
        #expect(try host.link(named: port + "x") == nil)
        #expect(try host.deleteLink(bridge))
        #expect(try host.link(named: bridge) == nil)
    }
}
