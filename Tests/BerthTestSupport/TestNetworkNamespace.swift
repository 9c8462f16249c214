import Foundation
import Glibc

/// A network namespace of the test's own: a `sleep` that `unshare -n` started in it, killed by
/// its pid and reaped when this goes (or by `end()`), which takes the namespace and every link
/// in it along. Tests send traffic only to namespaces like this one and to loopback.
public final class TestNetworkNamespace {
    public let pid: pid_t
    private let process: Process
    private var ended = false

    public init() throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = ["--net", "--", "/bin/sleep", "600"]
        process.standardInput = FileHandle.nullDevice
        try process.run()
        pid = process.processIdentifier
        // unshare execs sleep once the namespace is made: wait until its namespace is not ours.
        let ours = Self.namespaceInode(of: getpid())
        let ready = waitUntil(timeout: 10) {
            let theirs = Self.namespaceInode(of: pid)
            return theirs != nil && theirs != ours && (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) == "sleep\n"
        }
        if !ready {
            end()
            throw POSIXError(.ETIMEDOUT)
        }
    }

    deinit { end() }

    /// Kills the sleep and reaps it; the namespace goes with its last process.
    public func end() {
        guard !ended else { return }
        ended = true
        kill(pid, SIGKILL)
        process.waitUntilExit()
    }

    /// Runs a command inside the namespace (nsenter), to observe or to serve.
    @discardableResult
    public func run(_ command: String) throws -> CommandResult {
        try BerthTestSupport.run("/usr/bin/nsenter", ["-t", "\(pid)", "-n", "/bin/sh", "-c", command])
    }

    /// Starts `command` inside the namespace in the background; the caller ends it by its pid.
    public func start(_ command: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        p.arguments = ["-t", "\(pid)", "-n", "/bin/sh", "-c", "exec " + command]
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    static func namespaceInode(of pid: pid_t) -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/net")
    }
}

/// Ends a background process of the test by its pid and reaps it.
public func endProcess(_ process: Process) {
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
}

/// Held by every test that changes the host's network state (berth's nftables tables, IPv4
/// forwarding), across the test targets, which run side by side: one such test at a time.
public final class NetworkTestLock {
    private let fd: Int32

    public init() {
        fd = open("/run/berth-tests-network.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        if fd >= 0 { flock(fd, LOCK_EX) }
    }

    deinit { if fd >= 0 { close(fd) } }
}
