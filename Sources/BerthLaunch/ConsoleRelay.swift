import BerthSystem
import CBerth
import Glibc

/// The container's console when berth runs on a terminal: a pty whose slave becomes the
/// container's standard streams and controlling terminal. The caller's terminal is put in raw
/// mode (and restored), its window size follows, and `^]^]^]` within a second ends the
/// container. Keystrokes injected inside (TIOCSTI) reach only the container's own pty.
final class ConsoleRelay {
    let master: Descriptor
    let slavePath: String
    private var saved = [UInt8](repeating: 0, count: 256)
    private var raw = false

    /// Opens the pty, the size of berth's terminal, and puts that terminal in raw mode (until
    /// `restore`) before the container exists, so nothing typed is echoed or read by anyone else.
    init() throws {
        var name = [CChar](repeating: 0, count: 128)
        let fd = try retryingInterrupts("posix_openpt") { cberth_open_pty(&name, name.count) }
        master = Descriptor(owning: fd)
        slavePath = String(cString: name)
        _ = cberth_copy_window_size(0, fd)
        raw = saved.withUnsafeMutableBytes { cberth_make_raw(0, $0.baseAddress, $0.count) } == 0
    }

    /// The relay berth set up, in the supervisor it handed the container to: the pty's master
    /// and, when berth made its terminal raw, the settings to restore (`savedTerminal`).
    init(master: consuming Descriptor, savedTerminal: [UInt8]?) {
        self.master = master
        slavePath = ""
        if let savedTerminal, savedTerminal.count <= saved.count {
            saved.replaceSubrange(0..<savedTerminal.count, with: savedTerminal)
            raw = true
        }
    }

    /// The terminal settings `restore` puts back, while the terminal is raw.
    var savedTerminal: [UInt8]? { raw ? Array(saved.prefix(MemoryLayout<termios>.size)) : nil }

    deinit { restore() }

    func restore() {
        if raw { _ = saved.withUnsafeBytes { cberth_restore_terminal(0, $0.baseAddress) } }
        raw = false
    }

    /// Relays until `signals` (a signalfd) delivers a signal; returns its number.
    /// `onEscape` is called when the user types ^]^]^] within a second.
    func relay(signals: Int32, onEscape: () -> Void) -> Int32 {
        var escapes: [Double] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 14)
        var inputOpen = true, outputOpen = true
        while true {
            var fds = [pollfd(fd: signals, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: outputOpen ? master.rawValue : -1, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: inputOpen ? 0 : -1, events: Int16(POLLIN), revents: 0)]
            if poll(&fds, 3, -1) < 0 { continue }
            if fds[1].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(master.rawValue, $0.baseAddress, $0.count) }
                if n > 0 { writeAll(1, buffer, n) } else if n == 0 || errno != EINTR && errno != EAGAIN { outputOpen = false }
            }
            if fds[2].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                if n <= 0 {
                    if n == 0 || errno != EINTR { inputOpen = false }
                } else {
                    for byte in buffer[..<n] where byte == 0x1d {
                        let now = monotonicSeconds()
                        escapes = escapes.filter { now - $0 < 1 } + [now]
                        if escapes.count >= 3 { onEscape() }
                    }
                    writeAll(master.rawValue, buffer, n)
                }
            }
            if fds[0].revents != 0 {
                var info = [UInt8](repeating: 0, count: 128)  // struct signalfd_siginfo
                let n = info.withUnsafeMutableBytes { read(signals, $0.baseAddress, $0.count) }
                if n == 128 {
                    let signal = info.withUnsafeBytes { $0.load(as: UInt32.self) }
                    if signal == UInt32(SIGWINCH) {
                        _ = cberth_copy_window_size(0, master.rawValue)
                        continue
                    }
                    return Int32(signal)
                }
            }
        }
    }

    /// Copies what the container wrote and is still buffered in the pty.
    func drain() {
        var buffer = [UInt8](repeating: 0, count: 1 << 14)
        _ = fcntl(master.rawValue, F_SETFL, O_NONBLOCK)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(master.rawValue, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            writeAll(1, buffer, n)
        }
    }

    private func writeAll(_ fd: Int32, _ buffer: [UInt8], _ count: Int) {
        var done = 0
        while done < count {
            let n = buffer.withUnsafeBytes { write(fd, $0.baseAddress! + done, count - done) }
            if n < 0 { if errno == EINTR { continue } else { return } }
            done += n
        }
    }
}
