public import Foundation
public import Identity
import Policy
import RunnerContract

/// A Google Cloud profile: the workload identity provider to exchange with and, optionally, the
/// service account to impersonate.
public struct GCPProfile: ProfileSettings {
    public static let cloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform"
    /// `//iam.googleapis.com/projects/<NUM>/locations/global/workloadIdentityPools/<POOL>/providers/<PROV>`.
    public var workloadIdentityProvider: String
    /// Templated from claims; nil: the federated token itself is delivered (direct resource access).
    public var serviceAccount: String?
    public var scopes: [String]
    /// Longest token asked of generateAccessToken (≤ 1 h unless the organisation allows 12 h).
    public var maxLifetime: Double
    /// Delivered as CLOUDSDK_CORE_PROJECT and GOOGLE_CLOUD_PROJECT when set.
    public var projectID: String?

    public init(workloadIdentityProvider: String, serviceAccount: String?, scopes: [String] = [cloudPlatformScope],
                maxLifetime: Double = 3600, projectID: String? = nil) {
        self.workloadIdentityProvider = workloadIdentityProvider
        self.serviceAccount = serviceAccount
        self.scopes = scopes
        self.maxLifetime = maxLifetime
        self.projectID = projectID
    }

    public var target: [String: String] {
        var t = ["workload_identity_provider": workloadIdentityProvider, "scopes": scopes.joined(separator: ",")]
        if let serviceAccount { t["service_account"] = serviceAccount }
        if let projectID { t["project_id"] = projectID }
        return t
    }

    /// A pool provider without allowed audiences accepts its own resource name with `https:`.
    public var airlockAudience: String? { "https:" + workloadIdentityProvider }

    /// Project number, pool and provider from the audience, for audit records and messages.
    public var poolParts: (project: String, pool: String, provider: String)? {
        let p = workloadIdentityProvider.split(separator: "/").map(String.init)
        guard let a = p.firstIndex(of: "projects"), let b = p.firstIndex(of: "workloadIdentityPools"), let c = p.firstIndex(of: "providers"),
              a + 1 < p.count, b + 1 < p.count, c + 1 < p.count else { return nil }
        return (p[a + 1], p[b + 1], p[c + 1])
    }
}

/// Google Cloud workload identity federation (federation.md A3): STS token exchange with the job's
/// ID token, then `generateAccessToken` for the profile's service account with a lifetime bounded by
/// the job timeout. Neither token can be revoked: Google's revoke endpoint answers service-account
/// and federated access tokens 400 `invalid_request` "Token is not revocable." (Google's own word in
/// google-github-actions/auth#165), so cleanup records when the token expires and calls nothing.
public struct GCPProvider: CredentialProvider {
    public let name: String
    public let stsEndpoint: URL
    public let iamCredentialsEndpoint: URL
    public let profiles: [String: GCPProfile]
    let exchange: Exchange

    public init(name: String, stsEndpoint: URL, iamCredentialsEndpoint: URL,
                profiles: [String: GCPProfile], transport: any HTTPTransport) {
        self.name = name
        self.stsEndpoint = stsEndpoint
        self.iamCredentialsEndpoint = iamCredentialsEndpoint
        self.profiles = profiles
        exchange = Exchange(provider: name, transport: transport)
    }

    /// The lifetime asked for: the job timeout, within [5 min, the profile's maximum].
    public static func lifetime(jobTimeout: Int, max: Double) -> Int {
        Int(Swift.min(max, Swift.max(300, Double(jobTimeout))))
    }

    public func issue(_ r: IssueRequest) async throws -> IssuedCredential {
        guard let p = profiles[r.profile] else {
            throw FederationError(fault: .system, profile: r.profile, provider: name, code: "ProfileMissing", message: "no GCP profile \(r.profile)")
        }
        let serviceAccount: String?
        do {
            serviceAccount = try p.serviceAccount.map { try Template.render($0, claims: r.job, escaping: .urlPathSegment) }
        } catch {
            throw FederationError(fault: .job, profile: r.profile, provider: name, code: "TemplateClaimMissing", message: "\(error)")
        }
        let profile = r.profile
        let claims = PeekClaims.of(r.idToken)
        let (tokenIss, tokenSub, tokenAud) = ((claims["iss"] as? String) ?? "?", (claims["sub"] as? String) ?? "?", PeekClaims.audience(claims))
        // 1. STS: the job's ID token for a federated access token.
        let form = [("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("audience", p.workloadIdentityProvider),
                    ("scope", p.scopes.joined(separator: " ")), ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
                    ("subject_token", r.idToken), ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt")]
        let sts = try await Retry.run(deadline: r.deadline) { _ -> HTTPResponse in
            let resp = try await exchange.send("POST", stsEndpoint, form: form, profile: profile, deadline: r.deadline)
            if resp.status == 200 { return resp }
            let o = Exchange.object(resp)
            let code = (o["error"] as? String) ?? "HTTP \(resp.status)"
            let desc = String(((o["error_description"] as? String) ?? "").prefix(400))
            if Exchange.transient(resp.status) {
                throw FederationError(fault: .system, profile: profile, provider: name, code: code, message: "Google STS answered HTTP \(resp.status)",
                                      transient: true, retryAfter: Exchange.retryAfter(resp))
            }
            let fault: Fault = ["invalid_grant", "invalid_target", "unauthorized_client", "access_denied"].contains(code) ? .job : .system
            throw FederationError(fault: fault, profile: profile, provider: name, code: code, message: """
            Google STS refused the job's token for \(p.workloadIdentityProvider): \(desc.isEmpty ? "HTTP \(resp.status)" : desc)
              The token carried issuer "\(tokenIss)", subject "\(tokenSub)", audience "\(tokenAud)".
              The provider's issuer URI must equal that issuer, its allowed audiences must include that audience (or be empty, with the token's aud set to https:\(p.workloadIdentityProvider)), and its attribute condition must hold for the token's claims.
            """)
        }
        let so = Exchange.object(sts)
        guard let federated = so["access_token"] as? String, !federated.isEmpty else {
            throw FederationError(fault: .system, profile: profile, provider: name, code: "MalformedResponse", message: "Google STS answered 200 without access_token")
        }
        let federatedExpiry = r.now.addingTimeInterval(Exchange.seconds(so["expires_in"]) ?? 3600)
        var details = ["workload_identity_provider": p.workloadIdentityProvider, "scopes": p.scopes.joined(separator: " ")]
        if let parts = p.poolParts {
            details["project_number"] = parts.project
            details["pool"] = parts.pool
            details["pool_provider"] = parts.provider
        }
        if let pid = p.projectID { details["project_id"] = pid }
        let delivery = GCPKind.delivery(profile: profile, projectID: p.projectID)
        guard let serviceAccount else {
            details["token"] = "federated"
            return IssuedCredential(profile: profile, provider: name, providerType: "gcp", secrets: ["access_token": federated],
                                    details: details, expiresAt: federatedExpiry, revocationHandle: nil, delivery: delivery,
                                    summary: "pool \(p.poolParts?.pool ?? "?")/\(p.poolParts?.provider ?? "?")")
        }
        // 2. Impersonation: a service account token that lives no longer than the job.
        let lifetime = Self.lifetime(jobTimeout: r.jobTimeoutSeconds, max: p.maxLifetime)
        let url = iamCredentialsEndpoint.appendingPathComponent("v1/projects/-/serviceAccounts/\(serviceAccount):generateAccessToken")
        let body = try? JSONSerialization.data(withJSONObject: ["scope": p.scopes, "lifetime": "\(lifetime)s", "delegates": [String]()] as [String: Any], options: [.sortedKeys])
        let gen = try await Retry.run(deadline: r.deadline) { _ -> HTTPResponse in
            let resp = try await exchange.send("POST", url, json: body, headers: ["Authorization": "Bearer \(federated)"], profile: profile, deadline: r.deadline)
            if resp.status == 200 { return resp }
            let err = (Exchange.object(resp)["error"] as? [String: Any]) ?? [:]
            let status = (err["status"] as? String) ?? "HTTP \(resp.status)"
            let msg = String(((err["message"] as? String) ?? "").prefix(400))
            if Exchange.transient(resp.status) {
                throw FederationError(fault: .system, profile: profile, provider: name, code: status, message: "IAM Credentials answered HTTP \(resp.status)",
                                      transient: true, retryAfter: Exchange.retryAfter(resp))
            }
            if resp.status == 403 || resp.status == 401 {
                let principal = p.poolParts.map { "principal://iam.googleapis.com/projects/\($0.project)/locations/global/workloadIdentityPools/\($0.pool)/subject/\(tokenSub)" } ?? "the pool principal"
                throw FederationError(fault: .job, profile: profile, provider: name, code: status, message: """
                the job's federated identity may not impersonate \(serviceAccount): grant roles/iam.workloadIdentityUser on the service account to \(principal) (or to a principalSet:// of an attribute, e.g. attribute.project_id/\(r.job["project_id"] ?? "ID")). IAM said: \(msg)
                """)
            }
            throw FederationError(fault: .system, profile: profile, provider: name, code: status,
                                  message: "generateAccessToken for \(serviceAccount) failed (HTTP \(resp.status)): \(msg)")
        }
        let go = Exchange.object(gen)
        guard let access = go["accessToken"] as? String, !access.isEmpty else {
            throw FederationError(fault: .system, profile: profile, provider: name, code: "MalformedResponse", message: "generateAccessToken answered 200 without accessToken")
        }
        let expiry = (go["expireTime"] as? String).flatMap(ISO8601.parse) ?? r.now.addingTimeInterval(Double(lifetime))
        details["service_account"] = serviceAccount
        details["lifetime_seconds"] = String(lifetime)
        details["token"] = "impersonated"
        // The federated token never leaves Airlock; it is not delivered and simply expires.
        details["federated_token_expires_at"] = ISO8601.format(federatedExpiry)
        return IssuedCredential(profile: profile, provider: name, providerType: "gcp", secrets: ["access_token": access],
                                details: details, expiresAt: expiry, revocationHandle: nil, delivery: delivery, summary: "as \(serviceAccount)")
    }

    /// Google access tokens for service accounts and federated identities are not revocable: the
    /// honest outcome is when it stops working, with no call that can only fail.
    public func revoke(_ c: IssuedCredential, now: Date) async throws -> RevokeOutcome {
        c.expiresAt <= now ? .expired(at: c.expiresAt) : .notRevocable(expiresAt: c.expiresAt)
    }
}
