import BerthStore

/// The exit status of a command that failed with a store error, by the error's kind, after
/// sysexits(3) as swift-argument-parser's 64 for a usage error is: a script can tell "no such
/// image" from "busy, try later" without reading the message. README.md's Commands section
/// lists them.
func exitStatus(for kind: StoreError.Kind) -> Int32 {
    switch kind {
    case .invalidInput: return 65   // EX_DATAERR: what was given cannot be used
    case .notFound: return 66       // EX_NOINPUT: no such image, store or file
    case .exists: return 73         // EX_CANTCREAT: the name is taken
    case .inUse: return 75          // EX_TEMPFAIL: busy; it may work once the user stops
    case .systemFailure: return 1   // a system call failed, or the store holds what berth did not write
    }
}
