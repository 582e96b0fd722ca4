// swift-tools-version:6.0
import PackageDescription

/// Airlock: a GitLab Runner custom executor that hands jobs short-lived, scoped cloud credentials.
/// Modules follow the data path (see README "How a job flows"): imports point down the path only.
let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny"), .enableUpcomingFeature("MemberImportVisibility"), .enableUpcomingFeature("InternalImportsByDefault")]

/// The four executables the runner starts for every job link fully statically, as position-independent
/// executables (static-pie, so ASLR stays): no dynamic loader, no shared glibc or libstdc++ to map and
/// relocate, no exported symbol table (issue 19: about 1 to 1.5 ms less per stage, measured side by
/// side; README "Benchmarks"). Full RELRO (-z now). Relative relocations packed (DT_RELR, which the
/// glibc they carry, 2.36, applies at start-up): 18 KB to read instead of 2.3 MB of RELA entries,
/// about 0.4 ms less per stage (perf stat, 60 runs of config_exec side by side). Release builds
/// only. The linker is lld (gold cannot link static-pie) through scripts/ld-static-pie, which drops
/// the run path SwiftPM adds (glibc's static-pie start-up asserts there is none). These executables
/// look up no user, group or host name (glibc would load its shared NSS modules for that): key files are checked with lstat,
/// not FileManager.attributesOfItem. They carry their own glibc: rebuild after a glibc security
/// update. airlock-federate and airlock-endpoint link libcurl and stay dynamic.
let stageLinking: [LinkerSetting] = [
    .unsafeFlags(["-static-executable", "-Xclang-linker", "-static-pie", "-Xlinker", "-z", "-Xlinker", "now",
                  "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
                  "-Xclang-linker", "--ld-path=\(Context.packageDirectory)/scripts/ld-static-pie"],
                 .when(platforms: [.linux], configuration: .release)),
]

let package = Package(
    name: "airlock",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "airlock", targets: ["airlock"]),
        .executable(name: "airlock-config", targets: ["airlock-config"]),
        .executable(name: "airlock-prepare", targets: ["airlock-prepare"]),
        .executable(name: "airlock-run", targets: ["airlock-run"]),
        .executable(name: "airlock-cleanup", targets: ["airlock-cleanup"]),
        .executable(name: "airlock-federate", targets: ["airlock-federate"]),
        .executable(name: "airlock-endpoint", targets: ["airlock-endpoint"]),
        .executable(name: "airlock-dev", targets: ["airlock-dev"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.8.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", exact: "0.6.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "4.5.2"..<"5.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", exact: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        // Hummingbird's own NIO, named for NIOPosix: airlock-endpoint runs Swift concurrency on its event loop.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
    ],
    targets: [
        .target(name: "RunnerContract", swiftSettings: strict),
        // C: keyctl(2) for the stage's own session keyring (syscall(2) is variadic), the tenant spawn,
        // the masker's inner loop, and stat(2) (glibc's struct stat is owned by different clang modules
        // in debug and static builds, which MemberImportVisibility would make each file name).
        .target(name: "CSupport"),
        .target(name: "Identity", dependencies: [
            "RunnerContract", "CSupport",
            .product(name: "JWTKit", package: "jwt-kit"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
        ], swiftSettings: strict),
        .target(name: "Policy", dependencies: ["Identity"], swiftSettings: strict),
        // TOML read table by table, every key and line accounted for: the syntax each provider's
        // own configuration is read with.
        .target(name: "ConfigSyntax", dependencies: [
            "RunnerContract", .product(name: "TOMLKit", package: "TOMLKit"),
        ], swiftSettings: strict),
        // URLSession lives apart so that only prepare, cleanup and the admin CLI link libcurl.
        .target(name: "HTTPClient", dependencies: ["Identity"], swiftSettings: strict),
        // One folder per provider kind (configuration, issue, revoke, delivery contract, endpoint
        // answers); ProviderKinds.all wires each in.
        .target(name: "Federation", dependencies: [
            "RunnerContract", "Identity", "Policy", "ConfigSyntax", .product(name: "JWTKit", package: "jwt-kit"),
        ], swiftSettings: strict),
        .target(name: "Ledger", dependencies: [
            "RunnerContract", "Federation", "Identity", "CSupport",
        ], swiftSettings: strict),
        .target(name: "Delivery", dependencies: ["RunnerContract", "Federation", "Ledger", "CSupport"], swiftSettings: strict),
        // The configuration as written (TOML, every key and line checked) and as resolved.
        .target(name: "AirlockConfiguration", dependencies: [
            "RunnerContract", "Identity", "Policy", "Federation", "Ledger", "ConfigSyntax", "CSupport",
        ], swiftSettings: strict),
        // What keeps a job in its place: its directories and uid, the bubblewrap spec, the nftables guard.
        .target(name: "JobIsolation", dependencies: [
            "AirlockConfiguration", "Delivery", "Ledger", "RunnerContract", "Identity", "CSupport",
        ], swiftSettings: strict),
        .target(name: "AirlockCore", dependencies: [
            "JobIsolation",
            "RunnerContract", "Identity", "Policy", "Federation", "Ledger", "Delivery", "CSupport", "AirlockConfiguration", "ConfigSyntax",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        // What the installed admin CLI does: check, explain, sweep, metrics.
        .target(name: "AirlockAdmin", dependencies: [
            "AirlockCore", "AirlockConfiguration", "ConfigSyntax", "Federation", "Identity", "Ledger", "Policy", "RunnerContract", "Delivery", "JobIsolation",
        ], swiftSettings: strict),
        .executableTarget(name: "airlock-config", dependencies: ["AirlockCore"], swiftSettings: strict, linkerSettings: stageLinking),
        .executableTarget(name: "airlock-prepare", dependencies: ["AirlockCore"], swiftSettings: strict, linkerSettings: stageLinking),
        .executableTarget(name: "airlock-run", dependencies: ["AirlockCore"], swiftSettings: strict, linkerSettings: stageLinking),
        .executableTarget(name: "airlock-cleanup", dependencies: ["AirlockCore"], swiftSettings: strict, linkerSettings: stageLinking),
        // prepare and cleanup with the network: the two above hand a job over to it when it has an ID
        // token to verify or credentials to revoke (issue 19: libcurl's libraries cost 7 ms to load).
        .executableTarget(name: "airlock-federate", dependencies: ["AirlockCore", "HTTPClient"], swiftSettings: strict),
        // The per-job credential server (issue 7): the only executable that links Hummingbird/NIO.
        .target(name: "CredentialEndpoint", dependencies: [
            "AirlockCore", "AirlockConfiguration", "Delivery", "Federation", "Ledger", "Identity", "RunnerContract",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        .executableTarget(name: "airlock-endpoint", dependencies: ["CredentialEndpoint", "HTTPClient",
                                                                   .product(name: "NIOCore", package: "swift-nio"),
                                                                   .product(name: "NIOPosix", package: "swift-nio")], swiftSettings: strict),
        .executableTarget(name: "airlock", dependencies: [
            "AirlockAdmin", "AirlockCore", "AirlockConfiguration", "HTTPClient", "Delivery", "Identity", "RunnerContract",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: strict),
        // Not installed: the simulator, the demo and the benchmarks, with the test peers they use.
        .executableTarget(name: "airlock-dev", dependencies: [
            "AirlockAdmin", "AirlockCore", "AirlockConfiguration", "AirlockTesting", "HTTPClient", "Delivery",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: strict),
        .target(name: "AirlockTesting", dependencies: [
            "AirlockCore", "AirlockConfiguration", "RunnerContract", "Identity", "Delivery", "CSupport",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
        ], swiftSettings: strict),
        .testTarget(name: "RunnerContractTests", dependencies: ["RunnerContract"], swiftSettings: strict),
        .testTarget(name: "PolicyTests", dependencies: ["Policy", "Identity"], swiftSettings: strict),
        .testTarget(name: "AirlockCoreTests", dependencies: ["AirlockCore", "AirlockAdmin", "AirlockConfiguration", "AirlockTesting", "ConfigSyntax", "Identity", "Policy", "Ledger", "RunnerContract", "Delivery", "HTTPClient", "Federation",
                                                            .product(name: "Crypto", package: "swift-crypto"), .product(name: "_CryptoExtras", package: "swift-crypto"),
                                                            .product(name: "JWTKit", package: "jwt-kit")], swiftSettings: strict),
        // Tests mirror the modules they test (issue 16): Identity, Federation (the provider conformance
        // suites, against OpenBao and moto where a real server exists), Delivery (the masker).
        .testTarget(name: "AirlockConfigurationTests", dependencies: ["AirlockConfiguration", "ConfigSyntax", "Federation", "Policy", "Identity", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strict),
        .testTarget(name: "IdentityTests", dependencies: ["Identity", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strict),
        .testTarget(name: "FederationTests", dependencies: ["Federation", "AirlockTesting", "Identity", "HTTPClient", "RunnerContract", "Delivery",
                                                           .product(name: "Crypto", package: "swift-crypto"), .product(name: "_CryptoExtras", package: "swift-crypto")], swiftSettings: strict),
        .testTarget(name: "DeliveryTests", dependencies: ["Delivery", "AirlockTesting", "Federation", "RunnerContract", "CSupport"], swiftSettings: strict),
        // The credential server's routes in process (HummingbirdTesting's router framework), with a
        // stub credential source: secrets, the owner rule, rate limit, answers, failures; its broker
        // with a scripted provider.
        .testTarget(name: "CredentialEndpointTests", dependencies: [
            "CredentialEndpoint", "AirlockConfiguration", "AirlockCore", "Federation", "Identity", "Ledger", "RunnerContract", .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Hummingbird", package: "hummingbird"), .product(name: "HummingbirdTesting", package: "hummingbird"),
        ], swiftSettings: strict),
        // Ledger, job state, audit log and revocation, against a stub provider.
        .testTarget(name: "LedgerTests", dependencies: ["Ledger", "Federation", "RunnerContract", "Identity"], swiftSettings: strict),
        .testTarget(name: "EndToEndTests", dependencies: ["AirlockCore", "AirlockAdmin", "AirlockTesting", "RunnerContract", "Delivery", "Identity", "CSupport", "JobIsolation", "AirlockConfiguration"], swiftSettings: strict),
    ]
)
