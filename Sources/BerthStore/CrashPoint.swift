import Glibc

/// Named points inside store changes where a test can have berth killed (SIGKILL, as `kill -9`
/// would) by setting `BERTH_CRASH_AT` to the name: the crash-safety tests use them to stop a
/// change exactly between its steps instead of hoping a timer lands there.
enum CrashPoint {
    private static let chosen: String? = getenv("BERTH_CRASH_AT").map { String(cString: $0) }

    static func reach(_ name: String) {
        if chosen == name { kill(getpid(), SIGKILL) }
    }
}
