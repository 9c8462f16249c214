import CBerth
import Glibc

/// One end of a pair of connected AF_UNIX SOCK_SEQPACKET sockets: each message arrives whole,
/// with the descriptors sent beside it (SCM_RIGHTS). The supervisor hands the container's first
/// process its launch description and its prepared mounts this way.
public struct MessageSocket {
    public let descriptor: Descriptor

    /// The largest number of descriptors one message carries (the kernel's SCM_MAX_FD).
    public static let maxDescriptors = 253

    public static func pair() throws -> (MessageSocket, MessageSocket) {
        var fds: [Int32] = [-1, -1]
        _ = try retryingInterrupts("socketpair") { cberth_seqpacket_pair(&fds) }
        return (MessageSocket(descriptor: Descriptor(owning: fds[0])), MessageSocket(descriptor: Descriptor(owning: fds[1])))
    }

    public init(descriptor: Descriptor) { self.descriptor = descriptor }

    /// Sends `bytes` and `descriptors` as one message.
    public func send(_ bytes: [UInt8], descriptors: [Int32]) throws {
        _ = try bytes.withUnsafeBytes { buffer in
            try retryingInterrupts("sendmsg") {
                cberth_send_with_descriptors(descriptor.rawValue, buffer.baseAddress, buffer.count, descriptors, Int32(descriptors.count))
            }
        }
    }

    /// Receives one message of at most `limit` bytes and the descriptors that came with it.
    public func receive(limit: Int = 1 << 20) throws -> (bytes: [UInt8], descriptors: [Descriptor]) {
        var bytes = [UInt8](repeating: 0, count: limit)
        var fds = [Int32](repeating: -1, count: Self.maxDescriptors)
        var count: Int32 = 0
        let n = try bytes.withUnsafeMutableBytes { buffer in
            try retryingInterrupts("recvmsg") {
                cberth_receive_with_descriptors(descriptor.rawValue, buffer.baseAddress, buffer.count, &fds, Int32(fds.count), &count)
            }
        }
        return (Array(bytes.prefix(n)), fds.prefix(Int(count)).map { Descriptor(owning: $0) })
    }
}
