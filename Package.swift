// swift-tools-version:6.0
import PackageDescription

// Numeric modules are compiled for a target CPU: without one, Swift lowers
// `SIMD.addingProduct` to per-lane library calls instead of vector FMAs.
// LOGITCACHE_TARGET_CPU chooses it: `native` (the default: the CPU that builds, x86-64 or
// arm64), a portable level for binaries that run elsewhere (`haswell`: AVX2 and FMA, on every
// x86-64 CPU since Intel Haswell (2013) and AMD Zen; `neoverse-n1` or `apple-m1` on arm64), or empty for no flag at all, as a
// package that depends on these libraries needs (unsafe flags are refused in dependencies;
// pass `-Xswiftc -target-cpu ...` to that build instead).
let targetCPU = Context.environment["LOGITCACHE_TARGET_CPU"] ?? "native"
let native: [SwiftSetting] = targetCPU.isEmpty ? [] : [.unsafeFlags(["-target-cpu", targetCPU])]
// Dynamic exclusivity checks on the format's per-value loops cost ~half the time; the flag that
// removes them is unsafe too, so it goes with the target CPU's.
let uncheckedExclusivity: [SwiftSetting] = targetCPU.isEmpty ? [] : [.unsafeFlags(["-enforce-exclusivity=unchecked"])]

let package = Package(
    name: "LogitCache",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "logitcache", targets: ["logitcache"]),
        // Side-by-side benchmarks, apart from the product command line.
        .executable(name: "logitcache-bench", targets: ["logitcache-bench"]),
        .library(name: "ShardFormat", targets: ["ShardFormat"]),
        .library(name: "Models", targets: ["Models"]),
        // The C ABI (`Schemas/logitcache.h`): the library the Python package and C/C++/Rust load.
        .library(name: "LogitCacheABI", type: .dynamic, targets: ["LogitCacheABI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System-library shims (Debian: liblz4-dev, libzstd-dev, libxxhash-dev).
        .systemLibrary(name: "CLZ4", path: "Sources/CLZ4", pkgConfig: "liblz4",
                       providers: [.apt(["liblz4-dev"]), .brew(["lz4"])]),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"]), .brew(["zstd"])]),
        .systemLibrary(name: "CXXHash", path: "Sources/CXXHash", pkgConfig: "libxxhash",
                       providers: [.apt(["libxxhash-dev"]), .brew(["xxhash"])]),

        // Layers, lowest first, in the order of ARCHITECTURE.md's module table, which says what
        // each may import (tools/check_layers.py checks it).
        .target(name: "Random"),
        .target(name: "Truncation"),
        .target(name: "Kernels", swiftSettings: native),
        .target(name: "Checkpoints"),
        .target(name: "Tokenizers"),
        .target(name: "ScalingLaws", dependencies: ["Random"]),
        .target(name: "Models", dependencies: ["Kernels", "Checkpoints", "Random"], swiftSettings: native),
        .target(name: "ShardFormat", dependencies: ["CLZ4", "CZstd", "CXXHash", "Truncation", "Random"],
                swiftSettings: native + uncheckedExclusivity),
        .target(name: "Capture", dependencies: ["Kernels", "Truncation", "Random"], swiftSettings: native),
        .target(name: "SyntheticData", dependencies: ["ShardFormat", "Truncation", "Random"], swiftSettings: native),
        .target(name: "Corpus", dependencies: ["CXXHash", "CZstd", "ShardFormat", "Tokenizers"]),
        .target(name: "StudentLoader", dependencies: ["ShardFormat", "Truncation", "Random"], swiftSettings: native),
        .target(name: "TeacherPass", dependencies: ["Truncation", "Corpus", "ShardFormat", "Kernels", "Capture", "Models", "Tokenizers"], swiftSettings: native),
        .target(name: "Distillation", dependencies: ["Truncation", "Corpus", "Models", "Capture", "StudentLoader", "Kernels", "Checkpoints"], swiftSettings: native),
        .target(name: "Sweep", dependencies: ["Truncation", "Corpus", "TeacherPass", "Distillation", "StudentLoader", "ShardFormat", "Models", "Capture", "Kernels", "Checkpoints", "ScalingLaws"], swiftSettings: native),

        .target(name: "LogitCacheABI", dependencies: ["ShardFormat", "StudentLoader", "Truncation"], swiftSettings: native),

        // Helpers the two command lines share: JSON output, errors, progress lines, loader flags.
        .target(name: "CommandLineSupport", dependencies: [
            "ShardFormat", "StudentLoader", "Truncation", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(
            name: "logitcache",
            dependencies: [
                "Truncation", "Kernels", "Checkpoints", "Tokenizers", "Models", "ShardFormat", "ScalingLaws", "Capture", "Corpus",
                "TeacherPass", "StudentLoader", "Distillation", "Sweep", "SyntheticData", "CommandLineSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: native),
        .executableTarget(
            name: "logitcache-bench",
            dependencies: [
                "Truncation", "Kernels", "Checkpoints", "Tokenizers", "Models", "ShardFormat", "Capture", "Corpus",
                "TeacherPass", "StudentLoader", "Distillation", "SyntheticData", "CommandLineSupport", "Random", "CZstd",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: native),

        // Test targets: one per module. Fixtures live beside the tests and are found via #filePath.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "ShardFormatTests", dependencies: ["SyntheticData", "TestSupport", "Truncation", "ShardFormat", "Random"], swiftSettings: native),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels"], swiftSettings: native),
        .testTarget(name: "TokenizersTests", dependencies: ["Tokenizers", "Random"], exclude: ["Fixtures"]),
        .testTarget(name: "CheckpointsTests", dependencies: ["Checkpoints"]),
        .testTarget(name: "ScalingLawsTests", dependencies: ["ScalingLaws", "Random"]),
        .testTarget(name: "CommandLineSupportTests", dependencies: ["CommandLineSupport"]),
        .testTarget(name: "CorpusTests", dependencies: ["TestSupport", "Corpus", "ShardFormat"]),
        .testTarget(name: "TeacherPassTests", dependencies: ["TestSupport", "Truncation", "Corpus", "TeacherPass", "Capture", "Checkpoints", "Models", "ShardFormat", "Kernels"], swiftSettings: native),
        .testTarget(name: "StudentLoaderTests", dependencies: ["SyntheticData", "TestSupport", "Truncation", "StudentLoader", "ShardFormat", "Random"], swiftSettings: native),
        .testTarget(name: "DistillationTests", dependencies: ["SyntheticData", "TestSupport", "Truncation", "Distillation", "Models", "Kernels", "Checkpoints", "StudentLoader", "ShardFormat"], swiftSettings: native),
        .testTarget(name: "CaptureTests", dependencies: ["Truncation", "Capture"], swiftSettings: native),
        .testTarget(name: "SweepTests", dependencies: ["SyntheticData", "Truncation", "Sweep", "Distillation", "ScalingLaws", "ShardFormat"], swiftSettings: native),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "Kernels", "Checkpoints", "Random"],
                    swiftSettings: native),
    ],
    swiftLanguageModes: [.v5]
)
