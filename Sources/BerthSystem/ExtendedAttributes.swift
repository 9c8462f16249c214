import CBerth
import Glibc
import SystemPackage

/// Extended attributes of open files and of directory entries, never through a final symlink.
extension Descriptor {
    public func setExtendedAttribute(_ name: String, _ value: UnsafeRawBufferPointer) throws {
        try retryingInterrupts("fsetxattr", path: name) {
            CBerth.fsetxattr(rawValue, name, value.baseAddress, value.count, 0)
        }
    }

    public func extendedAttributeNames() throws -> [String] {
        try listAttributes { CBerth.flistxattr(rawValue, $0, $1) }
    }

    public func extendedAttribute(_ name: String) throws -> [UInt8] {
        try readAttribute(name) { CBerth.fgetxattr(rawValue, name, $0, $1) }
    }
}

extension Directory {
    // procPath(_:) (Directory.swift) reaches entries that cannot be opened for fsetxattr
    // (symlinks, device nodes, FIFOs), and the l*xattr calls do not follow a final symlink.
    public func setExtendedAttribute(_ name: String, of entry: FilePath, _ value: UnsafeRawBufferPointer) throws {
        _ = try procPath(entry).withPlatformString { path in
            try retryingInterrupts("lsetxattr", path: child(entry) + " " + name) {
                CBerth.lsetxattr(path, name, value.baseAddress, value.count, 0)
            }
        }
    }

    public func extendedAttributeNames(of entry: FilePath) throws -> [String] {
        try procPath(entry).withPlatformString { path in try listAttributes { CBerth.llistxattr(path, $0, $1) } }
    }

    public func extendedAttribute(_ name: String, of entry: FilePath) throws -> [UInt8] {
        try procPath(entry).withPlatformString { path in try readAttribute(name) { CBerth.lgetxattr(path, name, $0, $1) } }
    }
}

private func listAttributes(_ list: (UnsafeMutablePointer<CChar>?, Int) -> Int) throws -> [String] {
    while true {
        let size = list(nil, 0)
        if size < 0 {
            if Glibc.errno == ENOTSUP { return [] }
            throw SystemError.last("listxattr")
        }
        if size == 0 { return [] }
        var buffer = [CChar](repeating: 0, count: size)
        let n = list(&buffer, size)
        if n < 0 {
            if Glibc.errno == ERANGE { continue }  // grew meanwhile
            throw SystemError.last("listxattr")
        }
        return buffer[..<n].split(separator: 0).map { chars in
            String(decoding: chars.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}

private func readAttribute(_ name: String, _ get: (UnsafeMutableRawPointer?, Int) -> Int) throws -> [UInt8] {
    while true {
        let size = get(nil, 0)
        if size < 0 { throw SystemError.last("getxattr", path: name) }
        var buffer = [UInt8](repeating: 0, count: size)
        let n = buffer.withUnsafeMutableBytes { get($0.baseAddress, size) }
        if n < 0 {
            if Glibc.errno == ERANGE { continue }
            throw SystemError.last("getxattr", path: name)
        }
        return Array(buffer[..<n])
    }
}
