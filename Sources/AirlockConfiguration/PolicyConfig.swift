public import Federation
import Foundation
import Identity
import Policy
import RunnerContract

/// `[providers.NAME]`: an identity provider Airlock federates with.
public enum ProviderSpec: Sendable {
    case aws(AWSProviderSpec)
    case vault(VaultProviderSpec)
    case oauth2(OAuthProviderSpec)
    case azure(AzureProviderSpec)
    case gcp(GCPProviderSpec)

    public static let typeNames = ["aws", "vault", "oauth2", "azure", "gcp"]

    public var typeName: String {
        switch self {
        case .aws: "aws"
        case .vault: "vault"
        case .oauth2: "oauth2"
        case .azure: "azure"
        case .gcp: "gcp"
        }
    }

    /// The second ID token this provider is sent instead of the one Airlock's policy reads.
    public var audienceToken: AudienceToken? {
        switch self {
        case .azure(let a): a.token
        case .gcp(let g): g.token
        default: nil
        }
    }
}

/// A second `id_tokens:` entry with the audience a provider insists on (Entra wants
/// `api://AzureADTokenExchange`). Airlock verifies it like the first (same issuer, keys, job, sub).
public struct AudienceToken: Sendable, Equatable {
    public var variable: String
    public var audience: String
}

/// `type = "azure"`: Microsoft Entra ID workload identity federation (federation.md A2).
public struct AzureProviderSpec: Sendable {
    public static let defaultAuthority = "https://login.microsoftonline.com"
    public static let defaultTokenVariable = "AZURE_ID_TOKEN"
    public static let defaultTokenAudience = "api://AzureADTokenExchange"
    public var name: String
    public var authorityHost: String
    public var tenantID: String?
    public var token: AudienceToken
}

/// `type = "gcp"`: Google Cloud workload identity federation (federation.md A3).
public struct GCPProviderSpec: Sendable {
    public static let defaultSTS = "https://sts.googleapis.com/v1/token"
    public static let defaultIAMCredentials = "https://iamcredentials.googleapis.com"
    public var name: String
    public var stsEndpoint: String
    public var iamCredentialsEndpoint: String
    /// `revoke_endpoint`, no longer used (Google does not revoke these tokens): set means a warning.
    public var revokeEndpoint: String?
    public var workloadIdentityProvider: String?
    /// nil: the job's main ID token is sent (the pool provider's allowed audiences hold Airlock's audience).
    public var token: AudienceToken?
}

/// `type = "oauth2"`: a generic OAuth 2.0 server such as Auth0 (federation.md A5).
public struct OAuthProviderSpec: Sendable {
    public var name: String
    public var tokenEndpoint: String
    public var revocationEndpoint: String?
    public var introspectionEndpoint: String?
    public var clientID: String?
    public var privateKeyFile: String?
    public var keyID: String?
    public var assertionAudience: String?
    /// `assertion_algorithm`: "RS256" (default, an RSA key) or "ES256" (a P-256 key; only where the
    /// server accepts it: Auth0 does not).
    public var assertionAlgorithm: String = "RS256"
}


/// `type = "vault"`: HashiCorp Vault JWT auth (federation.md A4).
public struct VaultProviderSpec: Sendable {
    public var name: String
    public var address: String
    public var authMount: String
    public var namespace: String?
}



/// `type = "aws"`: AWS STS AssumeRoleWithWebIdentity (federation.md A1).
public struct AWSProviderSpec: Sendable {
    public static let defaultEndpoint = "https://sts.amazonaws.com"
    public var name: String
    public var stsEndpoint: String
    public var region: String
}

/// How a profile's credentials reach the job.
public enum DeliveryMode: String, Sendable, CaseIterable {
    /// Environment variables of the stage.
    case env
    /// Files in the job's secrets dir, their paths in the environment.
    case file
    /// The job's credential server: the endpoints the cloud SDKs speak, refreshed as they run out.
    case endpoint
}

/// `[profiles.NAME]`: what a grant hands out.
public struct ProfileSpec: Sendable {
    public var name: String
    public var provider: String
    /// The stages that receive it; nil means build_script, step_* and after_script.
    public var stages: [String]?
    public var deliver: DeliveryMode
    public var aws: AWSProfileSpec?
    /// Vault and OAuth profiles are held as the provider takes them.
    public var vault: VaultProfile?
    public var oauth: OAuthProfile?
    public var azure: AzureProfile?
    public var gcp: GCPProfile?
}

/// AWS profile parameters; templates are rendered against the job's claims at prepare.
public struct AWSProfileSpec: Sendable {
    public static let minimumDuration = 900.0
    public static let defaultMaxDuration = 3600.0
    public var roleARN: String
    public var sessionName: String
    public var maxDuration: Double
    public var sessionPolicy: String?
    public var policyARNs: [String]
    public var region: String?
}

/// Every claim GitLab may put in a job's ID token (custom-executor.md §2): a rule on another name is
/// most likely a typo, which `airlock check` reports.
public let knownGitLabClaims: Set<String> = [
    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "namespace_id", "namespace_path", "project_id", "project_path",
    "user_id", "user_login", "user_email", "user_access_level", "job_project_id", "job_project_path", "job_namespace_id",
    "job_namespace_path", "pipeline_id", "pipeline_source", "job_id", "ref", "ref_type", "ref_path", "ref_protected",
    "environment", "environment_protected", "deployment_tier", "environment_action", "runner_id", "runner_environment",
    "sha", "ci_config_ref_uri", "ci_config_sha", "project_visibility", "user_identities", "groups_direct",
    "job_source", "job_config",
]

extension AirlockConfig {
    static func parseGitLab(_ g: inout TOMLCursor) throws(ConfigError) -> IssuerSettings {
        let issuer = try g.requiredString("issuer", hint: "the GitLab URL, exactly as the token's iss, e.g. \"https://gitlab.example.com\"")
        guard Self.isSecureURL(issuer) else {
            throw g.error("issuer", "must be an https URL (http only on loopback, for tests), got \(issuer.quoted)")
        }
        let audience = try g.requiredString("audience", hint: "the aud jobs put in their id_tokens: block, e.g. \"https://airlock.example.com\"")
        var s = IssuerSettings(issuer: issuer, audience: audience)
        s.tokenVariable = try g.string("token_variable") ?? IssuerSettings.defaultTokenVariable
        guard Self.isVariableName(s.tokenVariable) else {
            throw g.error("token_variable", "must be a variable name, got \(s.tokenVariable.quoted)")
        }
        s.jwksCacheTTL = try g.duration("jwks_cache_ttl") ?? s.jwksCacheTTL
        s.jwksGrace = try g.duration("jwks_grace") ?? s.jwksGrace
        s.jwksFile = try g.string("jwks_file")
        if try g.string("ca_file") != nil {
            // FoundationNetworking on Linux passes no custom CA bundle to libcurl (the
            // URLSessionCertificateAuthorityInfoFile override exists on Android only), so a
            // ca_file here would be silently ignored.
            throw g.error("ca_file", "is not supported by this build: URLSession on Linux uses the system CA store only. Add the CA there instead (copy it to /usr/local/share/ca-certificates/ and run update-ca-certificates), or use jwks_file")
        }
        s.clockSkew = try g.duration("clock_skew") ?? s.clockSkew
        guard s.clockSkew <= 300 else { throw g.error("clock_skew", "must be at most 5m; a large skew accepts expired tokens") }
        s.maxTokenBytes = try g.int("max_token_bytes") ?? s.maxTokenBytes
        s.unknownKidRefreshInterval = try g.duration("unknown_kid_refresh_interval") ?? s.unknownKidRefreshInterval
        s.requireToken = try g.bool("require_token") ?? false
        if let algs = try g.stringArray("algorithms") {
            let allowed = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]
            for a in algs where !allowed.contains(a) {
                throw g.error("algorithms", "\(a.quoted) is not allowed; choose from \(allowed.joined(separator: ", ")) (none and HMAC are never accepted)")
            }
            s.algorithms = algs
        }
        if let extra = try g.stringArray("required_claims") { s.requiredClaims = Array(Set(s.requiredClaims + extra)).sorted() }
        try g.finish()
        return s
    }

    static func parseProviders(_ p: TOMLCursor) throws(ConfigError) -> [String: ProviderSpec] {
        var out: [String: ProviderSpec] = [:]
        for (name, var c) in try p.subtables() {
            let type = try c.requiredString("type", hint: "one of " + ProviderSpec.typeNames.map(\.quoted).joined(separator: ", "))
            func endpoint(_ key: String, default d: String?) throws(ConfigError) -> String? {
                guard let v = try c.string(key) ?? d else { return nil }
                guard Self.isSecureURL(v) else {
                    throw c.error(key, "must be an https URL (http only on loopback), got \(v.quoted)")
                }
                return v.hasSuffix("/") && URL(string: v)?.path == "/" ? String(v.dropLast()) : v
            }
            func audienceToken(defaultVariable: String?, defaultAudience: String?) throws(ConfigError) -> AudienceToken? {
                let variable = try c.string("token_variable") ?? defaultVariable
                let audience = try c.string("token_audience") ?? defaultAudience
                guard let variable else {
                    if audience != nil { throw c.error("token_audience", "needs token_variable: the id_tokens: name jobs declare with this audience") }
                    return nil
                }
                guard Self.isVariableName(variable) else {
                    throw c.error("token_variable", "must be a variable name, got \(variable.quoted)")
                }
                guard let audience, !audience.isEmpty else { throw c.error("token_audience", "is required with token_variable: the aud jobs request for it") }
                return AudienceToken(variable: variable, audience: audience)
            }
            switch type {
            case "aws":
                let endpoint = try c.string("sts_endpoint") ?? AWSProviderSpec.defaultEndpoint
                guard let u = URL(string: endpoint), u.scheme == "https" || u.scheme == "http", u.host != nil else {
                    throw c.error("sts_endpoint", "must be a URL, got \(endpoint.quoted)")
                }
                let region = try c.string("region") ?? "us-east-1"
                out[name] = .aws(AWSProviderSpec(name: name, stsEndpoint: endpoint, region: region))
            case "vault":
                let address = try c.requiredString("address", hint: "e.g. \"https://vault.example.com:8200\"")
                guard Self.isSecureURL(address) else {
                    throw c.error("address", "must be an https URL (http only on loopback), got \(address.quoted)")
                }
                let mount = try c.string("auth_mount") ?? "jwt"
                let ns = try c.string("namespace")
                out[name] = .vault(VaultProviderSpec(name: name, address: address, authMount: mount, namespace: ns))
            case "oauth2":
                func url(_ key: String, required: Bool) throws(ConfigError) -> String? {
                    guard let v = required ? try c.requiredString(key, hint: "e.g. \"https://tenant.eu.auth0.com/oauth/token\"") : try c.string(key) else { return nil }
                    guard Self.isSecureURL(v) else {
                        throw c.error(key, "must be an https URL (http only on loopback), got \(v.quoted)")
                    }
                    return v
                }
                let token = try url("token_endpoint", required: true)!
                let revoke = try url("revocation_endpoint", required: false)
                let introspect = try url("introspection_endpoint", required: false)
                let clientID = try c.string("client_id")
                let keyFile = try c.string("private_key_file")
                if keyFile != nil && clientID == nil { throw c.error("client_id", "is required with private_key_file (it is the assertion's iss and sub)") }
                if let keyFile, !keyFile.hasPrefix("/") { throw c.error("private_key_file", "must be an absolute path") }
                func assertionAlgorithm() throws(ConfigError) -> String {
                    let alg = try c.string("assertion_algorithm") ?? "RS256"
                    guard alg == "RS256" || alg == "ES256" else {
                        throw c.error("assertion_algorithm", "must be \"RS256\" (an RSA key) or \"ES256\" (a P-256 key, where the server accepts it), got \(alg.quoted)")
                    }
                    return alg
                }
                out[name] = .oauth2(OAuthProviderSpec(name: name, tokenEndpoint: token, revocationEndpoint: revoke, introspectionEndpoint: introspect,
                                                      clientID: clientID, privateKeyFile: keyFile, keyID: try c.string("key_id"),
                                                      assertionAudience: try c.string("assertion_audience"),
                                                      assertionAlgorithm: try assertionAlgorithm()))
            case "azure":
                let tenant = try c.string("tenant_id")
                out[name] = .azure(AzureProviderSpec(
                    name: name, authorityHost: try endpoint("authority_host", default: AzureProviderSpec.defaultAuthority)!, tenantID: tenant,
                    token: try audienceToken(defaultVariable: AzureProviderSpec.defaultTokenVariable, defaultAudience: AzureProviderSpec.defaultTokenAudience)!))
            case "gcp":
                let wip = try c.string("workload_identity_provider")
                if let wip { try Self.checkWorkloadIdentityProvider(wip, c, key: "workload_identity_provider") }
                out[name] = .gcp(GCPProviderSpec(
                    name: name, stsEndpoint: try endpoint("sts_endpoint", default: GCPProviderSpec.defaultSTS)!,
                    iamCredentialsEndpoint: try endpoint("iam_credentials_endpoint", default: GCPProviderSpec.defaultIAMCredentials)!,
                    revokeEndpoint: try c.string("revoke_endpoint"),
                    workloadIdentityProvider: wip, token: try audienceToken(defaultVariable: nil, defaultAudience: nil)))
            default:
                throw c.error("type", "unknown provider type \(type.quoted); this build supports: " + ProviderSpec.typeNames.map(\.quoted).joined(separator: ", "))
            }
            try c.finish()
        }
        return out
    }

    /// An IAM role ARN, each part possibly a {claim} template.
    static let roleARN = #"^arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::([0-9]{12}|\{[a-z_]+\}):role/([A-Za-z0-9+=,.@_/-]|\{[a-z_]+\})+$"#
    static let policyARN = #"^arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::([0-9]{12}|aws):policy/[A-Za-z0-9+=,.@_/-]+$"#
    static let guid = #"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"#
    static let domain = #"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"#

    static func matches(_ v: String, _ pattern: String) -> Bool {
        v.range(of: pattern, options: .regularExpression) != nil
    }

    static func checkWorkloadIdentityProvider(_ v: String, _ c: TOMLCursor, key: String) throws(ConfigError) {
        guard v.range(of: "^//iam\\.googleapis\\.com/projects/[0-9]+/locations/global/workloadIdentityPools/[a-z0-9-]+/providers/[a-z0-9-]+$", options: .regularExpression) != nil else {
            throw c.error(key, "must be the provider's full resource name, \"//iam.googleapis.com/projects/<NUMBER>/locations/global/workloadIdentityPools/<POOL>/providers/<PROVIDER>\" (project number, not ID), got \(v.quoted)")
        }
    }

    /// https, or http to a loopback host (tests, local agents).
    static func isSecureURL(_ v: String) -> Bool {
        guard let u = URL(string: v), let host = u.host else { return false }
        return u.scheme == "https" || (u.scheme == "http" && ["127.0.0.1", "localhost", "::1"].contains(host))
    }

    static func isVariableName(_ v: String) -> Bool {
        v.range(of: "^[A-Za-z_][A-Za-z0-9_]*$", options: .regularExpression) != nil
    }

    static func variableName(_ v: String, _ c: TOMLCursor, key: String) throws(ConfigError) -> String {
        guard Self.isVariableName(v) else {
            throw c.error(key, "\(v.quoted) is not a variable name")
        }
        return v
    }

    static func parseProfiles(_ p: TOMLCursor, providers: [String: ProviderSpec]) throws(ConfigError) -> [String: ProfileSpec] {
        var out: [String: ProfileSpec] = [:]
        for (name, var c) in try p.subtables() {
            let provider = try c.requiredString("provider", hint: "the name of a [providers.NAME] section")
            guard let spec = providers[provider] else {
                throw c.error("provider", "\(provider.quoted) is not defined: add a [providers.\(provider)] section with its type (defined: \(providers.keys.sorted().joined(separator: ", ")))")
            }
            let stages = try c.stringArray("stages")
            for s in stages ?? [] where !Stage.isValidName(s) {
                throw c.error("stages", "\(s.quoted) is not a stage name")
            }
            let deliverText = try c.string("deliver") ?? DeliveryMode.env.rawValue
            guard let deliver = DeliveryMode(rawValue: deliverText) else {
                throw c.error("deliver", "expected one of \(DeliveryMode.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")), got \(deliverText.quoted)")
            }
            _ = try c.string("description")
            if deliver == .endpoint {
                switch spec {
                case .aws, .gcp: break
                case .azure:
                    if try c.stringMap("secrets") != nil { throw c.error("deliver", "\"endpoint\" serves Azure tokens; Key Vault secrets are delivered as env or file") }
                default:
                    throw c.error("deliver", "\"endpoint\" serves AWS, Azure and GCP profiles (the SDKs' container, managed identity and metadata endpoints); use env or file for \(spec.typeName)")
                }
            }
            var profile = ProfileSpec(name: name, provider: provider, stages: stages, deliver: deliver, aws: nil, vault: nil, oauth: nil)
            func templated(_ key: String, _ v: String?) throws(ConfigError) -> String? {
                for ph in Template.placeholders(in: v ?? "") where !knownGitLabClaims.contains(ph) {
                    throw c.error(key, "{\(ph)} is not a GitLab ID token claim")
                }
                return v
            }
            switch spec {
            case .azure(let a):
                guard let tenant = try templated("tenant_id", try c.string("tenant_id") ?? a.tenantID) else {
                    throw c.error("tenant_id", "is required (here or on [providers.\(provider)]): the Entra tenant's GUID or domain")
                }
                let client = try templated("client_id", try c.requiredString("client_id", hint: "the application (client) ID of the app registration or user-assigned managed identity that holds the federated credential"))!
                guard Self.matches(client, Self.guid) || client.contains("{") else {
                    throw c.error("client_id", "\(client.quoted) is not an application (client) ID: a GUID like 0a1b2c3d-0000-4000-8000-00000000abcd")
                }
                guard Self.matches(tenant, Self.guid) || Self.matches(tenant, Self.domain) || tenant.contains("{") else {
                    throw c.error(try c.string("tenant_id") == nil ? "provider" : "tenant_id", "\(tenant.quoted) is not an Entra tenant: its GUID or a domain like contoso.onmicrosoft.com")
                }
                let vaultURL = try c.string("key_vault")
                let secrets = try c.stringMap("secrets") ?? [:]
                for v in secrets.keys { _ = try Self.variableName(v, c, key: "secrets") }
                if !secrets.isEmpty && vaultURL == nil { throw c.error("key_vault", "is required with secrets: the vault URL, e.g. \"https://ci-secrets.vault.azure.net\"") }
                if let vaultURL {
                    guard Self.isSecureURL(vaultURL) else {
                        throw c.error("key_vault", "must be an https URL, got \(vaultURL.quoted)")
                    }
                    guard !secrets.isEmpty else { throw c.error("secrets", "is required with key_vault: map job variables to secret names, e.g. { DB_PASSWORD = \"db-password\" }") }
                }
                let resourceText = try c.string("resource") ?? (secrets.isEmpty ? nil : "key_vault")
                let scope = try c.string("scope")
                let resource: AzureResource
                switch resourceText {
                case "arm": resource = .arm
                case "key_vault": resource = .keyVault
                case "cosmos":
                    let account = try c.requiredString("cosmos_account", hint: "the Cosmos DB account name (the <account> of https://<account>.documents.azure.com)")
                    guard account.range(of: "^[a-z0-9-]{3,50}$", options: .regularExpression) != nil else {
                        throw c.error("cosmos_account", "\(account.quoted) is not a Cosmos DB account name (3-50 of a-z, 0-9, -)")
                    }
                    resource = .cosmos(account: account)
                case nil:
                    guard let scope else { throw c.error("resource", "is required: \"arm\", \"cosmos\", \"key_vault\", or give scope = \"<resource>/.default\"") }
                    resource = .scope(scope)
                default:
                    throw c.error("resource", "expected \"arm\", \"cosmos\" or \"key_vault\" (or leave it out and give scope), got \(resourceText!.quoted)")
                }
                if scope != nil, resourceText != nil { throw c.error("scope", "give either resource or scope, not both") }
                if !secrets.isEmpty && resource != .keyVault { throw c.error("resource", "must be \"key_vault\" (or absent) with secrets") }
                let variable = try Self.variableName(try c.string("variable") ?? "AZURE_ACCESS_TOKEN", c, key: "variable")
                profile.azure = AzureProfile(tenantID: tenant, clientID: client, resource: resource, keyVaultURL: vaultURL,
                                             keyVaultSecrets: secrets, variable: variable)
            case .gcp(let g):
                guard let wip = try c.string("workload_identity_provider") ?? g.workloadIdentityProvider else {
                    throw c.error("workload_identity_provider", "is required (here or on [providers.\(provider)])")
                }
                try Self.checkWorkloadIdentityProvider(wip, c, key: "workload_identity_provider")
                let sa = try templated("service_account", try c.string("service_account"))
                if let sa, !sa.contains("@") { throw c.error("service_account", "must be a service account email, got \(sa.quoted)") }
                let maxLifetime = try c.duration("max_lifetime") ?? 3600
                guard maxLifetime >= 300, maxLifetime <= 43_200 else { throw c.error("max_lifetime", "must be between 5m and 12h (over 1h needs the organisation policy constraints/iam.allowServiceAccountCredentialLifetimeExtension)") }
                profile.gcp = GCPProfile(workloadIdentityProvider: wip, serviceAccount: sa,
                                         scopes: try c.stringArray("scopes") ?? [GCPProfile.cloudPlatformScope],
                                         maxLifetime: maxLifetime, projectID: try c.string("project_id"))
            case .oauth2(let o):
                let g = try c.requiredString("grant", hint: "\"token_exchange\" or \"client_credentials\"")
                guard let grant = OAuthGrant(rawValue: g) else {
                    throw c.error("grant", "expected \"token_exchange\" or \"client_credentials\", got \(g.quoted)")
                }
                if grant == .clientCredentials && o.privateKeyFile == nil {
                    throw c.error("grant", "client_credentials needs private_key_file on [providers.\(provider)]: Airlock signs a private_key_jwt assertion")
                }
                let variable = try c.string("variable") ?? "OAUTH_ACCESS_TOKEN"
                guard Self.isVariableName(variable) else {
                    throw c.error("variable", "\(variable.quoted) is not a variable name")
                }
                let audience = try c.string("audience")
                for ph in Template.placeholders(in: audience ?? "") where !knownGitLabClaims.contains(ph) {
                    throw c.error("audience", "{\(ph)} is not a GitLab ID token claim")
                }
                profile.oauth = OAuthProfile(grant: grant, audience: audience, scope: try c.string("scope"),
                                                 subjectTokenType: try c.string("subject_token_type") ?? "urn:ietf:params:oauth:token-type:jwt",
                                                 variable: variable, introspect: try c.bool("introspect") ?? false)
            case .vault:
                let role = try c.requiredString("role", hint: "the Vault JWT role, e.g. \"ci-{project_id}\"")
                let secret = try c.string("secret")
                let secretParams = try c.stringMap("secret_params") ?? [:]
                if !secretParams.isEmpty && secret == nil {
                    throw c.error("secret_params", "is sent with secret: name the path it goes to, e.g. secret = \"pki/issue/ci\"")
                }
                let kv = try c.string("kv")
                let env = try c.stringMap("env") ?? [:]
                let token = try c.bool("token") ?? false
                guard secret != nil || kv != nil || token else {
                    throw c.error(nil, "a Vault profile needs secret (a dynamic secret path), kv (<mount>/<path>) or token = true")
                }
                if (secret != nil || kv != nil) && env.isEmpty {
                    throw c.error("env", "is required with secret or kv: map job variables to fields, e.g. { DB_USER = \"username\" }")
                }
                for v in env.keys where !Self.isVariableName(v) {
                    throw c.error("env", "\(v.quoted) is not a variable name")
                }
                for ph in Template.placeholders(in: role) + Template.placeholders(in: kv ?? "") where !knownGitLabClaims.contains(ph) {
                    throw c.error("role", "{\(ph)} is not a GitLab ID token claim")
                }
                for ph in secretParams.values.flatMap({ Template.placeholders(in: $0) }) where !knownGitLabClaims.contains(ph) {
                    throw c.error("secret_params", "{\(ph)} is not a GitLab ID token claim")
                }
                profile.vault = VaultProfile(role: role, secret: secret, secretParams: secretParams, kv: kv, env: env, token: token)
            case .aws:
                let role = try c.requiredString("role_arn", hint: "e.g. \"arn:aws:iam::123456789012:role/gitlab-{project_id}\"")
                guard Self.matches(role, Self.roleARN) else {
                    throw c.error("role_arn", "must be an IAM role ARN, arn:aws:iam::<12-digit account>:role/<name> ({claim} templates allowed), got \(role.quoted)")
                }
                let session = try c.string("session_name") ?? "gitlab-{project_id}-{job_id}"
                let maxDuration = try c.duration("max_duration") ?? AWSProfileSpec.defaultMaxDuration
                guard maxDuration >= AWSProfileSpec.minimumDuration, maxDuration <= 43_200 else {
                    throw c.error("max_duration", "must be between 15m and 12h (STS DurationSeconds 900-43200)")
                }
                let policy = try c.string("session_policy")
                if let policy {
                    guard (try? JSONSerialization.jsonObject(with: Data(policy.utf8))) != nil else {
                        throw c.error("session_policy", "is not valid JSON")
                    }
                    guard policy.utf8.count <= 2048 else { throw c.error("session_policy", "is over STS's 2048-character limit") }
                }
                let arns = try c.stringArray("policy_arns") ?? []
                guard arns.count <= 10 else { throw c.error("policy_arns", "STS takes at most 10 managed policy ARNs") }
                for arn in arns where !Self.matches(arn, Self.policyARN) {
                    throw c.error("policy_arns", "\(arn.quoted) is not a managed policy ARN (arn:aws:iam::<12-digit account or aws>:policy/<name>)")
                }
                let region = try c.string("region")
                for t in [role, session] {
                    for ph in Template.placeholders(in: t) where !knownGitLabClaims.contains(ph) {
                        throw c.error(t == role ? "role_arn" : "session_name", "{\(ph)} is not a GitLab ID token claim")
                    }
                }
                profile.aws = AWSProfileSpec(roleARN: role, sessionName: session, maxDuration: maxDuration,
                                             sessionPolicy: policy, policyARNs: arns, region: region)
            }
            try c.finish()
            out[name] = profile
        }
        return out
    }

    static func parseRules(_ cursors: [TOMLCursor], profiles: [String: ProfileSpec], warnings: inout [String]) throws(ConfigError) -> [Rule] {
        var rules: [Rule] = []
        var names = Set<String>()
        for var c in cursors {
            let name = try c.requiredString("name", hint: "a name for the audit log, e.g. \"protected main of platform projects\"")
            guard names.insert(name).inserted else { throw c.error("name", "duplicate rule name \(name.quoted)") }
            guard let grants = try c.stringArray("grant"), !grants.isEmpty else {
                throw c.error("grant", "is required: the profiles this rule grants, e.g. [\"deploy-prod\"]")
            }
            for g in grants where profiles[g] == nil {
                throw c.error("grant", "profile \(g.quoted) is not defined (defined: \(profiles.keys.sorted().joined(separator: ", ")))")
            }
            _ = try c.string("description")
            var conditions: [Condition] = []
            for key in c.order where !["name", "grant", "description"].contains(key) {
                guard let node = c.raw(key) else { continue }
                let m: Matcher
                do { m = try matcher(node) } catch { throw c.error(key, error.message) }
                conditions.append(Condition(claim: key, matcher: m))
                if !knownGitLabClaims.contains(key) {
                    warnings.append("\(c.describe(key)): \(key) is not a GitLab ID token claim; this condition never holds unless your GitLab adds it")
                }
                if key == "project_path" || key == "namespace_path" {
                    warnings.append("rule \(name.quoted) matches \(key): paths can be reused after a rename or deletion; prefer \(key == "project_path" ? "project_id" : "namespace_id")")
                }
                // Claims whose value depends on the GitLab edition or a feature flag.
                if key == "environment_protected" {
                    warnings.append("rule \(name.quoted) matches environment_protected: GitLab Community Edition always sets it to \"false\" (protected environments are a Premium feature), so on CE a condition on \"true\" never holds; match ref_protected and environment there")
                }
                if key == "groups_direct" {
                    warnings.append("rule \(name.quoted) matches groups_direct: GitLab adds this claim only with the ci_jwt_groups_direct feature flag on (off by default) and leaves it out for users in 200 or more groups; without it this condition never holds")
                }
            }
            guard !conditions.isEmpty else {
                throw c.error(nil, "rule \(name.quoted) has no conditions and would grant every job; add at least one claim condition")
            }
            try c.finish()
            rules.append(Rule(name: name, conditions: conditions, grants: grants))
        }
        return rules
    }

    struct MatcherError: Error { let message: String }

    static func matcher(_ node: TOMLNode) throws(MatcherError) -> Matcher {
        switch node {
        case .string(let s): return s.contains("*") || s.contains("?") ? .glob(s) : .exact(s)
        case .bool(let b): return .bool(b)
        case .int(let i): return .exact(String(i))
        case .array(let items):
            guard !items.isEmpty else { throw MatcherError(message: "an empty list matches nothing") }
            var ms: [Matcher] = []
            for i in items {
                if case .array = i { throw MatcherError(message: "lists cannot nest") }
                ms.append(try matcher(i))
            }
            return .anyOf(ms)
        default: throw MatcherError(message: "expected a string, glob, boolean, integer or a list of them, got \(node.typeName)")
        }
    }
}
