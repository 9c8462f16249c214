import BerthSystem
import BerthTestSupport
import Foundation
import Glibc
import SystemPackage
import Testing

/// Machines on networks berth makes (issue 15): `-n/--network-veth` with addresses, routes, NAT
/// and `-p` forwards, against busybox (httpd, wget) and the Debian image booted. Traffic goes
/// only to 127.0.0.1 and to a namespace the test makes to stand for the outside world. After
/// each way a machine ends, nothing of its network stays: link, state, rules.
/// Serialized: the machines share berth's nftables table and switch IPv4 forwarding.
@Suite(.serialized) struct NetworkTests {
    static func unique(_ base: String) -> String { "\(base)\(Hex.random(4))" }

    /// A store with busybox images `names`, each serving the page "page of NAME" from /www.
    func store(_ label: String, busybox names: [String]) throws -> TemporaryDirectory {
        let tmp = try TemporaryDirectory(label)
        for name in names {
            #expect(try berth(["import", "-q", Fixtures.busybox, name], store: tmp).status == 0)
            #expect(try inImage(name, "mkdir -p /www && echo \"page of \(name)\" > /www/index.html", store: tmp).status == 0)
        }
        return tmp
    }

    /// A host port no one uses, for a forward.
    func freePort(_ offset: Int) -> Int {
        var port = 30_000 + (Int(getpid()) * 13 + offset * 97) % 20_000
        while (try? run("/bin/sh", ["-c", "ss -Hltnu | grep -q ':\(port) '"]))?.status == 0 { port += 1 }
        return port
    }

    func fetch(_ url: String) throws -> CommandResult { try run("/usr/bin/curl", ["-gsS", "--noproxy", "*", "--max-time", "10", url]) }

    func machine(_ name: String, store: TemporaryDirectory) throws -> [String: Any]? {
        let ps = try berth(["ps", "--json"], store: store)
        let all = (try JSONSerialization.jsonObject(with: Data(ps.stdout.utf8)) as? [[String: Any]]) ?? []
        return all.first { $0["machine"] as? String == name }
    }

    /// What must hold once machine `name` is gone, whose forwards were `ports`.
    func expectNoNetwork(of name: String, ports: [Int] = [], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let links = try run("/sbin/ip", ["-br", "link"]).stdout
        #expect(!links.contains("ve-\(name)"), "its link is left: \(links)", sourceLocation: sourceLocation)
        #expect(!FileManager.default.fileExists(atPath: "/run/berth/network/\(name)"), "its state is left", sourceLocation: sourceLocation)
        let table = try run("/usr/sbin/nft", ["list", "table", "inet", "berth"])
        for port in ports { #expect(!table.stdout.contains("dport \(port) "), "its forward is left: \(table.stdout)", sourceLocation: sourceLocation) }
    }

    /// Two web servers in two machines, each on its own port 80, each reached through its host
    /// port on 127.0.0.1; `ps` and `status` show their addresses.
    @Test func twoMachinesServePort80ThroughTwoHostPorts() throws {
        let serialized = NetworkTestLock()
        defer { withExtendedLifetime(serialized) {} }
        let (one, two) = (Self.unique("wa"), Self.unique("wb"))
        let tmp = try store("net-two", busybox: [one, two])
        let ports = [freePort(1), freePort(2)]
        for (name, port) in zip([one, two], ports) {
            let started = try berth(["run", "-d", "-q", "-n", "-p", "\(port):80", "-M", name, "httpd", "-f", "-p", "80", "-h", "/www"], store: tmp)
            #expect(started.status == 0, "\(started)")
        }
        defer { for name in [one, two] { _ = try? berth(["terminate", name], store: tmp) } }
        for (name, port) in zip([one, two], ports) {
            var page = CommandResult(status: -1, stdout: "", stderr: "")
            #expect(try waitUntil(timeout: 10) { page = try fetch("http://127.0.0.1:\(port)/"); return page.status == 0 }, "\(page)")
            #expect(page.stdout == "page of \(name)\n", "\(page)")
            let six = try fetch("http://[::1]:\(port)/")
            #expect(six.stdout == "page of \(name)\n", "on ::1 too: \(six)")
            let addresses = try #require(try machine(name, store: tmp)?["addresses"] as? [String])
            #expect(addresses.first?.hasPrefix("10.200.") == true && addresses.contains { $0.hasPrefix("fe80::") }, "\(addresses)")
            let status = try berth(["status", name], store: tmp)
            #expect(status.stdout.contains("Address: \(addresses[0])"), "\(status)")
            // Inside: loopback, host0 with its address, the default route through the host's end.
            let inside = try berth(["shell", name, "/bin/sh", "-c", "ip -o addr show lo; ip -o addr show host0; ip route"], store: tmp)
            #expect(inside.stdout.contains("127.0.0.1") && inside.stdout.contains(addresses[0]) && inside.stdout.contains("default via 10.200."),
                    "\(inside)")
        }
        // Ended each its own way: terminate, and a power-off (a command's: its kill signal).
        #expect(try berth(["terminate", one], store: tmp).status == 0)
        #expect(try berth(["poweroff", two], store: tmp).status == 0)
        try expectNoNetwork(of: one, ports: [ports[0]])
        try expectNoNetwork(of: two, ports: [ports[1]])
        #expect(try fetch("http://127.0.0.1:\(ports[0])/").status != 0, "the forward went with its machine")
        #expect(try fetch("http://[::1]:\(ports[1])/").status != 0, "and its relay on ::1")
    }

    /// The machine reaches a namespace that stands for the outside world, routed through the host
    /// but with no route back to berth's pool: only the host's NAT brings the answer back.
    @Test func aMachineReachesTheOutsideThroughNAT() throws {
        let serialized = NetworkTestLock()
        defer { withExtendedLifetime(serialized) {} }
        let name = Self.unique("nat")
        let tmp = try store("net-nat", busybox: [name])
        let outside = try TestNetworkNamespace()
        defer { outside.end() }
        let outsideLink = "bto\(Hex.random(4))"
        #expect(try run("/sbin/ip", ["link", "add", outsideLink, "type", "veth", "peer", "name", "eth0", "netns", "\(outside.pid)"]).status == 0)
        defer { _ = try? run("/sbin/ip", ["link", "del", outsideLink]) }
        #expect(try run("/sbin/ip", ["addr", "add", "10.252.19.1/30", "dev", outsideLink]).status == 0)
        #expect(try run("/sbin/ip", ["link", "set", outsideLink, "up"]).status == 0)
        #expect(try outside.run("ip addr add 10.252.19.2/30 dev eth0 && ip link set eth0 up && ip link set lo up").status == 0)
        let www = try TemporaryDirectory("net-world")
        try "the world\n".write(toFile: www.appending("index.html").string, atomically: true, encoding: .utf8)
        let server = try outside.start("/bin/busybox httpd -f -p 8000 -h \(www.path.string)")
        defer { endProcess(server) }

        let forwardingBefore = String(decoding: try readFile("/proc/sys/net/ipv4/ip_forward"), as: UTF8.self)
        let started = try berth(["run", "-d", "-n", "-M", name, "sleep", "600"], store: tmp)
        #expect(started.status == 0, "\(started)")
        defer { _ = try? berth(["terminate", name], store: tmp) }
        if forwardingBefore == "0\n" {
            // In the background the supervisor's word goes to the machine's log.
            let log = try berth(["logs", name], store: tmp).stdout
            #expect(log.contains("IPv4 forwarding"), "the one-line notice: \(log)")
        }
        var answer = CommandResult(status: -1, stdout: "", stderr: "")
        #expect(try waitUntil(timeout: 10) {
            // nc, not wget: the busybox-static of Debian 12 has a wget that crashes in any root
            // without glibc's NSS files (it does in a plain chroot too).
            answer = try berth(["shell", name, "/bin/sh", "-c", #"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 10.252.19.2 8000"#], store: tmp)
            return answer.status == 0 && answer.stdout.hasSuffix("the world\n")
        }, "\(answer)")
        #expect(answer.stdout.hasPrefix("HTTP/1.") && answer.stdout.hasSuffix("\r\n\r\nthe world\n"), "\(answer)")
        // Its supervisor killed: the machine dies with it, and the next command tidies its network.
        let record = String(decoding: try readFile(FilePath("/run/berth/machines/\(name).machine")), as: UTF8.self)
        let supervisor = try #require(record.split(separator: "\n").first { $0.hasPrefix("supervisor=") }.flatMap { pid_t($0.dropFirst(11)) })
        #expect(kill(supervisor, SIGKILL) == 0)
        #expect(waitUntil { (try? machine(name, store: tmp)) == nil })
        _ = try berth(["ps"], store: tmp)
        try expectNoNetwork(of: name)
        #expect(String(decoding: try readFile("/proc/sys/net/ipv4/ip_forward"), as: UTF8.self) == forwardingBefore,
                "forwarding is back as it was once no machine needs it")
    }

    /// The Debian image boots on a veth: systemd comes up (READY=1), host0 has its address and
    /// the default route, resolv.conf names no loopback stub, and networkd (should the guest run
    /// it) finds host0's configuration before systemd's DHCP one.
    @Test func theDebianImageBootsWithAVethNetwork() throws {
        let serialized = NetworkTestLock()
        defer { withExtendedLifetime(serialized) {} }
        let name = Self.unique("deb")
        let tmp = try TemporaryDirectory("net-debian")
        #expect(try berth(["import", "-q", Fixtures.debianZstd, "deb"], store: tmp).status == 0)
        #expect(try berth(["clone", "deb", name], store: tmp).status == 0)
        let started = try berth(["start", "--network-veth", name], store: tmp)
        #expect(started.status == 0, "\(started)")
        defer { _ = try? berth(["terminate", name], store: tmp) }
        let address = try #require((try machine(name, store: tmp)?["addresses"] as? [String])?.first)
        let inside = try berth(["shell", name, "/bin/sh", "-c",
                                "ip -o addr show host0; ip route; cat /etc/resolv.conf; cat /run/systemd/network/10-berth-host0.network; systemctl is-system-running"],
                               store: tmp)
        #expect(inside.stdout.contains(address) && inside.stdout.contains("default via 10.200."), "\(inside)")
        #expect(!inside.stdout.contains("127.0.0.53") && inside.stdout.contains("nameserver"), "\(inside)")
        #expect(inside.stdout.contains("Name=host0") && inside.stdout.contains("Address=\(address)/"), "\(inside)")
        // The same servers as resolv.conf names, for a guest whose resolved reads them there.
        let servers = inside.stdout.split(separator: "\n").filter { $0.hasPrefix("nameserver ") }.map { $0.dropFirst("nameserver ".count) }
        #expect(!servers.isEmpty && servers.allSatisfy { inside.stdout.contains("DNS=\($0)") }, "\(inside)")
        #expect(inside.stdout.contains("running") || inside.stdout.contains("degraded"), "\(inside)")
        #expect(try berth(["poweroff", name], store: tmp).status == 0)
        try expectNoNetwork(of: name)
    }

    /// A machine with a forward (so `route_localnet` is on for its link) cannot reach what the
    /// host serves on 127.0.0.1 only (CVE-2020-8558's hole): from the machine's network, 127.0.0.1
    /// is routed through host0 and a datagram sent to the host's loopback-only listener, which
    /// must never see it; the host's own forward to the machine still answers.
    @Test func aMachineCannotReachTheHostsLoopback() throws {
        let name = Self.unique("lo")
        let tmp = try store("net-loopback", busybox: [name])
        let (secretPort, forwardPort) = (freePort(4), freePort(5))
        let received = try TemporaryDirectory("net-secret")
        let output = try FileHandle(forWritingTo: { () -> URL in
            let url = URL(fileURLWithPath: received.appending("got").string)
            FileManager.default.createFile(atPath: url.path, contents: nil)
            return url
        }())
        let listener = Process()
        listener.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        listener.arguments = ["-u", "-c", "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', \(secretPort)))\nwhile True: print(s.recv(4096).decode(), flush=True)"]
        listener.standardOutput = output
        try listener.run()
        defer { kill(listener.processIdentifier, SIGKILL); listener.waitUntilExit() }
        #expect(waitUntil { (try? run("/bin/sh", ["-c", "ss -Hlun | grep -q '127.0.0.1:\(secretPort) '"]))?.status == 0 })
        let started = try berth(["run", "-d", "-q", "-n", "-p", "\(forwardPort):80", "-M", name, "httpd", "-f", "-p", "80", "-h", "/www"], store: tmp)
        #expect(started.status == 0, "\(started)")
        defer { _ = try? berth(["terminate", name], store: tmp) }
        let leader = try #require(try machine(name, store: tmp)?["leader"] as? Int)
        #expect(String(decoding: try readFile(FilePath("/proc/sys/net/ipv4/conf/ve-\(name)/route_localnet")), as: UTF8.self) == "1\n")
        let host = try #require(try run("/sbin/ip", ["-4", "-o", "addr", "show", "ve-\(name)"]).stdout.split(separator: " ").first { $0.contains("/28") }
            .map { String($0.split(separator: "/")[0]) })
        let attack = try run("/usr/bin/nsenter", ["-t", "\(leader)", "-n", "/bin/sh", "-c", """
            ip route del local 127.0.0.0/8 dev lo table local && ip route add 127.0.0.1/32 via \(host) dev host0 onlink || exit 90
            python3 -c "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'probe-from-the-machine', ('127.0.0.1', \(secretPort))) for i in range(3)]"
            """])
        #expect(attack.status != 90, "the attack could not be set up: \(attack)")
        usleep(300_000)
        let got = String(decoding: try readFile(received.appending("got")), as: UTF8.self)
        #expect(!got.contains("probe-from-the-machine"), "the machine reached the host's loopback")
        // The forward from the host's 127.0.0.1 still works: its answers are let through.
        #expect(try fetch("http://127.0.0.1:\(forwardPort)/").stdout == "page of \(name)\n")
    }

    /// A run returns once its command has; its network goes after it, in a process of the
    /// supervisor's, and what comes next waits for that: the same machine run again at once,
    /// and any berth command, after which nothing of it is left.
    @Test func aRunsNetworkGoesAfterItAndTheNextCommandWaitsForIt() throws {
        let serialized = NetworkTestLock()
        defer { withExtendedLifetime(serialized) {} }
        let name = Self.unique("fg")
        let tmp = try store("net-foreground", busybox: [name])
        for round in 1...3 {
            let result = try berth(["run", "-q", "-n", "-p", "\(freePort(6)):80", "-M", name, "/bin/sh", "-c", "ip -o -4 addr show host0"], store: tmp)
            #expect(result.status == 0 && result.stdout.contains("inet 10.200."), "round \(round): \(result)")
        }
        #expect(try berth(["ps"], store: tmp).status == 0)
        try expectNoNetwork(of: name, ports: [freePort(6)])
    }

    /// A table of berth's name that is not as berth makes it (someone else's) stops a start with
    /// one line that says what to do, and is left exactly as it was.
    @Test func aTableOfBerthsNameThatIsNotBerthsIsLeftAsItWas() throws {
        let serialized = NetworkTestLock()
        defer { withExtendedLifetime(serialized) {} }
        let name = Self.unique("ft")
        let tmp = try store("net-foreign", busybox: [name])
        try #require(try run("/usr/sbin/nft", ["list", "table", "inet", "berth"]).status != 0, "a table inet berth is there already")
        let foreign = try TemporaryDirectory("net-foreign-table")
        try writeFile(foreign.appending("table.nft"), "table inet berth {\n  chain ports {\n  }\n}\n")
        let made = try run("/usr/sbin/nft", ["-f", foreign.appending("table.nft").string])
        #expect(made.status == 0, "\(made)")
        defer { _ = try? run("/usr/sbin/nft", ["delete", "table", "inet", "berth"]) }
        let before = try run("/usr/sbin/nft", ["list", "table", "inet", "berth"]).stdout
        let result = try berth(["run", "-q", "-n", "-M", name, "/bin/true"], store: tmp)
        expectCleanFailure(result, "not as berth makes it")
        #expect(try run("/usr/sbin/nft", ["list", "table", "inet", "berth"]).stdout == before)
        try expectNoNetwork(of: name)
    }

    /// Bad input is one line and a non-zero exit, and leaves no link, state or rule.
    @Test func badNetworkInputChangesNothing() throws {
        let serialized = NetworkTestLock()
        defer { withExtendedLifetime(serialized) {} }
        let name = Self.unique("bad")
        let tmp = try store("net-bad", busybox: [name])
        let port = freePort(3)
        let holder = try Process.run(URL(fileURLWithPath: "/bin/busybox"), arguments: ["nc", "-l", "-p", "\(port)"])
        defer { kill(holder.processIdentifier, SIGKILL); holder.waitUntilExit() }
        #expect(waitUntil { (try? run("/bin/sh", ["-c", "ss -Hltn | grep -q ':\(port) '"]))?.status == 0 })
        let tableBefore = try run("/usr/sbin/nft", ["list", "table", "inet", "berth"]).stdout
        let linksBefore = try run("/sbin/ip", ["-br", "link"]).stdout
        let cases: [([String], String)] = [
            (["-n", "-p", "\(port):80"], "in use on the host"),
            (["--network-bridge=nosuchbr\(Hex.random(3))"], "no bridge"),
            (["--network-zone=muchtoolongzone"], "at most 12 bytes"),
            (["-p", "8080:80"], "--port needs a network"),
            (["-n", "-p", "http"], "--port"),
        ]
        for (options, message) in cases {
            let result = try berth(["run", "-q"] + options + ["-M", name, "/bin/true"], store: tmp)
            #expect(result.status != 0 && result.stderr.hasPrefix("berth: error: ") && result.stderr.contains(message)
                    && result.stderr.split(separator: "\n").count == 1, "\(options): \(result)")
        }
        #expect(try run("/sbin/ip", ["-br", "link"]).stdout == linksBefore)
        #expect(try run("/usr/sbin/nft", ["list", "table", "inet", "berth"]).stdout == tableBefore)
        try expectNoNetwork(of: name)
    }
}
