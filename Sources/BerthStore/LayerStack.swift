import BerthArchive
import BerthSystem

/// The record of a layered image, kept in `ROOT/.berth/images/NAME/image`: its read-only
/// layers, bottom first, and its own writable layer on top. One `key=value` per line, so a
/// person can read it and a crash cannot leave half of it (it is replaced by rename).
struct LayerStack: Equatable {
    /// Stable across renames: clones name their parent by it.
    var id: String
    /// Seconds since the epoch.
    var created: Int64
    /// The id of the image this one was cloned or snapshotted from, or built on.
    var parent: String?
    var readOnly: Bool
    /// Frozen layers, bottom first: never written again while this record names them.
    var layers: [String]
    /// The image's own writable layer; no other image stacks on it.
    var upper: String
    /// A line of text for `show` (recipes set it).
    var description: String?
    /// The recipe the image was built from; `berth build` replaces only images it built.
    var recipe: String?

    /// Every layer the image needs, bottom first, its own writable one last.
    var allLayers: [String] { layers + [upper] }

    /// No record berth writes comes near this: a bigger one is not berth's.
    static let maxSize = 1 << 20

    func encoded() -> String {
        var lines = ["id=\(id)", "created=\(created)", "read-only=\(readOnly ? 1 : 0)",
                     "layers=\(layers.joined(separator: " "))", "upper=\(upper)"]
        if let parent { lines.append("parent=\(parent)") }
        if let description { lines.append("description=\(description)") }
        if let recipe { lines.append("recipe=\(recipe)") }
        return lines.joined(separator: "\n") + "\n"
    }

    init(id: String, created: Int64, parent: String?, readOnly: Bool, layers: [String], upper: String,
         description: String? = nil, recipe: String? = nil) {
        self.id = id
        self.created = created
        self.parent = parent
        self.readOnly = readOnly
        self.layers = layers
        self.upper = upper
        self.description = description
        self.recipe = recipe
    }

    /// Why a record's text is not one berth wrote.
    struct DecodingError: Error {
        var reason: String
        init(_ reason: String) { self.reason = reason }
    }

    private static let keys: Set<Substring> = ["id", "created", "read-only", "layers", "upper", "parent", "description", "recipe"]

    /// Reads only what `encoded` writes: every key once, ids and layer names as berth makes
    /// them, no layer twice. Anything else is refused with the reason, never half-read: a layer
    /// name from a record becomes a path under `.berth/layers`, and a record gc misreads could
    /// free a layer an image needs.
    init(decoding text: String) throws {
        guard !text.isEmpty else { throw DecodingError("it is empty") }
        guard text.utf8.count <= Self.maxSize else { throw DecodingError("it is larger than \(Self.maxSize) bytes") }
        guard !text.utf8.contains(0) else { throw DecodingError("it holds a NUL byte") }
        var fields: [Substring: Substring] = [:]
        for line in text.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { throw DecodingError("it holds a line berth does not write") }
            let key = line[..<eq]
            guard Self.keys.contains(key) else { throw DecodingError("it holds a key berth does not write") }
            guard fields.updateValue(line[line.index(after: eq)...], forKey: key) == nil else {
                throw DecodingError("it gives '\(key)' twice")
            }
        }
        guard let id = fields["id"], let createdText = fields["created"], let layers = fields["layers"],
              let upper = fields["upper"] else { throw DecodingError("it lacks a key berth writes") }
        guard let created = Int64(createdText) else { throw DecodingError("its 'created' is not a number") }
        guard Self.isLayerName(String(id)), fields["parent"].map({ Self.isLayerName(String($0)) }) ?? true else {
            throw DecodingError("its id or parent is not an id berth makes")
        }
        guard ["0", "1", nil].contains(fields["read-only"]) else { throw DecodingError("its 'read-only' is neither 0 nor 1") }
        self.id = String(id)
        self.created = created
        self.parent = fields["parent"].map(String.init)
        self.readOnly = fields["read-only"] == "1"
        self.layers = layers.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        self.upper = String(upper)
        self.description = fields["description"].map(String.init)
        self.recipe = fields["recipe"].map(String.init)
        guard !layers.isEmpty, allLayers.allSatisfy(Self.isLayerName) else {
            throw DecodingError("it holds a layer name berth does not write")
        }
        guard Set(allLayers).count == allLayers.count else { throw DecodingError("it names a layer twice") }
    }

    /// Build cache keys are SHA-256 digests in hexadecimal.
    static func isCacheKey(_ key: String) -> Bool {
        SHA256.isDigest(key)
    }

    /// Layer names (and image ids) are berth's own random hexadecimal: nothing in a record can
    /// point elsewhere.
    static func isLayerName(_ name: String) -> Bool {
        Hex.isLowercase(name, digits: 12)
    }
}
