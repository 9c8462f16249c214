import Glibc

/// How a process ended, from its wait status, as berth reports it: the container's first
/// process (where a booted system's power-off and reboot are endings, not deaths), or any other.
public struct ExitStatus: Equatable, Sendable {
    public enum Ending: Equatable, Sendable {
        case exited(Int32)
        case poweredOff
        case rebooted
        case killed(Int32)
    }

    public let ending: Ending
    /// berth's (and nspawn's) exit status after a booted system rebooted.
    public static let rebootCode: Int32 = 133

    /// reboot(2) in a PID namespace ends its init with SIGINT for power-off and halt, SIGHUP for
    /// reboot; for a booted system those are its ways to end, not deaths.
    public init(waitStatus status: Int32, boot: Bool = false) {
        let signal = status & 0x7f
        if signal == 0 {
            // A booted init's own 133 would read as a reboot (and restart a machine in the
            // background): it is reported as the failure it is, 1.
            let code = (status >> 8) & 0xff
            ending = .exited(boot && code == Self.rebootCode ? 1 : code)
        } else if boot && signal == SIGINT {
            ending = .poweredOff
        } else if boot && signal == SIGHUP {
            ending = .rebooted
        } else {
            ending = .killed(signal)
        }
    }

    /// berth's exit status: the command's own, 0 after a power-off and 133 after a reboot (as
    /// nspawn), 128 plus the signal that killed it. 133 is a reboot only with -b: a command's
    /// reboot(2) ends it with SIGHUP, 129, so a command's own 133 is its own; a booted init's
    /// own 133 is 1.
    public var code: Int32 {
        switch ending {
        case .exited(let code): return code
        case .poweredOff: return 0
        case .rebooted: return Self.rebootCode
        case .killed(let signal): return 128 + signal
        }
    }

    /// nspawn's closing line.
    public func sentence(machine name: String) -> String {
        switch ending {
        case .exited(0), .poweredOff: return "Container \(name) exited successfully.\n"
        case .exited(let code): return "Container \(name) failed with error code \(code).\n"
        case .rebooted: return "Container \(name) is being rebooted.\n"
        case .killed(let signal): return "Container \(name) terminated by signal \(Self.name(of: signal)).\n"
        }
    }

    private static func name(of signal: Int32) -> String {
        let names: [Int32: String] = [SIGHUP: "HUP", SIGINT: "INT", SIGQUIT: "QUIT", SIGILL: "ILL", SIGABRT: "ABRT", SIGBUS: "BUS",
                                      SIGFPE: "FPE", SIGKILL: "KILL", SIGSEGV: "SEGV", SIGPIPE: "PIPE", SIGALRM: "ALRM", SIGTERM: "TERM"]
        return names[signal] ?? "\(signal)"
    }
}
