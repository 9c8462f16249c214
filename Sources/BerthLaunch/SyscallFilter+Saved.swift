import BerthSystem
import CSeccomp
import Glibc
import SystemPackage

extension SyscallFilter {
    /// A running machine's program, made by the first `berth shell` into it and kept beside its
    /// record (`NAME.filter`, root's alone, gone with the record) for every later one: making it
    /// again is a fifth of a shell's start. The file names the machine's leader (its pid and start
    /// time) and the capabilities the program was made for, so a file a killed supervisor left
    /// is never taken for a new machine's: a mismatch is made again and replaces it.
    struct Saved {
        let path: FilePath
        let key: String

        init(path: FilePath, leader: pid_t, leaderStart: UInt64, capabilities: Capabilities, changes: SyscallFilterChanges) {
            self.path = path
            key = "berth-filter leader=\(leader) start=\(leaderStart) capabilities=\(String(capabilities.rawValue, radix: 16))"
                + (changes.isEmpty ? "" : " changes=\(changes.encoded)") + "\n"
        }

        /// The saved program, or one made now (and saved, best effort).
        func program(capabilities: Capabilities, changes: SyscallFilterChanges) -> [sock_filter] {
            if let saved = load() { return saved }
            let code = SyscallFilter.program(capabilities: capabilities, changes: changes)
            save(code)
            return code
        }

        private func load() -> [sock_filter]? {
            let instruction = MemoryLayout<sock_filter>.size
            guard let bytes = try? Descriptor.open(path, O_RDONLY).readAll(limit: key.utf8.count + Int(BPF_MAXINSNS) * instruction + 1),
                  bytes.starts(with: key.utf8) else { return nil }
            let body = bytes.dropFirst(key.utf8.count)
            guard !body.isEmpty, body.count % instruction == 0, body.count / instruction <= Int(BPF_MAXINSNS) else { return nil }
            var code = [sock_filter](repeating: sock_filter(), count: body.count / instruction)
            code.withUnsafeMutableBytes { $0.copyBytes(from: body) }
            return code
        }

        /// Written whole, then renamed into place: a reader finds the old file or the new one.
        private func save(_ code: [sock_filter]) {
            let temporary = FilePath(path.string + ".new-\(getpid())")
            guard let file = try? Descriptor.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode: 0o600) else { return }
            let written = (try? file.writeAll(key)) != nil && code.withUnsafeBytes { (try? file.writeAll($0)) != nil }
            let renamed = written && temporary.withPlatformString { t in path.withPlatformString { rename(t, $0) == 0 } }
            if !renamed { _ = temporary.withPlatformString { unlink($0) } }
        }
    }
}
