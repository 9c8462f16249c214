// swift-tools-version:6.0
import PackageDescription

// Both executables are linked fully static: no dynamic loader, no symbol lookups in libstdc++
// and libcrypto, no relocation of an 80 MB image at each start. That took `berth --version`
// from 15.7 ms to 5.9 and an empty start of berth-stage from 3.9 ms to 1.3 (hyperfine); a
// container start runs berth once and berth-stage twice. A container's users come from the
// image's own files; only an archive's ACL naming a user without a number (GNU tar's) is looked
// up through glibc's NSS, which a static binary loads from the glibc it was built against.
let fullyStatic = LinkerSetting.unsafeFlags(["-static-executable"])

// The static archives of Foundation (which TOMLKit brings) and what they need, in one group.
// `swift build --static-swift-stdlib` links them by itself; the test build (`swift test`
// cannot use the static standard library: Swift Testing is a shared library) does not.
let foundationArchives = LinkerSetting.unsafeFlags([
    "--start-group", "-lFoundation", "-lFoundationEssentials", "-lFoundationInternationalization", "-l_FoundationICU",
    "-l_FoundationCShims", "-l_FoundationCollections", "-lCoreFoundation", "-lswiftDispatch", "-ldispatch",
    "-lBlocksRuntime", "-lstdc++", "-lm", "--end-group",
].flatMap { ["-Xlinker", $0] })

let testLanguageMode: [SwiftSetting] = [.swiftLanguageMode(.v5)]

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
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        .target(name: "CBerth"),
        .target(
            name: "BerthSystem",
            dependencies: ["CBerth", .product(name: "SystemPackage", package: "swift-system")]
        ),
        .target(
            name: "BerthArchive",
            dependencies: ["CArchive", "CCrypto", "BerthSystem", "CBerth", .product(name: "SystemPackage", package: "swift-system")],
            // libarchive's static archive pulls in only the formats and filters berth calls, and
            // these libraries for them (the shared library brings libxml2 and ICU too). They
            // follow it, as a static link needs.
            linkerSettings: [
                .unsafeFlags(["-l:libarchive.a", "-lnettle", "-lacl", "-llzma", "-lzstd", "-llz4", "-lbz2", "-lz"].flatMap { ["-Xlinker", $0] }),
            ]
        ),
        .target(name: "BerthStore", dependencies: ["BerthArchive", "BerthSystem", .product(name: "SystemPackage", package: "swift-system")]),
        .target(
            name: "BerthLaunch",
            dependencies: ["BerthSystem", "CBerth", "CSeccomp", .product(name: "SystemPackage", package: "swift-system")],
            // The static archive, so berth-stage stays fully static (libseccomp needs nothing more).
            linkerSettings: [.unsafeFlags(["-Xlinker", "-l:libseccomp.a"])]
        ),
        .target(
            name: "BerthRecipe",
            dependencies: ["BerthStore", "BerthLaunch", "BerthArchive", "BerthSystem",
                           .product(name: "TOMLKit", package: "TOMLKit"), .product(name: "SystemPackage", package: "swift-system")]
        ),
        .executableTarget(
            name: "berth",
            dependencies: [
                "BerthRecipe", "BerthStore", "BerthLaunch", "BerthArchive", "BerthSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            linkerSettings: [fullyStatic, foundationArchives]
        ),
        .executableTarget(name: "berth-stage", dependencies: ["BerthLaunch"], linkerSettings: [fullyStatic]),
        .target(
            name: "BerthTestSupport",
            dependencies: ["BerthArchive", "BerthSystem", "CArchive", .product(name: "SystemPackage", package: "swift-system")],
            path: "Tests/BerthTestSupport",
            swiftSettings: testLanguageMode
        ),
        .testTarget(
            name: "BerthSystemTests",
            dependencies: ["BerthSystem", "BerthTestSupport", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: testLanguageMode
        ),
        .testTarget(
            name: "BerthArchiveTests",
            dependencies: ["BerthArchive", "BerthTestSupport", "BerthSystem", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: testLanguageMode
        ),
        .testTarget(
            name: "BerthStoreTests",
            dependencies: ["BerthStore", "BerthTestSupport", "BerthArchive", "BerthSystem", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: testLanguageMode
        ),
        // Unit tests of the launch and of recipes: they need no store (the network's need root).
        .testTarget(
            name: "BerthLaunchTests",
            dependencies: ["BerthLaunch", "BerthSystem", "BerthTestSupport", "CSeccomp", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: testLanguageMode
        ),
        .testTarget(
            name: "BerthRecipeTests",
            dependencies: ["BerthRecipe", "BerthTestSupport", "BerthSystem", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: testLanguageMode
        ),
        // Drives the built binaries as a user does. `swift test` builds them (it builds every
        // product); depending on them would link their fully static settings into the tests.
        // Probes/ holds C programs the tests compile themselves (gcc -static), to run inside containers.
        .testTarget(
            name: "BerthIntegrationTests",
            dependencies: ["BerthTestSupport", "BerthArchive", "BerthSystem", .product(name: "SystemPackage", package: "swift-system")],
            exclude: ["Probes"],
            swiftSettings: testLanguageMode
        ),
    ],
    // The sources are checked for data races (Swift 6); the tests, whose shared fixtures are
    // statics made once per process, stay in Swift 5 mode.
    swiftLanguageModes: [.v6]
)
