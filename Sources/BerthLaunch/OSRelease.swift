import BerthSystem
import Glibc
import SystemPackage

/// os-release(5): KEY=VALUE lines, a value's quotes taken off.
public enum OSRelease {
    static func fields(_ bytes: [UInt8]) -> [(key: Substring, value: String)] {
        String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { line in
            guard let equals = line.firstIndex(of: "="), !line.hasPrefix("#") else { return nil }
            var value = line[line.index(after: equals)...]
            if value.count >= 2, let quote = value.first, quote == "\"" || quote == "'", value.last == quote { value = value.dropFirst().dropLast() }
            return (line[..<equals], String(value))
        }
    }

    /// The fields of the file under `root` (`/proc/PID/root`, or "" for the host's), from
    /// etc/os-release or else usr/lib/os-release; nil when neither is there.
    static func read(under root: String) -> [(key: Substring, value: String)]? {
        for file in ["etc/os-release", "usr/lib/os-release"] {
            if let bytes = try? Descriptor.open(FilePath("\(root)/\(file)"), O_RDONLY).readAll(limit: 16384) { return fields(bytes) }
        }
        return nil
    }

    /// What nspawn tells a container of its host, as environment variables: `container_host_id`,
    /// `container_host_version_id` and the like, for each of those fields the host's os-release has.
    public static func hostIdentity() -> [String] {
        let host = read(under: "") ?? []
        return ["ID", "VERSION_ID", "BUILD_ID", "VARIANT_ID", "IMAGE_ID", "IMAGE_VERSION"].compactMap { key in
            host.last { $0.key == key }.map { "container_host_\(key.lowercased())=\($0.value)" }
        }
    }
}
