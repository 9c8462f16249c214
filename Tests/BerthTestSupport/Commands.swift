import BerthSystem
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
/// Those it leaves behind are removed before the next starts: when the unified hierarchy keeps
/// them and the compat `name=systemd` one lost them, nspawn fails ("Parent died too early").
/// Only empty cgroups can be removed, and no nspawn of the tests runs meanwhile.
private func withNspawnLock<T>(_ body: () throws -> T) rethrows -> T {
    let fd = open("/run/berth-tests-nspawn.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
    if fd >= 0 { flock(fd, LOCK_EX) }
    defer { if fd >= 0 { close(fd) } }
    for hierarchy in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"] {
        for name in ["payload", "supervisor"] {
            let top = "\(hierarchy)/\(name)"
            // Deepest first; the files among them (cgroup.procs and the like) are no directories.
            for path in (FileManager.default.subpaths(atPath: top) ?? []).sorted(by: { $0.count > $1.count }) { rmdir("\(top)/\(path)") }
            rmdir(top)
        }
    }
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
    let out = Foundation.Pipe(), err = Foundation.Pipe()
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
    var kept = Set(keptTrees(under: path) + sharedStoreRoots(under: path))
    // One overlay at each store tree, and the store root's own shared mount, are the store's;
    // anything else there is left behind.
    return allMounts(under: path).compactMap { point, _ in kept.remove(point) == nil ? point : nil }
}

/// The mount points under `path` (in mount order) with their file system types.
public func allMounts(under path: String) -> [(point: String, type: String)] {
    // Read to the end of the file: procfs reports a size of 0, which Foundation's reader may take.
    guard let bytes = try? Descriptor.open("/proc/self/mountinfo", O_RDONLY).readAll() else { return [] }
    return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { line in
        let fields = line.split(separator: " ")
        guard fields.count > 4, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { return nil }
        let point = String(fields[4])
        return point == path || point.hasPrefix(path + "/") ? (point, String(fields[dash + 1])) : nil
    }
}

/// The layered images' trees berth keeps mounted under `path`: an overlay at STORE/NAME of a
/// store (a directory holding `.berth`), once each, in mount order.
public func keptTrees(under path: String) -> [String] {
    var seen = Set<String>()
    return allMounts(under: path).compactMap { point, type in
        let store = (point as NSString).deletingLastPathComponent
        guard type == "overlay", FileManager.default.fileExists(atPath: store + "/.berth"), seen.insert(point).inserted else { return nil }
        return point
    }
}

/// The store roots (directories holding `.berth`) under `path` that berth made mounts of their
/// own, so that their trees' mounts are shared.
public func sharedStoreRoots(under path: String) -> [String] {
    var seen = Set<String>()
    return allMounts(under: path).compactMap { point, type in
        guard type != "overlay", FileManager.default.fileExists(atPath: point + "/.berth"), seen.insert(point).inserted else { return nil }
        return point
    }
}
