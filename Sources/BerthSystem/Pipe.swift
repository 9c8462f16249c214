import CBerth
import Glibc

/// A pipe whose two ends close on exec, made so atomically (pipe2 with O_CLOEXEC): a child
/// forked meanwhile by another thread cannot inherit either end.
public struct Pipe {
    public let reader: Descriptor
    public let writer: Descriptor

    public init() throws {
        var fds: [Int32] = [-1, -1]
        _ = try retryingInterrupts("pipe2") { cberth_pipe_cloexec(&fds) }
        reader = Descriptor(owning: fds[0])
        writer = Descriptor(owning: fds[1])
    }
}
