import BerthSystem
import Glibc
import SystemPackage

/// Named points inside store changes where a test can have berth killed (SIGKILL, as `kill -9`
/// would) by setting `BERTH_CRASH_AT` to the name: the crash-safety tests use them to stop a
/// change exactly between its steps instead of hoping a timer lands there.
enum CrashPoint {
    private static let chosen: String? = getenv("BERTH_CRASH_AT").map { String(cString: $0) }

    static func reach(_ name: String) {
        if chosen == name { kill(getpid(), SIGKILL) }
    }
}

/// Named points where a test makes a step fail with an errno, as a full or failing disk would:
/// `BERTH_FAIL_AT=NAME:ERRNO[,NAME:ERRNO...]`, ERRNO a number or ENOSPC, EIO, EDQUOT, EROFS.
/// The points are the steps a real disk can fail that tests cannot make fail on demand: the
/// syncs and clean-ups after a change's commit (`*-sync`, `*-cleanup`, see `afterCommit`) and
/// the read of an image's record (`record-read`).
enum FaultPoint {
    private static let chosen: [String: Int32] = {
        guard let value = getenv("BERTH_FAIL_AT").map({ String(cString: $0) }) else { return [:] }
        let names: [String: Int32] = ["ENOSPC": ENOSPC, "EIO": EIO, "EDQUOT": EDQUOT, "EROFS": EROFS]
        var points: [String: Int32] = [:]
        for item in value.split(separator: ",") {
            let parts = item.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2, let errno = names[parts[1]] ?? Int32(parts[1]) else { continue }
            points[parts[0]] = errno
        }
        return points
    }()

    /// Throws the chosen errno, as system call `call` on `path` would, when `name` is chosen.
    static func check(_ name: String, _ call: String, path: String) throws {
        if let errno = chosen[name] { throw SystemError(call, Errno(rawValue: errno), path: path) }
    }
}

/// Named points where a change waits, holding what it holds there, as a slow disk would make
/// it: `BERTH_PAUSE_AT=NAME:MILLISECONDS`. The race tests use it to widen the moment between a
/// check and its rename, so that what another process does in that moment is tested on every
/// round, not on the rare round a scheduler happens to make it.
enum PausePoint {
    private static let chosen: (name: String, microseconds: UInt32)? = {
        guard let value = getenv("BERTH_PAUSE_AT").map({ String(cString: $0) }) else { return nil }
        let parts = value.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, let ms = UInt32(parts[1]), ms <= 60_000 else { return nil }
        return (parts[0], ms * 1000)
    }()

    static func reach(_ name: String) {
        if let chosen, chosen.name == name { usleep(chosen.microseconds) }
    }
}
