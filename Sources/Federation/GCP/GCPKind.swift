package import ConfigSyntax
public import Foundation
package import Identity
public import RunnerContract

/// `type = "gcp"`: Google Cloud workload identity federation (federation.md A3).
package enum GCPKind: ProviderKind {
    package static let typeName = "gcp"
    package static let endpoint: EndpointKind? = .gceMetadata
    package static let defaultSTS = "https://sts.googleapis.com/v1/token"
    package static let defaultIAMCredentials = "https://iamcredentials.googleapis.com"

    package static func settings(name: String, _ c: inout TOMLCursor, warnings: inout [String]) throws(ConfigError) -> GCPSettings {
        let wip = try c.string("workload_identity_provider")
        if let wip { try checkWorkloadIdentityProvider(wip, c) }
        let s = GCPSettings(stsEndpoint: try c.endpoint("sts_endpoint", default: defaultSTS),
                            iamCredentialsEndpoint: try c.endpoint("iam_credentials_endpoint", default: defaultIAMCredentials),
                            workloadIdentityProvider: wip, token: try c.audienceToken(defaultVariable: nil, defaultAudience: nil))
        if try c.string("revoke_endpoint") != nil {
            warnings.append("[providers.\(name)] revoke_endpoint is ignored: Google does not revoke service-account or federated access tokens (\"Token is not revocable.\"), so cleanup records when each expires; remove the line")
        }
        return s
    }

    package static func profile(name: String, provider: String, settings g: GCPSettings, deliver: DeliveryMode,
                                _ c: inout TOMLCursor) throws(ConfigError) -> GCPProfile {
        guard let wip = try c.string("workload_identity_provider") ?? g.workloadIdentityProvider else {
            throw c.error("workload_identity_provider", "is required (here or on [providers.\(provider)])")
        }
        try checkWorkloadIdentityProvider(wip, c)
        let sa = try c.string("service_account")
        try c.checkClaims(sa, key: "service_account")
        if let sa, !sa.contains("@") { throw c.error("service_account", "must be a service account email, got \(sa.quoted)") }
        let maxLifetime = try c.duration("max_lifetime") ?? 3600
        guard maxLifetime >= 300, maxLifetime <= 43_200 else { throw c.error("max_lifetime", "must be between 5m and 12h (over 1h needs the organisation policy constraints/iam.allowServiceAccountCredentialLifetimeExtension)") }
        return GCPProfile(workloadIdentityProvider: wip, serviceAccount: sa,
                          scopes: try c.stringArray("scopes") ?? [GCPProfile.cloudPlatformScope],
                          maxLifetime: maxLifetime, projectID: try c.string("project_id"))
    }

    package static func provider(name: String, settings g: GCPSettings, profiles: [String: GCPProfile],
                                 transport: any HTTPTransport) -> any CredentialProvider {
        GCPProvider(name: name, stsEndpoint: URL(string: g.stsEndpoint)!, iamCredentialsEndpoint: URL(string: g.iamCredentialsEndpoint)!,
                    profiles: profiles, transport: transport)
    }

    /// An access token as gcloud (CLOUDSDK_AUTH_ACCESS_TOKEN[_FILE]) and the client libraries
    /// (GOOGLE_OAUTH_ACCESS_TOKEN) read it, the project beside it; or the metadata server.
    package static func delivery(profile: String, projectID: String?) -> DeliveryContract {
        let projectEnv = projectID.map { ["CLOUDSDK_CORE_PROJECT": $0, "GOOGLE_CLOUD_PROJECT": $0] } ?? [:]
        return DeliveryContract(
            secrets: [.init(key: "access_token", variables: ["CLOUDSDK_AUTH_ACCESS_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN"],
                            file: "\(profile)-gcp-token", fileVariable: "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE")],
            environment: projectEnv, endpoint: .gceMetadata, endpointEnvironment: projectEnv)
    }

    static func checkWorkloadIdentityProvider(_ v: String, _ c: TOMLCursor) throws(ConfigError) {
        guard TOMLCursor.matches(v, "^//iam\\.googleapis\\.com/projects/[0-9]+/locations/global/workloadIdentityPools/[a-z0-9-]+/providers/[a-z0-9-]+$") else {
            throw c.error("workload_identity_provider", "must be the provider's full resource name, \"//iam.googleapis.com/projects/<NUMBER>/locations/global/workloadIdentityPools/<POOL>/providers/<PROVIDER>\" (project number, not ID), got \(v.quoted)")
        }
    }
}

/// `[providers.NAME]` of type gcp.
public struct GCPSettings: ProviderSettings {
    public var stsEndpoint: String
    public var iamCredentialsEndpoint: String
    public var workloadIdentityProvider: String?
    /// nil: the job's main ID token is sent (the pool provider's allowed audiences hold Airlock's audience).
    public var token: AudienceToken?
    public var audienceToken: AudienceToken? { token }
}

/// The GCE metadata server's answers (federation.md B3), as google-auth, gcloud and Node's
/// gcp-metadata ask them, below `/computeMetadata/v1/`.
public enum GCEMetadata {
    public enum Answer: Sendable, Equatable {
        case text(String)
        case json([String: JSONValue])
        /// The access token: ask for the credential, answer with `tokenBody`.
        case token
        case notFound
    }

    /// What `item` (the path below `/computeMetadata/v1/`) answers for a job served `p`.
    public static func answer(_ item: String, profile p: GCPProfile) -> Answer {
        let email = p.serviceAccount ?? "default"
        switch item {
        case "instance/service-accounts/default/", "instance/service-accounts/default":
            return .json(["email": .string(email), "scopes": .array(p.scopes.map { .string($0) }), "aliases": .array([.string("default")])])
        case "instance/service-accounts/default/email", "instance/service-accounts/\(email)/email":
            return .text(email)
        case "instance/service-accounts/default/token", "instance/service-accounts/\(email)/token":
            return .token
        case "instance/service-accounts/default/scopes":
            return .text(p.scopes.joined(separator: "\n"))
        case "project/project-id":
            return p.projectID.map { .text($0) } ?? .notFound
        case "universe/universe-domain":
            return .text("googleapis.com")
        default:
            return .notFound
        }
    }

    public static func tokenBody(_ c: IssuedCredential, now: Date = Date()) -> [String: JSONValue] {
        ["access_token": .string(c.secrets["access_token"] ?? ""), "expires_in": .int(max(0, Int(c.expiresAt.timeIntervalSince(now)))),
         "token_type": .string("Bearer")]
    }
}
