import Foundation
import Glibc

/// Polls `condition` until it holds or `timeout` seconds have passed, and says whether it held.
/// Tests wait for what they need (a process up, a file written, a lock taken) instead of
/// sleeping a fixed time: as short as the machine allows when it is idle, and long enough when
/// it is busy.
@discardableResult
public func waitUntil(timeout: Double = 30, polling interval: Double = 0.02, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = monotonicSeconds() + timeout
    while true {
        if try condition() { return true }
        if monotonicSeconds() >= deadline { return false }
        usleep(useconds_t(interval * 1_000_000))
    }
}

private func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// The children of process `pid` (of all its threads), from /proc; empty once it is gone.
public func children(of pid: pid_t) -> [pid_t] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    return tasks.flatMap { task in
        ((try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8)) ?? "")
            .split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }
}

/// Whether a process runs whose whole command line is `commandLine` (as `pgrep -fx`).
public func processRuns(_ commandLine: String) -> Bool {
    (try? shell("pgrep -fx '\(commandLine)'"))?.status == 0
}
