import BerthSystem
import CBerth
import Glibc
import SystemPackage

/// The container's console when any of berth's standard streams is a terminal: a pty whose
/// slave takes the place of each of those streams in the container (the others pass straight
/// through) and becomes its controlling terminal. The container never holds a descriptor of the
/// caller's terminal, so keystrokes it injects (TIOCSTI) reach only its own pty. When standard
/// input is a terminal it is put in raw mode (and restored), keystrokes are relayed, and `^]^]^]`
/// within a second ends the container; what the container writes to the pty goes to berth's
/// standard output when that is a terminal, else to standard error when that is one. The window
/// size follows the caller's terminal.
final class ConsoleRelay {
    let master: Descriptor
    /// The supervisor's own hold on the slave. A pty's master reads EIO, and polls as hung up,
    /// while no process has the slave open, which a booted systemd does between its messages
    /// (it opens and closes /dev/console): held here, the relay never loses the console.
    let slave: Descriptor
    let slavePath: String
    /// The caller's descriptor the container's terminal output goes to; -1 for none.
    let output: Int32
    /// Whether keystrokes are read from the caller's standard input.
    let input: Bool
    private var saved = [UInt8](repeating: 0, count: 256)
    private var raw = false
    /// Where `berth login` attaches, for a machine in the background (`ConsoleSocket`).
    var logins: ConsoleSocket.Server?

    /// The caller's standard streams that are terminals: those the container gets the pty for.
    static func terminalStreams() -> [Int32] { [0, 1, 2].filter { Terminal.isTerminal($0) } }

    /// The console `mode` asks for, given the caller's streams: which of the container's streams
    /// are the pty, and the relay; nil streams and relay for a container that takes berth's own
    /// streams (`pipe`, and a command's with no terminal about). The container never gets a
    /// terminal of the caller's, so `pipe` beside one is refused.
    static func make(_ mode: ConsoleMode, boot: Bool) throws -> (streams: [Int32], relay: ConsoleRelay?) {
        let terminals = terminalStreams()
        switch mode {
        case .automatic:
            // A booted system always gets a console, its init's every stream: off a terminal its
            // output is berth's output (a machine's log in the background, where `berth login`
            // attaches), as nspawn's read-only console does.
            guard !terminals.isEmpty || boot else { return ([], nil) }
            let output: Int32 = terminals.contains(1) ? 1 : terminals.contains(2) ? 2 : terminals.isEmpty ? 1 : -1
            return (terminals.isEmpty ? [0, 1, 2] : terminals,
                    try ConsoleRelay(output: output, input: terminals.contains(0), size: terminals.first))
        case .interactive:
            return ([0, 1, 2], try ConsoleRelay(output: 1, input: true, size: terminals.first))
        case .readOnly:
            return ([0, 1, 2], try ConsoleRelay(output: 1, input: false, size: terminals.first))
        case .passive:
            return ([0, 1, 2], try ConsoleRelay(output: -1, input: false, size: terminals.first))
        case .pipe:
            guard terminals.isEmpty else {
                throw LaunchError("--console=pipe would give the container your terminal, where it could type into your shell; redirect the streams that are terminals, or use another --console mode")
            }
            return ([], nil)
        }
    }

    /// Opens the pty, the size of the caller's terminal `size`, and when `input` is relayed from
    /// a terminal puts it in raw mode (until `restore`) before the container exists, so nothing
    /// typed is echoed or read by anyone else.
    private init(output: Int32, input: Bool, size terminal: Int32?) throws {
        var name = [CChar](repeating: 0, count: 128)
        let fd = try retryingInterrupts("posix_openpt") { cberth_open_pty(&name, name.count) }
        master = Descriptor(owning: fd)
        slavePath = String(cString: name)
        slave = try Descriptor.open(FilePath(slavePath), O_RDWR | O_NOCTTY)
        self.output = output
        self.input = input
        if let terminal { _ = cberth_copy_window_size(terminal, fd) }
        if input && Terminal.isTerminal(0) { raw = saved.withUnsafeMutableBytes { cberth_make_raw(0, $0.baseAddress, $0.count) } == 0 }
    }

    /// Whether `^]^]^]` typed at the caller's terminal ends the container.
    var escapes: Bool { input && Terminal.isTerminal(0) }

    /// The relay berth set up, in the supervisor it handed the container to: the pty's master
    /// and, when berth made its terminal raw, the settings to restore (`savedTerminal`).
    init(master: consuming Descriptor, slave: consuming Descriptor, output: Int32, input: Bool, savedTerminal: [UInt8]?,
         logins: Descriptor? = nil) {
        self.master = master
        self.slave = slave
        self.output = output
        self.input = input
        slavePath = ""
        self.logins = logins.map { ConsoleSocket.Server(listener: $0) }
        if let savedTerminal, savedTerminal.count <= saved.count {
            saved.replaceSubrange(0..<savedTerminal.count, with: savedTerminal)
            raw = true
        }
    }

    /// The pty's slave, for the container, owned by its root (`owner` on the host) alone, as
    /// nspawn gives it: under a user namespace root inside could not open it otherwise.
    func openSlave(owner: UInt32) throws -> Descriptor {
        let slave = try Descriptor.open(FilePath(slavePath), O_RDWR | O_NOCTTY)
        try slave.setOwner(uid: owner, gid: owner)
        try slave.setMode(0o600)
        return slave
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
    /// `loopback` relays the machine's forwarded ports on ::1 meanwhile.
    func relay(signals: Int32, loopback: LoopbackRelay? = nil, onEscape: () -> Void) -> Int32 {
        var escape = ConsoleEscape()
        var buffer = [UInt8](repeating: 0, count: 1 << 14)
        var inputOpen = input, outputOpen = true
        while true {
            let logins = self.logins?.pollDescriptors ?? [-1, -1]
            var fds = [pollfd(fd: signals, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: outputOpen ? master.rawValue : -1, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: inputOpen ? 0 : -1, events: Int16(POLLIN), revents: 0)]
                + logins.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) } + (loopback?.pollDescriptors ?? [])
            if poll(&fds, nfds_t(fds.count), -1) < 0 { continue }
            loopback?.handle(ready: Array(fds[5...]))
            if fds[1].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(master.rawValue, $0.baseAddress, $0.count) }
                if n > 0 {
                    writeAll(output, buffer, n)
                    self.logins?.forward(buffer, count: n)
                } else if n == 0 || errno != EINTR && errno != EAGAIN {
                    outputOpen = false
                }
            }
            if fds[2].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                if n <= 0 {
                    if n == 0 || errno != EINTR { inputOpen = false }
                } else {
                    if raw && escape.sees(buffer[..<n]) { onEscape() }
                    writeAll(master.rawValue, buffer, n)
                }
            }
            if fds[3].revents != 0 { self.logins?.accept(log: output) }
            if fds[4].revents != 0 { self.logins?.receive(into: master.rawValue) }
            if fds[0].revents != 0 {
                var info = [UInt8](repeating: 0, count: 128)  // struct signalfd_siginfo
                let n = info.withUnsafeMutableBytes { read(signals, $0.baseAddress, $0.count) }
                if n == 128 {
                    let signal = info.withUnsafeBytes { $0.load(as: UInt32.self) }
                    if signal == UInt32(SIGWINCH) {
                        if let terminal = [0, 1, 2].first(where: { Terminal.isTerminal($0) }) {
                            _ = cberth_copy_window_size(terminal, master.rawValue)
                        }
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
            writeAll(output, buffer, n)
        }
    }

    /// A machine's log (a file opened to append: the console of a machine started in the
    /// background) is kept under this size: past it, only its last half stays.
    static let logLimit = 4 << 20

    /// Writes to `fd`; for -1 (no terminal to show it on) the bytes are dropped.
    private func keepBounded(_ fd: Int32) {
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_size > Self.logLimit,
              fcntl(fd, F_GETFL) & O_APPEND != 0 else { return }
        var tail = [UInt8](repeating: 0, count: Self.logLimit / 2)
        let n = pread(fd, &tail, tail.count, off_t(st.st_size) - off_t(tail.count))
        guard n > 0, ftruncate(fd, 0) == 0 else { return }
        _ = tail.withUnsafeBytes { write(fd, $0.baseAddress, n) }
    }

    private func writeAll(_ fd: Int32, _ buffer: [UInt8], _ count: Int) {
        guard fd >= 0 else { return }
        defer { keepBounded(fd) }
        Descriptor.writeAll(to: fd, buffer[..<count])
    }
}
