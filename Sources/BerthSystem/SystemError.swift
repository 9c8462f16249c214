import Glibc
import SystemPackage

/// A failed system call: which call, on what, and the errno it returned.
public struct SystemError: Error, CustomStringConvertible, Equatable {
    public var call: String
    public var errno: Errno
    public var path: String?

    public init(_ call: String, _ errno: Errno, path: String? = nil) {
        self.call = call
        self.errno = errno
        self.path = path
    }

    /// The error for the calling thread's current `errno`.
    public static func last(_ call: String, path: String? = nil) -> SystemError {
        SystemError(call, Errno(rawValue: Glibc.errno), path: path)
    }

    public var description: String {
        let reason = String(cString: strerror(errno.rawValue))
        if let path { return "\(call) \(Printable.escaping(path)): \(reason)" }
        return "\(call): \(reason)"
    }
}

/// Runs `body` until it does not fail with EINTR; throws `SystemError` for any other -1.
@inline(__always)
@discardableResult
public func retryingInterrupts<T: FixedWidthInteger>(
    _ call: String, path: @autoclosure () -> String? = nil, _ body: () -> T
) throws -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        if Glibc.errno == EINTR { continue }
        throw SystemError.last(call, path: path())
    }
}
