// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "berth",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "berth", targets: ["berth"]),
        .executable(name: "berth-stage", targets: ["berth-stage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        .systemLibrary(name: "CArchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .target(name: "CBerth"),
        .target(
            name: "BerthSystem",
            dependencies: ["CBerth", .product(name: "SystemPackage", package: "swift-system")]
        ),
        .target(
            name: "BerthArchive",
            dependencies: ["CArchive", "CCrypto", "BerthSystem"],
            // libarchive is linked statically: the shared library brings libxml2 and ICU (for
            // formats berth never reads), whose loading cost 4.7 ms at every start of berth, and a
            // container launch starts berth twice. The static archive pulls in only the
            // formats and filters berth calls, and these libraries for them.
            linkerSettings: [
                .unsafeFlags(["-Xlinker", "-l:libarchive.a"]),
                .linkedLibrary("nettle"), .linkedLibrary("acl"), .linkedLibrary("lzma"), .linkedLibrary("zstd"),
                .linkedLibrary("lz4"), .linkedLibrary("bz2"), .linkedLibrary("z"),
            ]
        ),
        .target(name: "BerthStore", dependencies: ["BerthArchive", "BerthSystem"]),
        .target(name: "BerthLaunch", dependencies: ["BerthSystem", "CBerth"]),
        .target(
            name: "BerthRecipe",
            dependencies: ["BerthStore", "BerthLaunch", "BerthArchive", "BerthSystem",
                           .product(name: "TOMLKit", package: "TOMLKit")]
        ),
        .executableTarget(
            name: "berth",
            dependencies: [
                "BerthRecipe", "BerthStore", "BerthLaunch",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .executableTarget(name: "berth-stage", dependencies: ["BerthLaunch"]),
        .target(
            name: "BerthTestSupport",
            dependencies: ["BerthArchive", "BerthSystem", "CArchive"],
            path: "Tests/BerthTestSupport"
        ),
        .testTarget(name: "BerthSystemTests", dependencies: ["BerthSystem", "BerthTestSupport"]),
        .testTarget(name: "BerthArchiveTests", dependencies: ["BerthArchive", "BerthTestSupport"]),
        .testTarget(name: "BerthStoreTests", dependencies: ["BerthStore", "BerthTestSupport"]),
        // Drives the built binary as a user does; depending on it makes `swift test` build it.
        .testTarget(name: "BerthIntegrationTests", dependencies: ["berth", "berth-stage", "BerthTestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)
