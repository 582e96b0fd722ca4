public import Foundation
public import Identity
import Policy
import RunnerContract

/// What an Azure profile's token is for (federation.md A2): one scope per token.
public enum AzureResource: Sendable, Equatable {
    /// Azure Resource Manager: `https://management.azure.com/.default`.
    case arm
    /// Cosmos DB data plane: `https://<account>.documents.azure.com/.default`, falling back to
    /// `https://cosmos.azure.com/.default` when Entra answers AADSTS500011 (as the Python SDK does).
    case cosmos(account: String)
    /// Key Vault: `https://vault.azure.net/.default`.
    case keyVault
    /// Any other resource's scope, as given.
    case scope(String)

    public var scope: String {
        switch self {
        case .arm: "https://management.azure.com/.default"
        case .cosmos(let account): "https://\(account).documents.azure.com/.default"
        case .keyVault: "https://vault.azure.net/.default"
        case .scope(let s): s
        }
    }

    public var kind: String {
        switch self {
        case .arm: "arm"
        case .cosmos: "cosmos"
        case .keyVault: "key_vault"
        case .scope: "custom"
        }
    }

    public static let cosmosFallbackScope = "https://cosmos.azure.com/.default"
}

/// An Azure profile: the app registration (or user-assigned managed identity) to become, and what for.
public struct AzureProfile: ProfileSettings {
    /// Templated from claims; rendered values must be a GUID or a domain name.
    public var tenantID: String
    public var clientID: String
    public var resource: AzureResource
    /// With `keyVaultSecrets`: the vault to read, e.g. `https://ci-secrets.vault.azure.net`.
    public var keyVaultURL: String?
    /// Job variable → secret name (optionally `name/version`). When set, the job gets these values,
    /// not the token.
    public var keyVaultSecrets: [String: String]
    /// The job variable that receives the access token.
    public var variable: String

    public var target: [String: String] {
        var t = ["tenant_id": tenantID, "client_id": clientID, "scope": resource.scope]
        if let keyVaultURL { t["key_vault"] = keyVaultURL }
        if !keyVaultSecrets.isEmpty { t["key_vault_secrets"] = keyVaultSecrets.values.sorted().joined(separator: ",") }
        return t
    }

    public init(tenantID: String, clientID: String, resource: AzureResource, keyVaultURL: String? = nil,
                keyVaultSecrets: [String: String] = [:], variable: String = "AZURE_ACCESS_TOKEN") {
        self.tenantID = tenantID
        self.clientID = clientID
        self.resource = resource
        self.keyVaultURL = keyVaultURL
        self.keyVaultSecrets = keyVaultSecrets
        self.variable = variable
    }
}

/// Microsoft Entra ID workload identity federation (federation.md A2): `client_credentials` with the
/// job's ID token (the one with Entra's audience) as `client_assertion`. Entra access tokens cannot
/// be revoked; revoke reports their expiry. Key Vault secrets read with the token are long-lived
/// values Airlock does not own: cleanup deletes the job's copies and says so.
public struct AzureProvider: CredentialProvider {
    public static let keyVaultAPIVersion = "7.4"
    public let name: String
    public let authorityHost: URL
    public let profiles: [String: AzureProfile]
    let exchange: Exchange

    public init(name: String, authorityHost: URL, profiles: [String: AzureProfile], transport: any HTTPTransport) {
        self.name = name
        self.authorityHost = authorityHost
        self.profiles = profiles
        exchange = Exchange(provider: name, transport: transport)
    }

    /// A tenant is a GUID or a domain; a client ID a GUID. Rendered claims cannot smuggle a path.
    static func checkIdentifier(_ v: String, _ what: String, profile: String, provider: String) throws -> String {
        guard !v.isEmpty, v.count <= 128, v.range(of: "^[A-Za-z0-9][A-Za-z0-9.-]*$", options: .regularExpression) != nil else {
            throw FederationError(fault: .job, profile: profile, provider: provider, code: "InvalidIdentifier",
                                  message: "\(what) \(v.debugDescription) (rendered from the profile's template) is not a GUID or domain name")
        }
        return v
    }

    public func issue(_ r: IssueRequest) async throws -> IssuedCredential {
        guard let p = profiles[r.profile] else {
            throw FederationError(fault: .system, profile: r.profile, provider: name, code: "ProfileMissing", message: "no Azure profile \(r.profile)")
        }
        let tenant: String
        let client: String
        do {
            tenant = try Self.checkIdentifier(try Template.render(p.tenantID, claims: r.job, escaping: .none), "tenant_id", profile: r.profile, provider: name)
            client = try Self.checkIdentifier(try Template.render(p.clientID, claims: r.job, escaping: .none), "client_id", profile: r.profile, provider: name)
        } catch let e as TemplateError {
            throw FederationError(fault: .job, profile: r.profile, provider: name, code: "TemplateClaimMissing", message: "\(e)")
        }
        let endpoint = authorityHost.appendingPathComponent(tenant).appendingPathComponent("oauth2/v2.0/token")
        var scope = p.resource.scope
        var fellBack = false
        var token: (access: String, expiresIn: Double)
        while true {
            do {
                token = try await requestToken(endpoint: endpoint, client: client, tenant: tenant, scope: scope, r)
                break
            } catch let e as EntraRejection where e.codes.contains(500011) && !fellBack {
                guard case .cosmos = p.resource else { throw e.error }
                // The account's own scope is unknown to this tenant (federation.md A2, Cosmos DB).
                scope = AzureResource.cosmosFallbackScope
                fellBack = true
            } catch let e as EntraRejection {
                throw e.error
            }
        }
        var details = ["tenant_id": tenant, "client_id": client, "authority": authorityHost.absoluteString,
                       "resource": p.resource.kind, "scope": scope, "variable": p.variable]
        if case .cosmos(let account) = p.resource { details["cosmos_account"] = account }
        if fellBack { details["cosmos_scope_fallback"] = "AADSTS500011 for the account scope; used \(AzureResource.cosmosFallbackScope)" }
        let expiresAt = r.now.addingTimeInterval(token.expiresIn)
        guard !p.keyVaultSecrets.isEmpty, let vault = p.keyVaultURL.flatMap(URL.init(string:)) else {
            let delivery = DeliveryContract(
                secrets: [.token("access_token", variable: p.variable, file: "\(r.profile)-azure-token")],
                environment: ["AZURE_TENANT_ID": tenant, "AZURE_CLIENT_ID": client],
                endpoint: .azureManagedIdentity, endpointEnvironment: ["AZURE_TENANT_ID": tenant])
            return IssuedCredential(profile: r.profile, provider: name, providerType: "azure", secrets: ["access_token": token.access],
                                    details: details, expiresAt: expiresAt, revocationHandle: nil,
                                    delivery: delivery, summary: "app \(client) in tenant \(tenant), \(scope)")
        }
        // Key Vault: read each secret with the token; the job gets the values, never the token.
        var secrets: [String: String] = [:]
        for (variable, secretName) in p.keyVaultSecrets.sorted(by: { $0.key < $1.key }) {
            secrets[variable] = try await readSecret(vault: vault, name: secretName, token: token.access, profile: r.profile, client: client, deadline: r.deadline)
            details["secret.\(variable)"] = secretName
        }
        details["key_vault"] = vault.absoluteString
        details["delivers"] = "key_vault_secrets"
        // Key Vault values under the profile's variable names; the token stays with Airlock. The
        // values outlive the job in Key Vault; the job's copies live until cleanup.
        let delivery = DeliveryContract(secrets: secrets.keys.sorted().map { .token($0, variable: $0, file: "\(r.profile)-\($0)") },
                                        copiedValues: true)
        return IssuedCredential(profile: r.profile, provider: name, providerType: "azure", secrets: secrets, details: details,
                                expiresAt: r.now.addingTimeInterval(Double(max(r.jobTimeoutSeconds, 60))), revocationHandle: "key_vault_copies",
                                delivery: delivery, summary: "app \(client) in tenant \(tenant), Key Vault secrets from \(vault.absoluteString)")
    }

    struct EntraRejection: Error {
        var codes: [Int]
        var error: FederationError
    }

    func requestToken(endpoint: URL, client: String, tenant: String, scope: String, _ r: IssueRequest) async throws -> (access: String, expiresIn: Double) {
        let form = [("grant_type", "client_credentials"), ("client_id", client),
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", r.idToken), ("scope", scope)]
        let profile = r.profile
        let resp = try await Retry.run(deadline: r.deadline) { _ -> HTTPResponse in
            let resp = try await exchange.send("POST", endpoint, form: form, profile: profile, deadline: r.deadline)
            if resp.status == 200 { return resp }
            let o = Exchange.object(resp)
            let codes = (o["error_codes"] as? [Any])?.compactMap { ($0 as? NSNumber)?.intValue } ?? []
            if Exchange.transient(resp.status) || (o["error"] as? String) == "temporarily_unavailable" {
                throw FederationError(fault: .system, profile: profile, provider: name, code: codes.first.map { "AADSTS\($0)" } ?? "HTTP \(resp.status)",
                                      message: "Entra ID answered HTTP \(resp.status)", transient: true, retryAfter: Exchange.retryAfter(resp))
            }
            if codes.contains(500011) { throw EntraRejection(codes: codes, error: translate(o, codes: codes, status: resp.status, client: client, tenant: tenant, scope: scope, r)) }
            throw translate(o, codes: codes, status: resp.status, client: client, tenant: tenant, scope: scope, r)
        }
        let o = Exchange.object(resp)
        guard let access = o["access_token"] as? String, !access.isEmpty else {
            throw FederationError(fault: .system, profile: profile, provider: name, code: "MalformedResponse",
                                  message: "Entra ID answered 200 without access_token")
        }
        return (access, Exchange.seconds(o["expires_in"]) ?? 3600)
    }

    /// Entra's description up to its trace lines, which carry nothing for the platform team.
    static func description(_ o: [String: Any]) -> String {
        let d = (o["error_description"] as? String) ?? ""
        let cut = d.range(of: "\r\nTrace ID")?.lowerBound ?? d.range(of: " Trace ID:")?.lowerBound ?? d.range(of: "\nTrace ID")?.lowerBound ?? d.endIndex
        return String(d[..<cut].prefix(600)).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `Assertion Issuer: 'x'.` and friends, as Entra reports what it saw.
    /// The value Entra quotes after `field`, as `field: 'v'` (AADSTS70021) or `field 'v'` (today's codes).
    static func quoted(_ field: String, in d: String) -> String? {
        guard let r = d.range(of: "\(field): '") ?? d.range(of: "\(field) '") else { return nil }
        guard let end = d[r.upperBound...].firstIndex(of: "'") else { return nil }
        return String(d[r.upperBound..<end])
    }

    /// Turns Entra's AADSTS codes into what the platform team must fix (the mismatches behind most
    /// failed federations: subject, audience, time, discovery).
    func translate(_ o: [String: Any], codes: [Int], status: Int, client: String, tenant: String, scope: String, _ r: IssueRequest) -> FederationError {
        let said = Self.description(o)
        let claims = PeekClaims.of(r.idToken)
        let iss = Self.quoted("Assertion Issuer", in: said) ?? Self.quoted("assertion issuer", in: said) ?? (claims["iss"] as? String) ?? "?"
        let sub = Self.quoted("Assertion Subject", in: said) ?? Self.quoted("assertion subject", in: said) ?? (claims["sub"] as? String) ?? "?"
        let aud = Self.quoted("Assertion Audience", in: said) ?? PeekClaims.audience(claims)
        let app = "application \(client) in tenant \(tenant)"
        func fail(_ fault: Fault, _ code: Int?, _ message: String) -> FederationError {
            FederationError(fault: fault, profile: r.profile, provider: name, code: code.map { "AADSTS\($0)" } ?? ((o["error"] as? String) ?? "HTTP \(status)"),
                            message: message + (said.isEmpty ? "" : "\n  Entra said: \(said)"))
        }
        if let c = codes.first(where: { $0 == 700211 }) {
            return fail(.job, c, """
            \(app) has no federated identity credential for the issuer "\(iss)".
              A credential's issuer must be exactly the iss of the token Airlock presents (GitLab's URL, or Airlock's [issuer] url with identity = "airlock"; scheme and host, no trailing slash): "\(iss)".
              Add one with that issuer, subject "\(sub)" and audiences ["\(aud)"]; see README "Azure".
            """)
        }
        if let c = codes.first(where: { $0 == 7002138 }) {
            return fail(.job, c, """
            \(app) has a federated identity credential for issuer "\(iss)" whose subject differs from this job's only in letter case.
              Entra compares subjects case-sensitively: the credential's subject must be exactly "\(sub)" (GitLab writes project paths as they are named, with their capitals).
            """)
        }
        if let c = codes.first(where: { [70021, 700213].contains($0) }) {
            return fail(.job, c, """
            no federated identity credential of \(app) matches this job's ID token.
              Entra saw: issuer "\(iss)", subject "\(sub)", audience "\(aud)".
              The federated credential must hold exactly (case-sensitive): issuer "\(iss)", subject "\(sub)", audiences ["\(aud)"].
              For several branches or tags use a flexible federated credential (claimsMatchingExpression on claims['sub']); see README "Azure".
            """)
        }
        if let c = codes.first(where: { $0 == 700212 }) {
            return fail(.job, c, """
            \(app) has a federated credential for issuer "\(iss)" and subject "\(sub)", but its audiences do not include the token's aud "\(aud)".
              Either set the credential's audiences to ["\(aud)"], or have jobs request the credential's audience in id_tokens: (and set token_audience on [providers.\(name)] to it).
            """)
        }
        if let c = codes.first(where: { $0 == 700024 }) {
            let exp = (claims["exp"] as? NSNumber).map { ISO8601.format(Date(timeIntervalSince1970: $0.doubleValue)) } ?? "?"
            let iat = (claims["iat"] as? NSNumber).map { ISO8601.format(Date(timeIntervalSince1970: $0.doubleValue)) } ?? "?"
            return fail(.job, c, """
            Entra says the job's ID token is outside its valid time range (issued \(iat), expires \(exp), Airlock's clock \(ISO8601.format(Date()))).
              GitLab ID tokens live for the job's timeout: a job retried long after it started, or a clock off on the runner host or GitLab, causes this. Check NTP on both; retry the job.
            """)
        }
        if let c = codes.first(where: { $0 == 501661 || $0 == 90061 }) {
            return fail(.job, c, """
            Entra could not fetch the issuer's OpenID Connect discovery for "\(iss)" (\(iss)/.well-known/openid-configuration and its jwks_uri).
              Entra fetches them from the internet: the GitLab instance must serve both publicly (no VPN, IP allow-list or login in front of them).
              Airlock verified the same token against the same issuer from the runner, so the keys exist; only Entra cannot reach them.
            """)
        }
        if let c = codes.first(where: { $0 == 700016 }) {
            return fail(.job, c, "\(app) does not exist (check the profile's client_id and tenant_id; an app from another tenant needs admin consent there)")
        }
        if let c = codes.first(where: { $0 == 500011 }) {
            return fail(.job, c, "the resource of scope \(scope) is not known in tenant \(tenant) (check the profile's resource, account or scope)")
        }
        let fault: Fault = ["invalid_request", "invalid_client", "unauthorized_client", "invalid_grant", "invalid_scope"].contains((o["error"] as? String) ?? "") ? .job : .system
        return fail(fault, codes.first, "Entra ID refused the token request for \(app) (HTTP \(status))")
    }

    /// `GET <vault>/secrets/<name>[/<version>]?api-version=7.4` (federation.md A2, Key Vault).
    func readSecret(vault: URL, name secret: String, token: String, profile: String, client: String, deadline: Date) async throws -> String {
        let parts = secret.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (1...2).contains(parts.count), parts.allSatisfy({ $0.range(of: "^[0-9A-Za-z-]{1,127}$", options: .regularExpression) != nil }) else {
            throw FederationError(fault: .system, profile: profile, provider: name, code: "InvalidSecretName",
                                  message: "Key Vault secret \(secret.debugDescription) is not a name (letters, digits, '-') with an optional /version")
        }
        var url = vault.appendingPathComponent("secrets")
        for p in parts { url = url.appendingPathComponent(p) }
        var comps = URLComponents(url: url, resolvingAgainstBaseURL: false)!
        comps.queryItems = [URLQueryItem(name: "api-version", value: Self.keyVaultAPIVersion)]
        let secretURL = comps.url!
        let resp = try await Retry.run(deadline: deadline) { _ -> HTTPResponse in
            let resp = try await exchange.send("GET", secretURL, headers: ["Authorization": "Bearer \(token)"], profile: profile, deadline: deadline)
            if resp.status == 200 { return resp }
            let err = (Exchange.object(resp)["error"] as? [String: Any]) ?? [:]
            let code = (err["code"] as? String) ?? "HTTP \(resp.status)"
            let msg = String(((err["message"] as? String) ?? "").prefix(300))
            if Exchange.transient(resp.status) {
                throw FederationError(fault: .system, profile: profile, provider: name, code: code, message: "Key Vault answered HTTP \(resp.status)",
                                      transient: true, retryAfter: Exchange.retryAfter(resp))
            }
            switch resp.status {
            case 401, 403:
                throw FederationError(fault: .job, profile: profile, provider: name, code: code,
                                      message: "application \(client) may not read secret \(secret) in \(vault.absoluteString): give it the \"Key Vault Secrets User\" role on the vault or the secret (or a get-secret access policy). Key Vault said: \(msg)")
            case 404:
                throw FederationError(fault: .system, profile: profile, provider: name, code: code,
                                      message: "secret \(secret) does not exist in \(vault.absoluteString) (or is disabled). Key Vault said: \(msg)")
            default:
                throw FederationError(fault: .system, profile: profile, provider: name, code: code, message: "reading secret \(secret): HTTP \(resp.status) \(msg)")
            }
        }
        guard let value = Exchange.object(resp)["value"] as? String else {
            throw FederationError(fault: .system, profile: profile, provider: name, code: "MalformedResponse", message: "Key Vault answered 200 without a value for \(secret)")
        }
        return value
    }

    public func revoke(_ c: IssuedCredential, now: Date) async throws -> RevokeOutcome {
        if c.revocationHandle == "key_vault_copies" { return .copiesDeleted }
        // Entra has no revocation for app-only access tokens.
        return c.expiresAt <= now ? .expired(at: c.expiresAt) : .notRevocable(expiresAt: c.expiresAt)
    }
}
