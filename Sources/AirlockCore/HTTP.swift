import Foundation
import Identity

/// The process's HTTP transport, configured from the config.
enum HTTP {
    static func transport(for config: AirlockConfig) -> any HTTPTransport {
        if let ca = config.gitlabCAFile {
            // swift-corelibs-foundation hands this to libcurl as CURLOPT_CAINFO.
            setenv("URLSessionCertificateAuthorityInfoFile", ca, 1)
        }
        return URLSessionTransport()
    }
}

extension AirlockConfig {
    /// Job variables that hold ID tokens Airlock consumes (scrubbed and masked in every stage).
    public var consumedTokenVariables: [String] {
        gitlab.map { [$0.tokenVariable] } ?? []
    }
}
