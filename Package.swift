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
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // SIMD hot loops only. Each function carries its own target attribute and is chosen at run time.
        .target(name: "CKernels"),
        .target(name: "SluiceCore", dependencies: ["CKernels"]),
        .target(name: "SluiceBackends", dependencies: ["SluiceCore", "CKernels"]),
        .target(name: "SluiceWeights", dependencies: ["SluiceCore"]),
        // The sluice: placement planning, streaming with prefetch, budgets, telemetry.
        .target(name: "SluiceMemory", dependencies: ["SluiceCore", "SluiceBackends", "SluiceWeights"]),
        .target(name: "SluiceBench", dependencies: ["SluiceCore", "SluiceBackends", "SluiceWeights", "SluiceMemory"]),
        .executableTarget(
            name: "sluice",
            dependencies: [
                "SluiceBench", "SluiceCore", "SluiceBackends", "SluiceWeights", "SluiceMemory",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Fixture lookup and tolerance checks shared by the test targets.
        .target(name: "SluiceTestSupport", dependencies: ["SluiceCore", "SluiceWeights"]),
        .testTarget(name: "SluiceCoreTests", dependencies: ["SluiceCore", "SluiceWeights", "SluiceTestSupport"]),
        .testTarget(name: "SluiceBackendsTests", dependencies: ["SluiceBackends", "SluiceCore", "SluiceWeights", "SluiceTestSupport"]),
        .testTarget(name: "SluiceWeightsTests", dependencies: ["SluiceWeights", "SluiceCore", "SluiceTestSupport"]),
        .testTarget(name: "SluiceMemoryTests", dependencies: ["SluiceMemory", "SluiceBackends", "SluiceCore", "SluiceWeights", "SluiceTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
