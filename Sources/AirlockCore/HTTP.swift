import AirlockConfiguration
import Foundation
public import Identity

/// Makes the process's HTTP transport (system CA store only: `[gitlab] ca_file` is refused).
/// Injected by the executables that talk to the network (airlock-federate, airlock-endpoint, the
/// admin CLI); the four stage executables get `NoNetworkTransport`, so that they never link libcurl.
public typealias TransportFactory = @Sendable () -> any HTTPTransport

enum HTTP {
    static let none: TransportFactory = { NoNetworkTransport() }
}

extension AirlockConfig {
    /// GitLab's keys, cached under the state dir: the one store prepare, explain and check share.
    package func jwksStore(_ gitlab: IssuerSettings, transport: any HTTPTransport,
                   warn: @escaping @Sendable (String) -> Void = { _ in }) -> JWKSStore {
        JWKSStore(settings: gitlab, cacheDirectory: "\(runner.stateDir)/jwks", transport: transport, warn: warn)
    }
}
