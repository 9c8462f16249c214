/// nspawn's `--console=` modes, and berth's default.
public enum ConsoleMode: String, Sendable {
    /// Berth's default: the container gets a pty in place of each of berth's streams that is a
    /// terminal (never the terminal itself), and the others pass straight through, so piped
    /// input and output need no `--pipe`; a booted system's console off a terminal goes to
    /// standard output (nspawn's read-only).
    case automatic
    /// A pty for all three streams, relayed both ways (the terminal raw, `^]^]^]` to end it).
    case interactive
    /// A pty for all three streams; its output goes to standard output, nothing is read.
    case readOnly = "read-only"
    /// A pty for all three streams, relayed nowhere.
    case passive
    /// No pty: the container takes berth's streams, which must not be terminals (`-P`).
    case pipe

    /// `--console=MODE`.
    public init(parsing text: String) throws {
        guard let mode = ConsoleMode(rawValue: text), mode != .automatic else {
            throw LaunchError("--console takes interactive, read-only, passive or pipe, not '\(text)'")
        }
        self = mode
    }
}
