import BerthSystem

/// Why a store operation failed, in a sentence that says what to do about it. Control
/// characters in it (from a name, a record, an archive) are escaped: it stays one line.
public struct StoreError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = Printable.escaping(message) }
    public var description: String { message }
}
