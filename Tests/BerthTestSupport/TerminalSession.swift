import Foundation
import Glibc

/// A terminal a person would sit at: a detached tmux session of a fixed size running a shell.
/// Tests type into it and read its screen while what they started runs, as a person sees it,
/// instead of reading a transcript after the fact. The session is killed when this goes.
public final class TerminalSession {
    public let name: String

    public init(width: Int = 120, height: Int = 40) throws {
        name = "berth-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        // A server of its own (-L), which goes with its last session. The server keeps every
        // descriptor it is started with, and Foundation's Process takes its child for ended
        // only when the descriptors that child inherited close: so the server gets /dev/null
        // and nothing else, or whoever started it would wait for as long as it lives.
        let start = "for fd in /proc/$$/fd/*; do n=${fd##*/}; [ \"$n\" -gt 2 ] && eval \"exec $n>&-\"; done 2>/dev/null; "
            + "exec /usr/bin/tmux -L \(name) new-session -d -s \(name) -x \(width) -y \(height) \"env PS1='$ ' ENV= /bin/sh\" </dev/null >/dev/null 2>&1"
        let made = try run("/bin/bash", ["-c", start])
        guard made.status == 0 else { throw TerminalSessionError("tmux new-session: \(made)") }
        _ = serverPID
    }

    /// The tmux server's pid: kill-server can leave a server behind (seen here), so it is also
    /// ended by pid.
    private lazy var serverPID: pid_t? = {
        pid_t(((try? tmux(["display-message", "-p", "-t", name, "#{pid}"]).stdout) ?? "").trimmingCharacters(in: .whitespacesAndNewlines))
    }()

    deinit { end() }

    /// Ends the server: asked to, then by its pid.
    private func end() {
        let pid = serverPID
        _ = try? tmux(["kill-server"])
        if let pid, pid > 1 { Glibc.kill(pid, SIGKILL) }
    }

    @discardableResult
    private func tmux(_ arguments: [String]) throws -> CommandResult {
        try run("/usr/bin/tmux", ["-L", name] + arguments)
    }

    /// Types `text` literally, then Enter unless `enter` is false.
    public func type(_ text: String, enter: Bool = true) throws {
        try tmux(["send-keys", "-t", name, "-l", text])
        if enter { try press("Enter") }
    }

    /// Presses keys by tmux's names (`Enter`, `C-]`, `C-c`).
    public func press(_ keys: String...) throws {
        try tmux(["send-keys", "-t", name] + keys)
    }

    /// What the screen shows now (wrapped lines joined).
    public func screen() throws -> String {
        try tmux(["capture-pane", "-p", "-J", "-t", name]).stdout
    }

    /// The screen, for a test's message (empty if it cannot be read).
    public var shown: String { (try? screen()) ?? "" }

    /// Waits until the screen shows `text`, up to `timeout` seconds; whether it did.
    @discardableResult
    public func waitFor(_ text: String, timeout: Double = 30) throws -> Bool {
        try waitUntil(timeout: timeout) { try screen().contains(text) }
    }
}

extension TerminalSession {
    /// A session 120 columns by 30 lines, for tests that read their command's output off it.
    public convenience init(label: String) throws { try self.init(width: 120, height: 30) }

    /// Ends the session now rather than when it goes.
    public func kill() { end() }

    /// What the pane shows now.
    public func pane() throws -> String { try screen() }

    /// The pane once `condition` holds of it, or nil after `seconds`.
    public func wait(seconds: Double, until condition: (String) -> Bool) throws -> String? {
        var text = ""
        let held = waitUntil(timeout: seconds) {
            text = (try? self.screen()) ?? ""
            return condition(text)
        }
        return held ? text : nil
    }

    /// The lines of `text` (a pane) after the typed command line that contains `marker`.
    public func output(after marker: String, in text: String) -> [Substring] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.lastIndex(where: { $0.contains(marker) }) else { return [] }
        return Array(lines[(start + 1)...])
    }
}

/// Quotes `text` for sh.
public func shellQuoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }

public struct TerminalSessionError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
