import BerthSystem
import Glibc
import SystemPackage

/// The [::1] half of a machine's port forwards, relayed in user space by its supervisor.
///
/// NAT cannot do it: a packet from ::1 DNATed to the machine leaves (masqueraded to the host's
/// end) and is answered, but the answer, turned back to ::1 -> ::1, arrives on the veth, and
/// IPv6 routes the loopback address strictly by interface: the lookup finds no route and drops
/// it (Ip6InNoRoutes). IPv6 has no `route_localnet` to allow it. docker-proxy does the same for
/// ::1 (and podman's rootlessport for everything): a listener on [::1]:HOST whose connections are
/// spliced to the machine's address. NetworkFirewall leaves ::1 out of its DNAT so they reach it.
///
/// One thread, no blocking: the owner polls `pollDescriptors` (with its own) and passes what
/// poll returned to `handle(ready:)`. UDP on ::1 goes through a session per client (its address
/// and port): a socket of the relay's connected to the machine, whose answers go back to the
/// client from [::1]:HOST; a session unused for two minutes (conntrack's time for a UDP stream
/// that was answered) ends at the next datagram, and at most 256 are kept, the oldest going
/// first.
public final class LoopbackRelay {
    private struct Listener {
        let socket: Descriptor
        let container: UInt16
    }

    /// One direction of a connection: bytes read from `source` wait in `buffer` for `sink`.
    private struct Flow {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var start = 0, end = 0
        var sourceOpen = true, sinkShut = false
        var done: Bool { sinkShut }
    }

    private final class Pair {
        let client: Descriptor, server: Descriptor
        var connecting = true
        var up = Flow(), down = Flow()  // client to server, server to client
        init(client: Descriptor, server: Descriptor) { (self.client, self.server) = (client, server) }
    }

    /// A UDP client of [::1]:HOST and the socket its datagrams go to the machine through.
    private final class Session {
        let listener: Int
        let client: sockaddr_in6
        let upstream: Descriptor
        var lastUsed: Double
        init(listener: Int, client: sockaddr_in6, upstream: Descriptor, now: Double) {
            (self.listener, self.client, self.upstream, lastUsed) = (listener, client, upstream, now)
        }
    }

    private var listeners: [Listener] = []
    private var pairs: [Pair] = []
    private var datagramListeners: [Listener] = []
    private var sessions: [Session] = []
    private let target: IPAddress
    private var datagram = [UInt8](repeating: 0, count: 1 << 16)

    static let sessionLimit = 256, sessionIdleSeconds = 120.0

    /// Connections at once; more are accepted and closed at once rather than left to queue.
    static let connectionLimit = 256

    /// Listens on [::1]:HOST for each TCP port in `ports`, relaying to `target`:CONTAINER. Refuses
    /// (and binds nothing) when a port is taken on ::1 or the host has no IPv6 loopback.
    public init(ports: [PortForward], target: IPAddress) throws {
        self.target = target
        for port in ports {
            let kind = port.udp ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue
            let fd = socket(AF_INET6, Int32(kind) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw LaunchError("cannot relay [::1]:\(port.host) to the machine: \(SystemError.last("socket(AF_INET6)"))") }
            let socket = Descriptor(owning: fd)
            var on: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &on, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
            guard let loopback = IPAddress("::1") else { throw LaunchError("cannot relay [::1]:\(port.host): ::1 does not parse") }
            var address = Self.socketAddress(loopback, port: port.host)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
            guard bound == 0, port.udp || listen(fd, 64) == 0 else {
                throw LaunchError("cannot relay [::1]:\(port.host) to the machine: \(SystemError.last("bind"))")
            }
            if port.udp {
                datagramListeners.append(Listener(socket: socket, container: port.container))
            } else {
                listeners.append(Listener(socket: socket, container: port.container))
            }
        }
    }

    /// The relay of machine `name`'s ports, from the state its network setup wrote; nil when it
    /// has no network of berth's, no port or no address to relay to. Its IPv6 address is
    /// preferred (a ::1 client speaks IPv6), else its IPv4 one.
    public static func forMachine(_ name: String, settings: NetworkSettings) throws -> LoopbackRelay? {
        guard let state = MachineNetworkState.read(MachineNetworkState.path(name, in: settings)), !state.ports.isEmpty,
              let target = (state.machine6 ?? state.machine4)?.address else { return nil }
        return try LoopbackRelay(ports: state.ports, target: target)
    }

    /// The [::1] ports listened on, TCP's then UDP's.
    public var listeningPorts: [UInt16] {
        (listeners + datagramListeners).compactMap { listener in
            var address = sockaddr_in6()
            var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            let got = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener.socket.rawValue, $0, &length) }
            }
            return got == 0 ? UInt16(bigEndian: address.sin6_port) : nil
        }
    }

    /// Open connections.
    public var connectionCount: Int { pairs.count }

    /// UDP clients with a session.
    public var sessionCount: Int { sessions.count }

    /// What to poll: the listeners, and each connection's ends for what they wait on.
    public var pollDescriptors: [pollfd] {
        var fds = listeners.map { pollfd(fd: $0.socket.rawValue, events: Int16(POLLIN), revents: 0) }
        for pair in pairs {
            if pair.connecting {
                fds.append(pollfd(fd: pair.server.rawValue, events: Int16(POLLOUT), revents: 0))
                continue
            }
            func events(reading: Flow, writing: Flow) -> Int16 {
                Int16((reading.sourceOpen && reading.start == reading.end ? POLLIN : 0) | (writing.start < writing.end ? POLLOUT : 0))
            }
            fds.append(pollfd(fd: pair.client.rawValue, events: events(reading: pair.up, writing: pair.down), revents: 0))
            fds.append(pollfd(fd: pair.server.rawValue, events: events(reading: pair.down, writing: pair.up), revents: 0))
        }
        fds += datagramListeners.map { pollfd(fd: $0.socket.rawValue, events: Int16(POLLIN), revents: 0) }
        fds += sessions.map { pollfd(fd: $0.upstream.rawValue, events: Int16(POLLIN), revents: 0) }
        return fds
    }

    /// Acts on what poll found ready among `pollDescriptors` (entries of other descriptors are
    /// ignored): accepts, finishes connects, moves bytes, closes finished connections.
    public func handle(ready: [pollfd]) {
        var revents: [Int32: Int16] = [:]
        for entry in ready where entry.revents != 0 { revents[entry.fd, default: 0] |= entry.revents }
        guard !revents.isEmpty else { return }
        for listener in listeners where revents[listener.socket.rawValue] != nil { accept(on: listener) }
        if !datagramListeners.isEmpty { relayDatagrams(revents) }
        pairs.removeAll { pair in
            let events = (revents[pair.client.rawValue] ?? 0) | (revents[pair.server.rawValue] ?? 0)
            guard events != 0 else { return false }
            // An error (a reset, a refused connect) ends the pair: it would be reported again at once.
            if events & Int16(POLLERR) != 0 && !pair.connecting { return true }
            return !pump(pair)
        }
    }

    // MARK: Connections

    private func accept(on listener: Listener) {
        while true {
            // accept, not accept4 (Glibc's module leaves it out): nothing forks between the two calls.
            let fd = Glibc.accept(listener.socket.rawValue, nil, nil)
            if fd < 0 { return }  // EAGAIN: no more waiting; anything else: the client gave up
            let client = Descriptor(owning: fd)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            guard pairs.count < Self.connectionLimit else { continue }
            let family = target.isIPv4 ? AF_INET : AF_INET6
            let serverFD = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard serverFD >= 0 else { continue }
            let server = Descriptor(owning: serverFD)
            let started = connectTo(serverFD, port: listener.container)
            guard started == 0 || errno == EINPROGRESS else { continue }  // the client sees its connection closed
            let pair = Pair(client: client, server: server)
            pair.connecting = started != 0
            pairs.append(pair)
        }
    }

    /// Moves what can be moved without blocking; false when the connection is over.
    private func pump(_ pair: Pair) -> Bool {
        if pair.connecting {
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(pair.server.rawValue, SOL_SOCKET, SO_ERROR, &error, &length) == 0, error == 0 else { return false }
            var address = sockaddr_in6()
            var addressLength = socklen_t(MemoryLayout<sockaddr_in6>.size)
            let connected = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(pair.server.rawValue, $0, &addressLength) }
            }
            guard connected == 0 else { return errno == ENOTCONN }  // not yet: poll again
            pair.connecting = false
        }
        guard move(&pair.up, from: pair.client, to: pair.server), move(&pair.down, from: pair.server, to: pair.client) else { return false }
        return !(pair.up.done && pair.down.done)
    }

    /// One direction: writes what is buffered, reads more once the buffer is empty, and passes
    /// the end of the source on as a half close. False on an error (a reset): the pair closes.
    private func move(_ flow: inout Flow, from source: Descriptor, to sink: Descriptor) -> Bool {
        while true {
            while flow.start < flow.end {
                let n = flow.buffer[flow.start..<flow.end].withUnsafeBytes { send(sink.rawValue, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n < 0 { return errno == EAGAIN || errno == EINTR }
                flow.start += n
            }
            guard flow.sourceOpen else {
                if !flow.sinkShut { shutdown(sink.rawValue, Int32(SHUT_WR)); flow.sinkShut = true }
                return true
            }
            let n = flow.buffer.withUnsafeMutableBytes { recv(source.rawValue, $0.baseAddress, $0.count, 0) }
            if n < 0 { return errno == EAGAIN || errno == EINTR }
            (flow.start, flow.end) = (0, n)
            if n == 0 { flow.sourceOpen = false }
        }
    }

    // MARK: Datagrams

    private func relayDatagrams(_ revents: [Int32: Int16]) {
        let now = Self.monotonicSeconds()
        sessions.removeAll { now - $0.lastUsed > Self.sessionIdleSeconds }
        for (index, listener) in datagramListeners.enumerated() where revents[listener.socket.rawValue] != nil {
            while true {
                var client = sockaddr_in6()
                var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
                let n = datagram.withUnsafeMutableBytes { buffer in
                    withUnsafeMutablePointer(to: &client) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(listener.socket.rawValue, buffer.baseAddress, buffer.count, 0, $0, &length) }
                    }
                }
                if n < 0 { break }  // EAGAIN: nothing more waiting
                guard let session = session(for: client, listener: index, now: now) else { continue }
                session.lastUsed = now
                _ = datagram.withUnsafeBytes { send(session.upstream.rawValue, $0.baseAddress, n, 0) }
            }
        }
        for session in sessions where revents[session.upstream.rawValue] != nil {
            var client = session.client
            while true {
                let n = datagram.withUnsafeMutableBytes { recv(session.upstream.rawValue, $0.baseAddress, $0.count, 0) }
                // A refusal (ICMP port unreachable) comes back as an error on the connected socket:
                // the client's own datagram got no answer, nothing to pass on.
                if n < 0 { break }
                session.lastUsed = now
                _ = datagram.withUnsafeBytes { buffer in
                    withUnsafePointer(to: &client) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            sendto(datagramListeners[session.listener].socket.rawValue, buffer.baseAddress, n, 0, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                        }
                    }
                }
            }
        }
    }

    /// The session of `client` on listener `index`, made (the oldest let go when there are too
    /// many) when it has none; nil when no socket could be made.
    private func session(for client: sockaddr_in6, listener index: Int, now: Double) -> Session? {
        if let found = sessions.first(where: { $0.listener == index && Self.same($0.client, client) }) { return found }
        if sessions.count >= Self.sessionLimit, let oldest = sessions.indices.min(by: { sessions[$0].lastUsed < sessions[$1].lastUsed }) {
            sessions.remove(at: oldest)
        }
        let family = target.isIPv4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        let upstream = Descriptor(owning: fd)
        let port = datagramListeners[index].container
        guard connectTo(fd, port: port) == 0 else { return nil }
        let session = Session(listener: index, client: client, upstream: upstream, now: now)
        sessions.append(session)
        return session
    }

    /// connect(2) of `fd` to the target's `port`.
    private func connectTo(_ fd: Int32, port: UInt16) -> Int32 {
        if target.isIPv4 {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &address.sin_addr) { $0.copyBytes(from: target.bytes) }
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        var address = Self.socketAddress(target, port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
    }

    private static func same(_ a: sockaddr_in6, _ b: sockaddr_in6) -> Bool {
        a.sin6_port == b.sin6_port && withUnsafeBytes(of: a.sin6_addr) { x in withUnsafeBytes(of: b.sin6_addr) { y in x.elementsEqual(y) } }
    }

    private static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    private static func socketAddress(_ address: IPAddress, port: UInt16) -> sockaddr_in6 {
        var result = sockaddr_in6()
        result.sin6_family = sa_family_t(AF_INET6)
        result.sin6_port = port.bigEndian
        withUnsafeMutableBytes(of: &result.sin6_addr) { $0.copyBytes(from: address.bytes) }
        return result
    }
}
