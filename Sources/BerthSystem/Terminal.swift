import CBerth
import Glibc

/// Facts about the terminal on a standard stream.
public enum Terminal {
    public static func isTerminal(_ fd: Int32) -> Bool { Glibc.isatty(fd) == 1 }

    /// Width in columns of the terminal on `fd`, or nil.
    public static func columns(_ fd: Int32) -> Int? {
        let n = cberth_terminal_columns(fd)
        return n > 0 ? Int(n) : nil
    }
}

/// Monotonic time in seconds, for rates and intervals.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
