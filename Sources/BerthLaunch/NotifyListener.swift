import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// The container's notify socket, `/run/host/notify` inside and its `NOTIFY_SOCKET`, which
/// nspawn gives every container: a datagram socket the supervisor binds for the run and reads
/// while it runs, so a payload's sd_notify() always reaches a reader. berth tells its own
/// manager (berth's `NOTIFY_SOCKET`: systemd for a service of Type=notify, or `berth run -d`
/// waiting for its machine) what nspawn tells it: the container running, with its leader's pid;
/// READY=1 at once unless `--notify-ready=yes` (or a machine booted in the background) waits,
/// and again whenever the payload says it; STOPPING=1 at the end. nspawn hears only the payload's PID 1;
/// berth any process of the container, so that a script's `systemd-notify --ready` counts.
public struct NotifyListener {
    /// When berth's manager hears READY=1.
    public enum Ready: String, Sendable {
        case atStart = "start"
        case fromPayload = "payload"
    }

    let socket: Descriptor
    /// nil when berth tells its manager nothing (a recipe's step: berth itself is not the service).
    let ready: Ready?

    /// Binds a socket at a fresh path of berth's runtime directory, for the container's mount
    /// of it; the caller removes the path once that mount is made, which keeps the socket.
    static func bind(ready: Ready?) throws -> (listener: NotifyListener, path: FilePath) {
        let path = try RuntimeDirectory.path("notify").appending(Hex.random(16))
        let fd = path.withPlatformString { cberth_bind_datagram_socket($0) }
        guard fd >= 0 else { throw SystemError.last("bind the notify socket", path: path.string) }
        return (NotifyListener(socket: Descriptor(owning: fd), ready: ready), path)
    }

    /// Tells the manager the container runs, with `leader` as its PID 1.
    func started(leader: pid_t) {
        guard let ready else { return }
        Self.tellManager("STATUS=Container running.\nX_NSPAWN_LEADER_PID=\(leader)")
        if ready == .atStart { Self.tellManager("READY=1") }
    }

    /// Has the kernel send SIGIO, one of the signals the supervisor waits for, to this thread
    /// (the one that waits: another, with SIGIO unblocked, would die of it) whenever a message
    /// comes; then reads what came before.
    func signalOnInput() {
        _ = cberth_signal_thread_on_input(socket.rawValue)
        drain()
    }

    /// Reads the messages waiting, and passes the payload's READY=1 on (as nspawn does, a
    /// second time when it said so at start). A flood is read a bounded part at a time: what
    /// is left raises SIGIO again, after the signals that wait (a SIGTERM is not held up).
    func drain() {
        let (ready, more) = Self.readReady(socket, atMost: 256)
        if ready && self.ready != nil { Self.tellManager("READY=1") }
        if more { pthread_kill(pthread_self(), SIGIO) }
    }

    /// Once the container ended: what it said last is read, the manager hears it stops, no more
    /// SIGIO comes, and one already sent is taken (the caller's signals may be unblocked next,
    /// and SIGIO's default is to end the process).
    func stop() {
        drain()
        if ready != nil { Self.tellManager("STOPPING=1\nSTATUS=Terminating...") }
        _ = fcntl(socket.rawValue, F_SETFL, fcntl(socket.rawValue, F_GETFL) & ~O_ASYNC)
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGIO)
        var now = timespec()
        while sigtimedwait(&set, nil, &now) > 0 {}
    }

    /// Whether a message waiting on `socket` says READY=1; reads all that wait, without waiting.
    public static func saysReady(_ socket: Descriptor) -> Bool { readReady(socket, atMost: .max).ready }

    /// Reads up to `limit` messages: whether one says READY=1, and whether more may wait.
    private static func readReady(_ socket: Descriptor, atMost limit: Int) -> (ready: Bool, more: Bool) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        var ready = false
        for _ in 0..<limit {
            let n = recv(socket.rawValue, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            guard n > 0 else { return (ready, false) }
            ready = ready || String(decoding: buffer[..<n], as: UTF8.self).split(separator: "\n").contains("READY=1")
        }
        return (ready, true)
    }

    /// Sends `message` to berth's own `NOTIFY_SOCKET`, when it has one; a manager that is gone
    /// is no error.
    static func tellManager(_ message: String) {
        guard let path = getenv("NOTIFY_SOCKET").map({ String(cString: $0) }), path.hasPrefix("/") || path.hasPrefix("@") else { return }
        _ = message.withCString { cberth_send_datagram(path, $0, strlen($0)) }
    }
}
