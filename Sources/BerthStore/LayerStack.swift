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
    /// The id of the image this one was cloned or snapshotted from.
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

    /// nil when a required key is missing or a layer name is not one berth makes.
    init?(decoding text: String) {
        var fields: [Substring: Substring] = [:]
        for line in text.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { return nil }
            fields[line[..<eq]] = line[line.index(after: eq)...]
        }
        guard let id = fields["id"], let created = fields["created"].flatMap({ Int64($0) }),
              let layers = fields["layers"], let upper = fields["upper"] else { return nil }
        self.id = String(id)
        self.created = created
        self.parent = fields["parent"].map(String.init)
        self.readOnly = fields["read-only"] == "1"
        self.layers = layers.split(separator: " ").map(String.init)
        self.upper = String(upper)
        self.description = fields["description"].map(String.init)
        self.recipe = fields["recipe"].map(String.init)
        guard !self.layers.isEmpty, allLayers.allSatisfy(Self.isLayerName) else { return nil }
    }

    /// Build cache keys are SHA-256 digests in hexadecimal.
    static func isCacheKey(_ key: String) -> Bool {
        SHA256.isDigest(key)
    }

    /// Layer names are berth's own random hexadecimal: nothing in a record can point elsewhere.
    static func isLayerName(_ name: String) -> Bool {
        Hex.isLowercase(name, digits: 12)
    }
}
