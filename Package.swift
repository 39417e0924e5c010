// swift-tools-version:6.0
import PackageDescription

// Layers, one way down (../shared/DESIGN.md §1):
// CKernels → SluiceCore → SluiceBackends → SluiceWeights → (memory, models, pipelines) → sluice
let package = Package(
    name: "Sluice",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sluice", targets: ["sluice"]),
        .library(name: "SluiceCore", targets: ["SluiceCore"]),
        .library(name: "SluiceBackends", targets: ["SluiceBackends"]),
        .library(name: "SluiceWeights", targets: ["SluiceWeights"]),
        .library(name: "SluiceMemory", targets: ["SluiceMemory"]),
        .library(name: "SluiceText", targets: ["SluiceText"]),
        .library(name: "SluiceModels", targets: ["SluiceModels"]),
        .library(name: "SluicePipelines", targets: ["SluicePipelines"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // SIMD hot loops only. Each function carries its own target attribute and is chosen at run time.
        .target(name: "CKernels"),
        .target(name: "SluiceCore", dependencies: ["CKernels"]),
        .target(name: "SluiceBackends", dependencies: ["SluiceCore", "CKernels"]),
        .target(name: "SluiceWeights", dependencies: ["SluiceCore"]),
        // The sluice: placement planning, streaming with prefetch, budgets, telemetry.
        .target(name: "SluiceMemory", dependencies: ["SluiceCore", "SluiceBackends", "SluiceWeights"]),
        // Tokenizers and text encoders.
        .target(name: "SluiceText", dependencies: ["SluiceCore", "SluiceBackends", "SluiceWeights"]),
        // One folder per model family; a model file reads like the paper's diagram.
        .target(name: "SluiceModels", dependencies: ["SluiceCore", "SluiceBackends", "SluiceWeights"]),
        // libpng from Debian (libpng-dev).
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        // Schedulers, torch's RNG, model loading, the denoising loop, PNG output.
        .target(name: "SluicePipelines", dependencies: [
            "SluiceCore", "SluiceBackends", "SluiceWeights", "SluiceMemory", "SluiceText", "SluiceModels", "CPNG", "CKernels",
        ]),
        // `sluice serve`: job queue, progress events, gallery, status, OpenAI/A1111 APIs, web UI.
        .target(name: "SluiceServer", dependencies: [
            "SluiceCore", "SluiceBackends", "SluiceWeights", "SluiceMemory", "SluicePipelines", "CPNG",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "SluiceBench", dependencies: ["SluiceCore", "SluiceBackends", "SluiceWeights", "SluiceMemory", "SluiceModels"]),
        .executableTarget(
            name: "sluice",
            dependencies: [
                "SluiceBench", "SluiceCore", "SluiceBackends", "SluiceWeights", "SluiceMemory", "SluicePipelines", "SluiceServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Fixture lookup and tolerance checks shared by the test targets.
        .target(name: "SluiceTestSupport", dependencies: ["SluiceCore", "SluiceWeights"]),
        .testTarget(name: "SluiceCoreTests", dependencies: ["SluiceCore", "SluiceWeights", "SluiceTestSupport"]),
        .testTarget(name: "SluiceBackendsTests", dependencies: ["SluiceBackends", "SluiceCore", "SluiceWeights", "SluiceTestSupport"]),
        .testTarget(name: "SluiceWeightsTests", dependencies: ["SluiceWeights", "SluiceCore", "SluiceTestSupport"]),
        .testTarget(name: "SluiceTextTests", dependencies: ["SluiceText", "SluiceCore", "SluiceBackends", "SluiceWeights", "SluiceTestSupport"]),
        .testTarget(name: "SluiceModelsTests", dependencies: ["SluiceModels", "SluiceCore", "SluiceBackends", "SluiceWeights", "SluiceTestSupport"]),
        .testTarget(name: "SluicePipelinesTests", dependencies: ["SluicePipelines", "CPNG", "SluiceText", "SluiceModels", "SluiceMemory", "SluiceCore", "SluiceBackends", "SluiceWeights", "SluiceTestSupport"]),
        .testTarget(name: "SluiceServerTests", dependencies: [
            "SluiceServer", "SluicePipelines", "SluiceCore", "CPNG", "SluiceTestSupport",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ]),
        .testTarget(name: "SluiceMemoryTests", dependencies: ["SluiceMemory", "SluiceBackends", "SluiceCore", "SluiceWeights", "SluiceTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
