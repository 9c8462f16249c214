/// nspawn's `--volatile=`: how much of the image a run may change, all of it thrown away when
/// the container ends. `yes`: the root is a fresh tmpfs holding the image's /usr, read-only (an
/// image whose /bin, /sbin and /lib live in /usr, as nspawn requires); `state`: the image
/// read-only, with a fresh tmpfs at /var; `overlay`: the whole image under a tmpfs layer, as
/// `-x` has it, under the machine's own name.
public enum VolatileMode: String, Sendable {
    case no, yes, state, overlay

    /// nspawn's words, and its booleans.
    public init(parsing text: String) throws {
        if let mode = VolatileMode(rawValue: text) {
            self = mode
        } else if ["1", "y", "true", "t", "on"].contains(text.lowercased()) {
            self = .yes
        } else if ["0", "n", "false", "f", "off"].contains(text.lowercased()) {
            self = .no
        } else {
            throw LaunchError("--volatile takes yes, no, state or overlay, not '\(text)'")
        }
    }
}
