// swift-tools-version: 6.0
// distill: a distributed knowledge-distillation trainer. Targets read bottom-up like ../shared/DESIGN.md.
import PackageDescription

// Kernels rely on explicit SIMD; without a CPU target SwiftPM compiles for baseline x86-64 (SSE2, no FMA).
// haswell = AVX2 + FMA (every x86 server since 2013, AMD Zen included) keeps the binary portable across current x86 servers.
#if arch(x86_64)
let cpuFlags: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let cpuFlags: [SwiftSetting] = []
#endif
// The numeric kernels are compiled optimized in debug builds too: unoptimized, dequantizing a real teacher runs ~25x
// slower, and the tests that run real models (SmolLM2, Gemma 3) would dominate the suite. Everything else stays -Onone.
let kernelFlags: [SwiftSetting] = cpuFlags + [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "distill",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "distill", targets: ["KDCLI"])
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .target(name: "KDCore", swiftSettings: cpuFlags),
        .target(name: "KDConfig", dependencies: ["KDCore", "Yams"], swiftSettings: cpuFlags),
        // bf16 GEMM (AVX512-BF16 with runtime dispatch, and its portable emulation); optimized in debug builds too
        .target(name: "CKDKernels", cSettings: [.unsafeFlags(["-O2"])]),
        .target(name: "KDOps", dependencies: ["KDCore", "CBLAS", "CKDKernels"], swiftSettings: kernelFlags),
        .target(name: "KDLoss", dependencies: ["KDCore", "KDConfig", "KDOps", "CKDKernels"], swiftSettings: cpuFlags),
        .target(name: "KDQuant", dependencies: ["KDCore", "KDConfig", "KDOps", "CBLAS", "CKDKernels"], swiftSettings: kernelFlags),
        .target(name: "KDModel", dependencies: ["KDCore", "KDConfig", "KDOps", "KDQuant", "KDLoss"], swiftSettings: cpuFlags),
        .target(name: "KDFormats", dependencies: ["KDCore", "KDConfig", "KDOps", "KDQuant", "KDModel"], swiftSettings: cpuFlags),
        .target(name: "KDData", dependencies: ["KDCore", "KDConfig"], swiftSettings: cpuFlags),
        .target(name: "KDComm", dependencies: ["KDCore", "CMPI"], swiftSettings: cpuFlags),
        .target(
            name: "KDCheckpoint", dependencies: ["KDCore", "KDConfig", "KDQuant", "KDModel", "KDFormats"], swiftSettings: cpuFlags),
        .target(
            name: "KDTrain", dependencies: ["KDCore", "KDConfig", "KDOps", "KDLoss", "KDQuant", "KDModel", "KDFormats", "KDData", "KDComm", "KDCheckpoint"],
            swiftSettings: cpuFlags),
        .executableTarget(
            name: "KDCLI",
            dependencies: [
                "KDCore", "KDConfig", "KDOps", "KDLoss", "KDQuant", "KDModel", "KDFormats", "KDData", "KDComm", "KDCheckpoint", "KDTrain", "CBLAS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: cpuFlags),
        .target(name: "KDTestSupport", dependencies: ["KDCore", "KDConfig"], swiftSettings: cpuFlags),
        .testTarget(name: "KDCoreTests", dependencies: ["KDCore", "KDTestSupport"], swiftSettings: cpuFlags),
        .testTarget(name: "KDOpsTests", dependencies: ["KDOps", "KDCore", "KDTestSupport", "CKDKernels", "CBLAS"], swiftSettings: cpuFlags),
        .testTarget(name: "KDConfigTests", dependencies: ["KDConfig", "KDCore"], swiftSettings: cpuFlags),
        .testTarget(name: "KDLossTests", dependencies: ["KDLoss", "KDConfig", "KDOps", "KDTestSupport", "CKDKernels"], swiftSettings: cpuFlags),
        .testTarget(name: "KDQuantTests", dependencies: ["KDQuant", "KDTestSupport"], swiftSettings: cpuFlags),
        .testTarget(
            name: "KDFormatsTests", dependencies: ["KDFormats", "KDModel", "KDQuant", "KDOps", "KDTestSupport", "CKDKernels"], swiftSettings: cpuFlags),
        .testTarget(
            name: "KDModelTests", dependencies: ["KDModel", "KDOps", "KDLoss", "KDTestSupport", "CKDKernels"], swiftSettings: cpuFlags),
        .testTarget(
            name: "KDCheckpointTests", dependencies: ["KDCheckpoint", "KDModel", "KDTestSupport"], swiftSettings: cpuFlags),
        .testTarget(
            name: "KDTrainTests", dependencies: ["KDTrain", "KDOps", "KDData", "KDComm", "KDModel", "KDCheckpoint", "KDTestSupport"],
            swiftSettings: cpuFlags),
        .testTarget(name: "KDCLITests", dependencies: ["KDCLI", "KDConfig", "KDData", "KDFormats", "KDModel", "KDCheckpoint", "KDOps", "KDTestSupport"], swiftSettings: cpuFlags),
    ],
    // Swift 6: data races are compile errors. The kernels' raw buffers cross threads in one audited place
    // (KDCore/Parallel.swift, RangeWork); process-wide settings are atomics, the shared panel buffer a Mutex.
    swiftLanguageModes: [.v6]
)
