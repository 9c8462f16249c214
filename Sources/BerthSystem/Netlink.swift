import CBerth
import Glibc
import SystemPackage

/// The rtnetlink numbers berth uses (<linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>,
/// <linux/veth.h>), repeated here so the Swift side needs no kernel headers.
public enum Netlink {
    public static let request: UInt16 = 0x1, multi: UInt16 = 0x2, ack: UInt16 = 0x4, dump: UInt16 = 0x300
    public static let replace: UInt16 = 0x100, exclusive: UInt16 = 0x200, create: UInt16 = 0x400
    static let messageError: UInt16 = 2, messageDone: UInt16 = 3

    public static let newLink: UInt16 = 16, deleteLink: UInt16 = 17, getLink: UInt16 = 18, setLink: UInt16 = 19
    public static let newAddress: UInt16 = 20, deleteAddress: UInt16 = 21, getAddress: UInt16 = 22
    public static let newRoute: UInt16 = 24, deleteRoute: UInt16 = 25, getRoute: UInt16 = 26

    // IFLA_*
    public static let linkAddress: UInt16 = 1, linkName: UInt16 = 3, linkMaster: UInt16 = 10, linkInfo: UInt16 = 18
    public static let linkNamespacePID: UInt16 = 19, linkNamespaceFD: UInt16 = 28
    // IFLA_INFO_*, VETH_INFO_PEER
    public static let infoKind: UInt16 = 1, infoData: UInt16 = 2, vethPeer: UInt16 = 1
    // IFA_*
    public static let addressAddress: UInt16 = 1, addressLocal: UInt16 = 2, addressFlags: UInt16 = 8
    public static let addressNoDAD: UInt32 = 0x02
    // RTA_*
    public static let routeDestination: UInt16 = 1, routeOutput: UInt16 = 4, routeGateway: UInt16 = 5, routeTable: UInt16 = 15
    public static let mainTable: UInt8 = 254, protocolStatic: UInt8 = 4, unicast: UInt8 = 1
    public static let interfaceUp: UInt32 = 0x1

    static func read16(_ b: ArraySlice<UInt8>, _ i: Int) -> UInt16 { UInt16(b[i]) | UInt16(b[i + 1]) << 8 }
    static func read32(_ b: ArraySlice<UInt8>, _ i: Int) -> UInt32 {
        UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24
    }
}

/// One reply message: its type, and the bytes after its 16-byte header.
public struct NetlinkReply {
    public let type: UInt16
    public let payload: ArraySlice<UInt8>
}

/// An rtnetlink socket (AF_NETLINK, NETLINK_ROUTE). It stays bound to the network namespace it
/// was made in, wherever it is used from: `init(inNamespace:)` makes one inside a machine's
/// namespace on a short-lived thread, so the supervisor's own threads never change namespace.
public final class RouteNetlink {
    public let descriptor: Descriptor
    private var sequence: UInt32 = 0

    /// A socket in the caller's network namespace.
    public init() throws {
        descriptor = Descriptor(owning: try Self.makeSocket())
    }

    /// A socket in the network namespace open on `namespace` (a /proc/PID/ns/net descriptor).
    public init(inNamespace namespace: Descriptor) throws {
        final class Work {
            let namespace: Int32
            var fd: Int32 = -1, failedCall = "", error: Int32 = 0
            init(_ namespace: Int32) { self.namespace = namespace }
        }
        let work = Work(namespace.rawValue)
        let context = Unmanaged.passRetained(work).toOpaque()
        var thread = pthread_t()
        let started = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            let work = Unmanaged<Work>.fromOpaque(raw).takeUnretainedValue()
            // setns changes only this thread's namespace, and the thread ends right after.
            if cberth_setns(work.namespace, CBERTH_CLONE_NEWNET) != 0 {
                (work.failedCall, work.error) = ("setns(net)", Glibc.errno)
            } else {
                do { work.fd = try RouteNetlink.makeSocket() } catch let error as SystemError {
                    (work.failedCall, work.error) = (error.call, error.errno.rawValue)
                } catch {}
            }
            return nil
        }, context)
        if started != 0 {
            Unmanaged<Work>.fromOpaque(context).release()
            throw SystemError("pthread_create", Errno(rawValue: started))
        }
        pthread_join(thread, nil)
        Unmanaged<Work>.fromOpaque(context).release()
        guard work.fd >= 0 else { throw SystemError(work.failedCall, Errno(rawValue: work.error)) }
        descriptor = Descriptor(owning: work.fd)
    }

    /// A socket in the network namespace of process `pid`.
    public convenience init(namespaceOf pid: pid_t) throws {
        try self.init(inNamespace: try Descriptor.open(FilePath("/proc/\(pid)/ns/net"), O_RDONLY))
    }

    private static func makeSocket() throws -> Int32 {
        let fd = try retryingInterrupts("socket(AF_NETLINK)") {
            socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        // Extended acks would name the attribute at fault, but the errno is what callers act on.
        return fd
    }

    // MARK: Requests

    /// Sends `message` asking for an ack and waits for it; a refusal is `SystemError(what, errno)`.
    public func perform(_ message: NetlinkMessage, what: @autoclosure () -> String) throws {
        var message = message
        let sequence = try send(&message, flags: Netlink.ack)
        for reply in try receive(until: sequence, dump: false) where reply.type == Netlink.messageError {
            let code = Int32(bitPattern: Netlink.read32(reply.payload, reply.payload.startIndex))
            if code == 0 { return }
            throw SystemError(what(), Errno(rawValue: -code))
        }
        throw SystemError(what(), .ioError)
    }

    /// Sends a dump request and returns every reply up to NLMSG_DONE.
    public func dump(_ message: NetlinkMessage, what: @autoclosure () -> String) throws -> [NetlinkReply] {
        var message = message
        let sequence = try send(&message, flags: 0)
        do { return try receive(until: sequence, dump: true) } catch let error as SystemError {
            throw SystemError(what(), error.errno)
        }
    }

    private func send(_ message: inout NetlinkMessage, flags: UInt16) throws -> UInt32 {
        sequence &+= 1
        if flags != 0 { message.addFlags(flags) }
        message.finish(sequence: sequence)
        try message.bytes.withUnsafeBytes { try descriptor.writeAll($0) }
        return sequence
    }

    /// Reads datagrams until the ack (or, for a dump, NLMSG_DONE) of `sequence`; replies to other
    /// sequence numbers (a late one from an earlier request) are skipped.
    private func receive(until sequence: UInt32, dump: Bool) throws -> [NetlinkReply] {
        var replies: [NetlinkReply] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = try buffer.withUnsafeMutableBytes { raw in
                try retryingInterrupts("recv(netlink)") { recv(descriptor.rawValue, raw.baseAddress, raw.count, 0) }
            }
            let datagram = Array(buffer.prefix(n))[...]
            var i = datagram.startIndex
            while i + 16 <= datagram.endIndex {
                let length = Int(Netlink.read32(datagram, i))
                let type = Netlink.read16(datagram, i + 4)
                let number = Netlink.read32(datagram, i + 8)
                guard length >= 16, i + length <= datagram.endIndex else { break }
                let payload = datagram[(i + 16)..<(i + length)]
                i += (length + 3) & ~3
                guard number == sequence else { continue }
                if type == Netlink.messageDone { return replies }
                if type == Netlink.messageError {
                    let code = Int32(bitPattern: Netlink.read32(payload, payload.startIndex))
                    if dump, code != 0 { throw SystemError("netlink dump", Errno(rawValue: -code)) }
                    replies.append(NetlinkReply(type: type, payload: payload))
                    if !dump { return replies }
                    continue
                }
                replies.append(NetlinkReply(type: type, payload: payload))
            }
        }
    }
}
