import BerthTestSupport
import Foundation
import Testing

/// A terminal a person would look at: a detached tmux session 120 columns by 30 lines, typed into
/// and read back while what runs in it is still running. Kill it by name (`kill()`, in a defer).
final class TmuxSession {
    let name: String

    init(_ label: String) throws {
        name = "berth-\(label)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        // A plain sh, so the prompt and the typed line are all there is besides the output; on a
        // tmux server of its own (-L), which goes with its last session.
        // The server it starts keeps every descriptor it was given, and Foundation's Process
        // sees its child end when a socket the child inherits closes: so the server gets
        // /dev/null and nothing else, else run() waits for as long as the server lives.
        let start = "for fd in /proc/$$/fd/*; do n=${fd##*/}; [ \"$n\" -gt 2 ] && eval \"exec $n>&-\"; done 2>/dev/null; "
            + "exec tmux -L \(name) new-session -d -s \(name) -x 120 -y 30 \"env PS1='$ ' ENV= /bin/sh\" </dev/null >/dev/null 2>&1"
        let made = try run("/bin/bash", ["-c", start])
        guard made.status == 0 else { throw TmuxFailure(description: "tmux new-session: \(made)") }
    }

    func kill() { _ = try? tmux(["kill-session", "-t", name]) }

    @discardableResult
    private func tmux(_ arguments: [String]) throws -> CommandResult {
        try run("/usr/bin/tmux", ["-L", name] + arguments)
    }

    /// Types `line` and Enter.
    func type(_ line: String) throws {
        try tmux(["send-keys", "-t", name, "-l", line])
        try tmux(["send-keys", "-t", name, "Enter"])
    }

    /// What the pane shows now, wrapped lines joined.
    func pane() throws -> String {
        try tmux(["capture-pane", "-p", "-J", "-t", name]).stdout
    }

    /// The pane once `condition` holds of it, or nil after `seconds`; polls every 20 ms, so a
    /// state that lasts a fraction of a second is still seen.
    func wait(seconds: Double, until condition: (String) -> Bool) throws -> String? {
        var text = ""
        return try waitUntil(timeout: seconds) {
            text = try pane()
            return condition(text)
        } ? text : nil
    }

    /// The lines of the pane after the typed command line that contains `marker`: the output.
    func output(after marker: String, in text: String) -> [Substring] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.lastIndex(where: { $0.contains(marker) }) else { return [] }
        return Array(lines[(start + 1)...])
    }
}

struct TmuxFailure: Error, CustomStringConvertible { var description: String }

/// Quotes `text` for sh.
func shellQuoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }
