import BerthSystem
import BerthTestSupport
import Foundation
import Glibc
import SystemPackage
import Testing

// What the isolation tests (issue 11) attack with: probes compiled from Probes/*.c, a host loop
// device holding a marker, a store with a directory image and a clone, and a tmux pane running a
// host shell.

/// The run options each escape is tried under: the default (a user namespace, once the fix is
/// in) and without one.
let isolationRunModes: [[String]] = [[], ["--private-users=no"]]

/// A directory image (an imported tree, run with -M) or a layered one (a clone).
enum ImageKind: String, CaseIterable, Sendable {
    case directory = "dir"
    case clone = "layered"
}

/// A random tag, so that what a test looks for on the host cannot be there by chance.
func randomTag() -> String { String(UInt64.random(in: 1...UInt64.max), radix: 16) }

/// The static probes, compiled once per test process with `gcc -static -O2` into a directory
/// that containers get at /probe (--bind-ro); everyone may read and run them, so `-u nobody` can.
enum Probes {
    static let names = ["tiocsti", "euid", "trywrite", "pid1", "notify"]

    static let directory: TemporaryDirectory = {
        let dir = try! TemporaryDirectory.forProcess("probes")
        chmod(dir.string, 0o755)
        for name in names {
            let source = projectRoot + "/Tests/BerthIntegrationTests/Probes/\(name).c"
            let built = try! run("/usr/bin/gcc", ["-static", "-O2", "-Wall", "-o", dir.appending(name).string, source])
            precondition(built.status == 0, "cannot compile \(source): \(built)")
        }
        return dir
    }()

    static func path(_ name: String) -> String { directory.appending(name).string }
    /// The run option that binds the probes at /probe.
    static var bind: [String] { ["--bind-ro", "\(directory.string):/probe"] }
}

/// A real loop device on the host over a 1 MiB file that begins with `marker`: a host disk that
/// no container and no unprivileged user may read. Detach it with `detach()` in a defer.
final class LoopDevice {
    let path: String
    let major: UInt32, minor: UInt32
    let marker = "BERTH-HOST-DISK-" + randomTag()
    private var attached = true

    init(in dir: TemporaryDirectory) throws {
        let file = dir.appending("disk-\(randomTag()).img")
        try writeFile(file, Array(marker.utf8) + [UInt8](repeating: 0, count: (1 << 20) - marker.utf8.count))
        let made = try shell("losetup --find --show '\(file.string)'")
        guard made.status == 0, let status = try FileStatus.of(FilePath(made.stdout.trimmed)) else {
            throw LaunchFailure("losetup: \(made)")
        }
        path = made.stdout.trimmed
        (major, minor) = (status.deviceMajor, status.deviceMinor)
        // The host itself reads the marker through it, so a container that reads it has the disk.
        let direct = try shell("head -c 64 '\(path)' | tr -cd 'A-Za-z0-9-'")
        if direct.stdout != marker {
            detach()
            throw LaunchFailure("the host cannot read its own loop device \(path): \(direct)")
        }
    }

    func detach() {
        guard attached else { return }
        attached = false
        _ = try? shell("losetup -d '\(path)'")
    }

    deinit { detach() }
}

struct LaunchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// A store of its own holding the busybox root twice: "dir", a directory image, and "layered",
/// a clone of "base". `plant` runs on each imported tree on the host before the clone, so what
/// it puts there is in both images (in the clone, in its lower layer).
struct IsolationLab {
    let tmp: TemporaryDirectory

    init(_ label: String, plant: (FilePath) throws -> Void = { _ in }) throws {
        tmp = try TemporaryDirectory(label)
        for name in ["dir", "base"] {
            let imported = try berth(["import", "-q", Fixtures.busybox, name], store: tmp)
            guard imported.status == 0 else { throw LaunchFailure("import: \(imported)") }
            // The fixture's root is mktemp's 0700; a distribution's is 0755, which `-u nobody` needs.
            chmod(tmp.appending("store/\(name)").string, 0o755)
            try plant(tmp.appending("store/\(name)"))
        }
        let cloned = try berth(["clone", "base", ImageKind.clone.rawValue], store: tmp)
        guard cloned.status == 0 else { throw LaunchFailure("clone: \(cloned)") }
    }

    var store: String { tmp.appending("store").string }

    /// The berth command line that runs `command` in `kind` with `options` and the probes.
    func runLine(_ kind: ImageKind, _ options: [String], _ command: [String]) -> [String] {
        ["--store", store, "run", "-q", "-M", kind.rawValue] + options + Probes.bind + command
    }

    /// Runs `script` with the image's /bin/sh as root inside, as a user types it.
    func inside(_ kind: ImageKind, _ options: [String], _ script: String, environment: [String: String] = [:]) throws -> CommandResult {
        try run(berthBinary, runLine(kind, options, ["/bin/sh", "-c", script]), environment: environment)
    }
}

/// The line `key=VALUE` of a probe's report.
func reported(_ key: String, in output: String) -> String? {
    output.split(separator: "\n").first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
}

/// A tmux session on a server of its own (its socket in `dir`), running an interactive host
/// bash as root in a pane of a fixed size: the caller's terminal, as a person has it.
final class HostTerminal {
    let socket: String, name: String
    /// The tmux server's and the pane's shell's pids, to be sure both are gone at the end.
    private var pids: [pid_t] = []

    init(in dir: TemporaryDirectory) throws {
        socket = dir.appending("tmux.sock").string
        name = "berth-isolation-\(randomTag())"
        let rc = dir.appending("bashrc")
        try writeFile(rc, "PS1='host-shell$ '\n")
        // The server outlives the client that starts it, so it must hold none of the descriptors
        // through which run() learns that its child ended (Foundation's Process waits for the
        // end of a socket the child inherits), nor the pipes it reads to their end.
        let started = try tmux(["new-session", "-d", "-s", name, "-x", "200", "-y", "50",
                                "env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=screen bash --rcfile '\(rc.string)' -i"],
                               quiet: true)
        guard started.status == 0 else { throw LaunchFailure("tmux: \(started)") }
        pids = try tmux(["display-message", "-p", "-t", name, "#{pid} #{pane_pid}"]).stdout.split(separator: " ")
            .compactMap { pid_t(String($0).trimmed) }
        guard pids.count == 2, waitUntil({ (try? self.screen())?.contains("host-shell$") == true }) else {
            close()
            throw LaunchFailure("the host shell in tmux never showed its prompt")
        }
    }

    private func tmux(_ arguments: [String], quiet: Bool = false) throws -> CommandResult {
        let closeInherited = #"for fd in /proc/$$/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done; "#
        return try run("/bin/bash", ["-c", closeInherited + (quiet ? #"exec "$@" </dev/null >/dev/null 2>&1"# : #"exec "$@" </dev/null"#),
                                     "bash", "/usr/bin/tmux", "-S", socket] + arguments)
    }

    /// Types `line` and Enter, as a person would.
    func type(_ line: String) throws {
        #expect(try tmux(["send-keys", "-t", name, "-l", line]).status == 0)
        #expect(try tmux(["send-keys", "-t", name, "Enter"]).status == 0)
    }

    /// What the pane shows, with its scrollback.
    func screen() throws -> String {
        try tmux(["capture-pane", "-p", "-S", "-200", "-t", name]).stdout
    }

    /// Ends the session by name, then the server; whatever of the two is left is killed by pid.
    func close() {
        _ = try? tmux(["kill-session", "-t", name], quiet: true)
        _ = try? tmux(["kill-server"], quiet: true)
        for pid in pids.reversed() where !waitUntil(timeout: 2, { kill(pid, 0) != 0 || isZombie(pid) }) {
            kill(pid, SIGKILL)
        }
        pids = []
    }

    private func isZombie(_ pid: pid_t) -> Bool {
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return stat.split(separator: ")").last.map { String($0).trimmed.hasPrefix("Z") } ?? true
    }
}

/// The host's kernel.core_pattern, as /proc shows it (with its newline).
func hostCorePattern() throws -> String {
    String(decoding: try readFile("/proc/sys/kernel/core_pattern"), as: UTF8.self)
}

/// Puts the host's core_pattern back to `saved` if anything changed it.
func restoreCorePattern(_ saved: String) {
    guard let now = try? hostCorePattern(), now != saved else { return }
    try? writeFile("/proc/sys/kernel/core_pattern", saved.trimmed + "\n")
}
