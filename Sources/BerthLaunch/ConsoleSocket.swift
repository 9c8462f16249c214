import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// The console of a machine in the background, where `berth login` attaches: a SOCK_SEQPACKET
/// socket at `/run/berth/machines/NAME.console`, for root alone, that the machine's supervisor
/// listens on. One login at a time is attached; the console goes on to the machine's log
/// whether one is or not, and a login that detaches leaves the machine running.
///
/// Each message is whole. The supervisor's first to a login says whether it is attached
/// (`attached`) or another login holds the console (`busy`); after that it sends what the
/// machine writes to its console. A login's messages are tagged: keystrokes for the console,
/// or the caller's window size.
public enum ConsoleSocket {
    static let attached: UInt8 = 0, busy: UInt8 = 1
    static let keystrokes: UInt8 = 0, windowSize: UInt8 = 1

    /// Listens at `path`, replacing a socket left there by a machine of the same name.
    public static func listen(at path: FilePath) throws -> Descriptor {
        Descriptor(owning: try path.withPlatformString { path in
            try retryingInterrupts("listen on the console socket", path: String(cString: path)) { cberth_listen_seqpacket(path) }
        })
    }

    /// The supervisor's side: the listening socket and the login attached to it, if any.
    final class Server {
        let listener: Descriptor
        /// The attached login's connection, or -1.
        private(set) var client: Int32 = -1

        init(listener: Descriptor) { self.listener = listener }

        deinit { if client >= 0 { close(client) } }

        /// What to poll: the listener, and the login while one is attached.
        var pollDescriptors: [Int32] { [listener.rawValue, client] }

        /// A login connected: it is attached, shown the console's last, unfinished line from the
        /// machine's log `log` (a getty's prompt, say), unless another login holds the console.
        func accept(log: Int32) {
            let fd = Glibc.accept(listener.rawValue, nil, nil)
            guard fd >= 0 else { return }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            guard client < 0 else {
                _ = Self.send(fd, [busy])
                close(fd)
                return
            }
            client = fd
            _ = Self.send(fd, [attached])
            let line = Self.unfinishedLine(log)
            if !line.isEmpty { forward(line, count: line.count) }
        }

        /// Passes what the machine wrote to the attached login. One that cannot take it at once
        /// misses it (the log keeps it): the console never waits for a login.
        func forward(_ bytes: [UInt8], count: Int) {
            guard client >= 0 else { return }
            var offset = 0
            while offset < count {
                let size = min(count - offset, 1 << 14)
                let sent = bytes[offset..<offset + size].withUnsafeBytes {
                    Glibc.send(client, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
                }
                if sent < 0 && errno == EINTR { continue }
                if sent < 0 && errno != EAGAIN { detach() }
                if sent < 0 { return }
                offset += size
            }
        }

        /// Reads one message of the attached login: its keystrokes go to the console `master`,
        /// its window size becomes the console's. It detaches when it closes the connection.
        func receive(into master: Int32) {
            var message = [UInt8](repeating: 0, count: 1 << 14 + 1)
            let n = message.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { return }
            guard n > 0 else { return detach() }
            switch message[0] {
            case keystrokes:
                Descriptor.writeAll(to: master, message[1..<n])
            case windowSize where n == 5:
                let rows = UInt16(message[1]) | UInt16(message[2]) << 8, columns = UInt16(message[3]) | UInt16(message[4]) << 8
                _ = cberth_set_window_size(master, rows, columns)
            default:
                break
            }
        }

        func detach() {
            if client >= 0 { close(client) }
            client = -1
        }

        static func send(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
            bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
        }

        /// What follows the last line break in the last few KiB of the log open on `output`
        /// (to append: it is opened again to be read).
        static func unfinishedLine(_ output: Int32) -> [UInt8] {
            guard output >= 0, let log = try? Descriptor.open(FilePath("/proc/self/fd/\(output)"), O_RDONLY) else { return [] }
            var st = stat()
            guard fstat(log.rawValue, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_size > 0 else { return [] }
            var tail = [UInt8](repeating: 0, count: Int(min(st.st_size, 4096)))
            let n = pread(log.rawValue, &tail, tail.count, off_t(st.st_size) - off_t(tail.count))
            guard n > 0 else { return [] }
            let read = tail.prefix(n)
            return Array(read.lastIndex(of: UInt8(ascii: "\n")).map { read[($0 + 1)...] } ?? read)
        }
    }

    /// Why a login ended.
    public enum Ending: Sendable { case detached, machineEnded }

    /// `berth login`: attaches the caller's terminal to the console listening at `path`, until
    /// `^]^]^]` typed within a second (or the end of standard input) detaches it, or the machine
    /// ends. While standard input is a terminal it is raw, and the console takes its window size.
    public static func attach(at path: FilePath, machine: String) throws -> Ending {
        let connected = path.withPlatformString { cberth_connect_seqpacket($0) }
        guard connected >= 0 else {
            let error = Errno(rawValue: errno)
            if error == .noSuchFileOrDirectory || error == .connectionRefused {
                throw LaunchError("machine '\(machine)' has no console to attach to: only a machine booted in the background ('berth start', 'berth run -d -b') has one; 'berth shell \(machine)' enters any machine")
            }
            throw LaunchError("cannot attach to the console of machine '\(machine)': \(error)")
        }
        let socket = Descriptor(owning: connected)
        var answer: UInt8 = 0xff
        guard recv(socket.rawValue, &answer, 1, 0) == 1, answer == attached else {
            throw LaunchError(answer == busy
                ? "the console of machine '\(machine)' is attached to another login; detach that one first (^] three times)"
                : "machine '\(machine)' ended before its console could be attached")
        }
        let onTerminal = Terminal.isTerminal(0)
        var saved = [UInt8](repeating: 0, count: 256)
        let raw = onTerminal && saved.withUnsafeMutableBytes { cberth_make_raw(0, $0.baseAddress, $0.count) } == 0
        defer { if raw { _ = saved.withUnsafeBytes { cberth_restore_terminal(0, $0.baseAddress) } } }
        let end = raw ? "\r\n" : "\n"
        let greeting = "Connected to machine \(Printable.escaping(machine)). "
            + (raw ? "Press ^] three times within 1s to exit session.\(end)" : "The end of standard input detaches.\(end)")
        _ = greeting.withCString { write(2, $0, strlen($0)) }

        var signals = sigset_t(), previous = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGWINCH)
        pthread_sigmask(SIG_BLOCK, &signals, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        let resized = Descriptor(owning: cberth_signalfd(&signals))
        func sendWindowSize() {
            var rows: UInt16 = 0, columns: UInt16 = 0
            guard cberth_get_window_size(0, &rows, &columns) == 0 else { return }
            _ = Server.send(socket.rawValue, [windowSize, UInt8(rows & 0xff), UInt8(rows >> 8), UInt8(columns & 0xff), UInt8(columns >> 8)])
        }
        if onTerminal { sendWindowSize() }

        var escape = ConsoleEscape()
        var buffer = [UInt8](repeating: 0, count: 1 << 14)
        func type(_ bytes: [UInt8]) { if !bytes.isEmpty { _ = Server.send(socket.rawValue, [keystrokes] + bytes) } }
        let ending: Ending
        relay: while true {
            var fds = [pollfd(fd: socket.rawValue, events: Int16(POLLIN), revents: 0), pollfd(fd: 0, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: resized.rawValue, events: Int16(POLLIN), revents: 0)]
            // A ^] held back is typed after a second with no other.
            if poll(&fds, 3, escape.holding ? 200 : -1) < 0 { continue }
            if fds[0].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { recv(socket.rawValue, $0.baseAddress, $0.count, 0) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    ending = .machineEnded
                    break relay
                }
                Descriptor.writeAll(to: 1, buffer[..<n])
            }
            if fds[1].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    ending = .detached
                    break relay
                }
                guard raw else {
                    type(Array(buffer[..<n]))
                    continue
                }
                // The ^]s of the escape never reach the console (a shell would take them for a
                // command of its own, and eat what comes next).
                let (typed, escaped) = escape.filter(buffer[..<n])
                type(typed)
                if escaped {
                    ending = .detached
                    break relay
                }
            }
            type(escape.stale())
            if fds[2].revents != 0 {
                var info = [UInt8](repeating: 0, count: 128)  // struct signalfd_siginfo
                _ = info.withUnsafeMutableBytes { read(resized.rawValue, $0.baseAddress, $0.count) }
                sendWindowSize()
            }
        }
        let farewell = ending == .detached ? "Connection to machine \(Printable.escaping(machine)) terminated." : "Machine \(Printable.escaping(machine)) ended."
        _ = (end + farewell + end).withCString { write(2, $0, strlen($0)) }
        return ending
    }
}

/// `^]` (0x1d) typed three times within a second: what ends a container on the caller's console,
/// and detaches a login from a machine's.
struct ConsoleEscape {
    /// When each ^] of an escape under way was typed, the last second's.
    private var times: [Double] = []

    /// Whether `bytes`, typed now, complete the escape.
    mutating func sees(_ bytes: some Sequence<UInt8>) -> Bool {
        for byte in bytes where byte == 0x1d {
            _ = stale()
            times.append(monotonicSeconds())
            if times.count >= 3 { return true }
        }
        return false
    }

    /// `bytes` typed now, without the ^]s that may begin the escape (held back until another
    /// key, or until they are a second old); and whether the escape is complete.
    mutating func filter(_ bytes: some Sequence<UInt8>) -> (typed: [UInt8], escaped: Bool) {
        var typed = stale()
        for byte in bytes {
            if byte == 0x1d {
                times.append(monotonicSeconds())
                if times.count >= 3 { return (typed, true) }
            } else {
                typed += [UInt8](repeating: 0x1d, count: times.count) + [byte]
                times = []
            }
        }
        return (typed, false)
    }

    /// Whether ^]s are held back.
    var holding: Bool { !times.isEmpty }

    /// The ^]s held back that are a second old: no part of an escape, to be typed after all.
    mutating func stale() -> [UInt8] {
        let now = monotonicSeconds()
        let expired = times.prefix { now - $0 >= 1 }.count
        times.removeFirst(expired)
        return [UInt8](repeating: 0x1d, count: expired)
    }
}
