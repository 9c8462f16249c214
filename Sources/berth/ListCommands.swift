import ArgumentParser
import BerthStore
import BerthSystem
import FoundationEssentials
import Glibc

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the images in the store.")

    @OptionGroup var store: StoreOptions
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Measure the usage of directory images not measured since they last ran writable.") var usage = false
    @Flag(name: .customLong("no-legend"), help: "Print the rows only: no header, no count, nothing when there are none.")
    var noLegend = false

    func run() throws {
        let images = try StoreOptions.open(store.store, access: .read).images(measuringUsage: usage)
        if json {
            try printJSON(images.map(ImageRecord.init))
            return
        }
        guard !images.isEmpty else {
            if !noLegend { print("No images.") }
            return
        }
        let rows = images.map { image in
            [image.name, image.kind.rawValue, image.readOnly ? "yes" : "no", image.usage.map(formatSize) ?? "-",
             formatSize(image.sharedUsage), formatDate(image.created), image.parent ?? "-"]
        }
        printTable(header: ["NAME", "KIND", "RO", "USAGE", "SHARED", "CREATED", "PARENT"], rows: rows, legend: !noLegend)
        if !noLegend { print("\n\(images.count) image\(images.count == 1 ? "" : "s") listed.") }
    }
}

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one image in full.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The image.") var name: String
    @Flag(help: "Print JSON.") var json = false
    @Flag(name: .customLong("no-legend"), help: "Print the values only, one a line, in the order the labelled form has.")
    var noLegend = false

    func run() throws {
        let image = try StoreOptions.open(store.store, access: .read).image(try ImageName(name))
        if json {
            try printJSON(ImageRecord(image))
            return
        }
        let lines: [(String, String)] = [
            ("Name", image.name), ("Kind", image.kind.rawValue), ("Path", image.path),
            ("OS", image.operatingSystem ?? "-"), ("Description", image.description ?? "-"), ("Read-only", image.readOnly ? "yes" : "no"),
            ("Usage", image.usage.map(formatSize) ?? "-"), ("Shared", formatSize(image.sharedUsage)),
            ("Created", formatDate(image.created)),
            ("Parent", image.parent ?? "-"),
            ("Layers", image.layers.isEmpty ? "- (a plain directory tree)" : image.layers.joined(separator: ", ")),
            ("Dependants", image.dependants.isEmpty ? "-" : image.dependants.joined(separator: ", ")),
        ]
        if noLegend {
            // One line each: escaping turns a newline in a value (a description) into \x0a.
            for (_, value) in lines { print(Printable.escaping(value)) }
            return
        }
        for (key, value) in lines { print("\(String(repeating: " ", count: 11 - key.count))\(key): \(Printable.escaping(value))") }
    }
}

/// The JSON form of an image, field names as `machinectl list-images -o json` spells the ones it has.
struct ImageRecord: Encodable {
    var name: String
    var type: String
    var readOnly: Bool
    var usage: Int64?
    var shared: Int64
    var created: String
    var parent: String?
    var path: String
    var os: String?
    var layers: [String]
    var dependants: [String]
    var description: String?

    init(_ image: ImageInfo) {
        name = image.name
        type = image.kind.rawValue
        readOnly = image.readOnly
        usage = image.usage
        shared = image.sharedUsage
        created = formatDate(image.created)
        parent = image.parent
        path = image.path
        os = image.operatingSystem
        layers = image.layers
        dependants = image.dependants
        description = image.description
    }

    enum CodingKeys: String, CodingKey {
        case name, type, readOnly = "ro", usage, shared, created, parent, path, os, layers, dependants, description
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(type, forKey: .type)
        try c.encode(readOnly, forKey: .readOnly)
        try c.encode(usage, forKey: .usage)  // null when not measured
        try c.encode(shared, forKey: .shared)
        try c.encode(created, forKey: .created)
        try c.encode(parent, forKey: .parent)  // null, not absent, when there is none
        try c.encode(path, forKey: .path)
        try c.encode(os, forKey: .os)
        try c.encode(layers, forKey: .layers)
        try c.encode(dependants, forKey: .dependants)
        try c.encode(description, forKey: .description)
    }
}
