import Foundation
import SystemPackage

/// What a finished command printed and how it ended.
public struct CommandResult: CustomStringConvertible {
    public var status: Int32
    public var stdout: String
    public var stderr: String

    public init(status: Int32, stdout: String, stderr: String) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }

    public var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// Held around every systemd-nspawn the tests run. With `--keep-unit` on a host whose PID 1 is
/// not systemd, every nspawn makes and removes the same `payload` and `supervisor` cgroups below
/// the caller's (the root): two at once remove each other's and fail ("Failed to attach ... to
/// compat systemd cgroup //payload").
private func withNspawnLock<T>(_ body: () throws -> T) rethrows -> T {
    let fd = open("/run/berth-tests-nspawn.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    if fd >= 0 { flock(fd, LOCK_EX) }
    defer { if fd >= 0 { close(fd) } }
    return try body()
}

/// Runs `executable` with `arguments`, standard input from `input` (a file) or empty, and waits.
@discardableResult
public func run(_ executable: String, _ arguments: [String], input: String? = nil,
                environment: [String: String] = [:]) throws -> CommandResult {
    if ([executable] + arguments).contains(where: { $0.contains("systemd-nspawn") }) {
        return try withNspawnLock { try runUnlocked(executable, arguments, input: input, environment: environment) }
    }
    return try runUnlocked(executable, arguments, input: input, environment: environment)
}

private func runUnlocked(_ executable: String, _ arguments: [String], input: String?, environment: [String: String]) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env["BERTH_STORE"] = nil
    for (k, v) in environment { env[k] = v }
    process.environment = env
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input.map { FileHandle(forReadingAtPath: $0)! } ?? FileHandle.nullDevice
    try process.run()
    // Read both pipes to the end before waiting, so a chatty child cannot block on a full pipe.
    final class Collected: @unchecked Sendable { var data = Data() }
    let errData = Collected()
    let errRead = DispatchSemaphore(value: 0)
    let errReader = Thread {
        errData.data = err.fileHandleForReading.readDataToEndOfFile()
        errRead.signal()
    }
    errReader.start()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    errRead.wait()
    let status = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    return CommandResult(status: status, stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData.data, as: UTF8.self))
}

/// Runs a shell command line; for the reference tools (GNU tar, setfacl, mount).
@discardableResult
public func shell(_ command: String) throws -> CommandResult {
    try run("/bin/sh", ["-c", command])
}

/// The project's root directory (where Package.swift is).
public let projectRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// The berth binary built beside the tests ($BERTH_BINARY overrides).
public let berthBinary: String = {
    if let path = ProcessInfo.processInfo.environment["BERTH_BINARY"] { return path }
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("berth").path
}()

/// The cached root file systems made by Scripts/make-fixtures (which this runs, once).
public enum Fixtures {
    public static let directory: String = {
        let result = try? run("/bin/bash", [projectRoot + "/Scripts/make-fixtures"])
        guard let result, result.status == 0 else {
            fatalError("Scripts/make-fixtures failed: \(result?.description ?? "did not run")")
        }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }()

    private static func file(_ prefix: String, _ suffix: String) -> String {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        guard let name = names.first(where: { $0.hasPrefix(prefix) && $0.hasSuffix(suffix) && !$0.contains(".part") }) else {
            fatalError("no \(prefix)*\(suffix) in \(directory)")
        }
        return directory + "/" + name
    }

    /// Debian bookworm with systemd, made by mmdebstrap, zstd-compressed.
    public static var debianZstd: String { file("debian-bookworm-", ".tar.zst") }
    public static var debianGzip: String { file("debian-bookworm-", ".tar.gz") }
    /// A static busybox root, plain tar.
    public static var busybox: String { file("busybox-", ".tar") }
}

/// The mount points below `path` in this mount namespace.
public func mounts(under path: String) -> [String] {
    guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
    return text.split(separator: "\n").compactMap { line in
        let fields = line.split(separator: " ")
        guard fields.count > 4 else { return nil }
        let point = String(fields[4])
        return point == path || point.hasPrefix(path + "/") ? point : nil
    }
}
