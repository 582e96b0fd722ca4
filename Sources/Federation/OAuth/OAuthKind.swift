package import ConfigSyntax
import Foundation
package import Identity

/// `type = "oauth2"`: a generic OAuth 2.0 server such as Auth0 (federation.md A5).
package enum OAuthKind: ProviderKind {
    package static let typeName = "oauth2"

    package static func settings(name: String, _ c: inout TOMLCursor, warnings: inout [String]) throws(ConfigError) -> OAuthSettings {
        let token = try c.requiredSecureURL("token_endpoint", hint: "e.g. \"https://tenant.eu.auth0.com/oauth/token\"")
        let revoke = try c.secureURL("revocation_endpoint")
        let introspect = try c.secureURL("introspection_endpoint")
        let clientID = try c.string("client_id")
        let keyFile = try c.string("private_key_file")
        if keyFile != nil && clientID == nil { throw c.error("client_id", "is required with private_key_file (it is the assertion's iss and sub)") }
        if let keyFile, !keyFile.hasPrefix("/") { throw c.error("private_key_file", "must be an absolute path") }
        let keyID = try c.string("key_id")
        let assertionAudience = try c.string("assertion_audience")
        let alg = try c.string("assertion_algorithm") ?? "RS256"
        guard alg == "RS256" || alg == "ES256" else {
            throw c.error("assertion_algorithm", "must be \"RS256\" (an RSA key) or \"ES256\" (a P-256 key, where the server accepts it), got \(alg.quoted)")
        }
        return OAuthSettings(tokenEndpoint: token, revocationEndpoint: revoke, introspectionEndpoint: introspect, clientID: clientID,
                             privateKeyFile: keyFile, keyID: keyID, assertionAudience: assertionAudience, assertionAlgorithm: alg)
    }

    package static func profile(name: String, provider: String, settings: OAuthSettings, deliver: DeliveryMode,
                                _ c: inout TOMLCursor) throws(ConfigError) -> OAuthProfile {
        let g = try c.requiredString("grant", hint: "\"token_exchange\" or \"client_credentials\"")
        guard let grant = OAuthGrant(rawValue: g) else {
            throw c.error("grant", "expected \"token_exchange\" or \"client_credentials\", got \(g.quoted)")
        }
        if grant == .clientCredentials && settings.privateKeyFile == nil {
            throw c.error("grant", "client_credentials needs private_key_file on [providers.\(provider)]: Airlock signs a private_key_jwt assertion")
        }
        let variable = try c.variableName(try c.string("variable") ?? "OAUTH_ACCESS_TOKEN", key: "variable")
        let audience = try c.string("audience")
        try c.checkClaims(audience, key: "audience")
        return OAuthProfile(grant: grant, audience: audience, scope: try c.string("scope"),
                            subjectTokenType: try c.string("subject_token_type") ?? "urn:ietf:params:oauth:token-type:jwt",
                            variable: variable, introspect: try c.bool("introspect") ?? false)
    }

    package static func provider(name: String, settings o: OAuthSettings, profiles: [String: OAuthProfile],
                                 transport: any HTTPTransport) -> any CredentialProvider {
        OAuthProvider(name: name, tokenEndpoint: URL(string: o.tokenEndpoint)!,
                      revocationEndpoint: o.revocationEndpoint.flatMap(URL.init(string:)),
                      introspectionEndpoint: o.introspectionEndpoint.flatMap(URL.init(string:)),
                      clientID: o.clientID, clientKey: o.clientKey,
                      assertionAudience: o.assertionAudience, profiles: profiles, transport: transport)
    }
}

/// `[providers.NAME]` of type oauth2.
public struct OAuthSettings: ProviderSettings {
    public var tokenEndpoint: String
    public var revocationEndpoint: String?
    public var introspectionEndpoint: String?
    public var clientID: String?
    public var privateKeyFile: String?
    public var keyID: String?
    public var assertionAudience: String?
    /// `assertion_algorithm`: "RS256" (default, an RSA key) or "ES256" (a P-256 key; only where the
    /// server accepts it: Auth0 does not).
    public var assertionAlgorithm: String

    public var target: [String: String] { ["token_endpoint": tokenEndpoint] }

    /// The token endpoint's origin (scheme, host and port): the server Airlock's token is for.
    public var airlockAudience: String? {
        guard let u = URLComponents(string: tokenEndpoint), let scheme = u.scheme, let host = u.host else { return nil }
        return "\(scheme)://\(host)" + (u.port.map { ":\($0)" } ?? "")
    }

    var clientKey: ClientKey? {
        privateKeyFile.map { ClientKey(path: $0, keyID: keyID, es256: assertionAlgorithm == "ES256") }
    }

    public var secretFiles: [(key: String, path: String)] { privateKeyFile.map { [("private_key_file", $0)] } ?? [] }

    /// The client key loads and signs with the algorithm the provider says.
    public func checkSecretFile(_ path: String) async -> Result<String, SecretFileProblem> {
        guard let key = clientKey, key.path == path else { return .success("present") }
        do {
            let (_, alg) = try await key.load(profile: "-", provider: "private_key_file")
            return .success("\(alg) key")
        } catch let e as FederationError where ["ClientKeyInvalid", "ClientKeyUnreadable", "ClientKeyAlgorithm"].contains(e.code) {
            return .failure(SecretFileProblem("is not a usable key: \(e.message)"))
        } catch {
            return .success("present")
        }
    }
}
