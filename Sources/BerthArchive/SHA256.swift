import BerthSystem
import CCrypto

/// SHA-256 from OpenSSL's libcrypto (through EVP), for `--verify` and for recipes' keys.
/// libcrypto rather than swift-crypto: swift-crypto brings Foundation and ICU into the binary,
/// which made every start of berth 7 ms slower and its resident size three times nspawn's.
public final class SHA256 {
    private let context: OpaquePointer

    public init() {
        context = EVP_MD_CTX_new()
        EVP_DigestInit_ex(context, EVP_sha256(), nil)
    }

    deinit { EVP_MD_CTX_free(context) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        if let base = bytes.baseAddress, !bytes.isEmpty { EVP_DigestUpdate(context, base, bytes.count) }
    }

    public func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }
    public func update(_ text: String) { update(Array(text.utf8)) }

    /// The digest as 64 lower-case hexadecimal digits. The hasher is spent afterwards.
    public func finalize() -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context, &digest, &length)
        return Hex.encode(digest.prefix(Int(length)))
    }

    /// Whether `text` is a digest as `finalize` writes it.
    public static func isDigest(_ text: String) -> Bool { Hex.isLowercase(text, digits: 64) }

    /// The digest of `text`.
    public static func hex(_ text: String) -> String {
        let hasher = SHA256()
        hasher.update(text)
        return hasher.finalize()
    }
}
