import Foundation
import Identity

/// Makes the process's HTTP transport from the config. Injected by the executables that talk to
/// the network (prepare, cleanup, the admin CLI); config and run get `NoNetworkTransport`.
public typealias TransportFactory = @Sendable (_ caFile: String?) -> any HTTPTransport

enum HTTP {
    static let none: TransportFactory = { _ in NoNetworkTransport() }
}

extension AirlockConfig {
    /// Job variables that hold ID tokens Airlock consumes (scrubbed and masked in every stage).
    public var consumedTokenVariables: [String] {
        gitlab.map { [$0.tokenVariable] } ?? []
    }
}
