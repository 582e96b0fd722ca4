import Foundation
import Identity

/// Google's Security Token Service, IAM Credentials and OAuth 2.0 revoke/tokeninfo endpoints on one
/// loopback server, following federation.md A3 (google-auth's sts.py and impersonated_credentials.py
/// wire format, the generateAccessToken reference, revoke as a form POST).
///
/// STS checks the subject token as a workload identity pool provider does: the audience must name a
/// configured provider (else `invalid_target`); the token's iss must be the provider's issuer, its
/// RS256 signature must verify against the issuer's keys, its aud must be one of the allowed
/// audiences or, when none are configured, the provider's resource name with or without `https:`;
/// it must not be expired; the attribute condition must hold (else `invalid_grant` with Google's
/// sentences). generateAccessToken requires the federated token as Bearer, a known service account
/// whose workloadIdentityUser binding admits the token's subject, and a lifetime of at most 3600 s.
/// Revocation: neither kind is revocable; `/revoke` answers 400 `invalid_request` "Token is not
/// revocable." as Google does for service-account tokens (google-github-actions/auth#165, Google's
/// own maintainer), and counts the calls so tests can show Airlock makes none.
public final class FakeGoogle: @unchecked Sendable {
    public struct PoolProvider: Sendable {
        public var issuer: String
        public var allowedAudiences: [String]
        public var condition: @Sendable ([String: String]) -> Bool
        public init(issuer: String, allowedAudiences: [String] = [], condition: @escaping @Sendable ([String: String]) -> Bool = { _ in true }) {
            self.issuer = issuer
            self.allowedAudiences = allowedAudiences
            self.condition = condition
        }
    }
    struct Token { var kind: String; var subject: String; var email: String?; var expires: Date; var revoked: Bool; var scopes: [String] }

    public private(set) var server: LoopbackHTTPServer!
    private let issuer: any TrustedIssuer
    private let lock = NSLock()
    private var providers: [String: PoolProvider] = [:]
    /// Service account email → subjects allowed to impersonate it.
    private var serviceAccounts: [String: Set<String>] = [:]
    private var tokens: [String: Token] = [:]
    private var revokeCalls = 0
    /// How many requests reached `/revoke`.
    public var revokeRequests: Int { lock.withLock { revokeCalls } }

    public var baseURL: String { server.baseURL }
    public var stsEndpoint: String { "\(server.baseURL)/v1/token" }
    public var revokeEndpoint: String { "\(server.baseURL)/revoke" }

    public init(issuer: any TrustedIssuer) throws {
        self.issuer = issuer
        server = try LoopbackHTTPServer { [unowned self] in self.handle($0) }
    }

    public func addProvider(_ resourceName: String, _ p: PoolProvider) { lock.withLock { providers[resourceName] = p } }
    public func addServiceAccount(_ email: String, impersonators: Set<String>) { lock.withLock { serviceAccounts[email] = impersonators } }
    /// Tokens issued, by kind ("federated", "impersonated"), and how many of them are revoked.
    public func count(kind: String, revoked: Bool? = nil) -> Int {
        lock.withLock { tokens.values.filter { $0.kind == kind && (revoked == nil || $0.revoked == revoked) }.count }
    }

    private func oauthError(_ error: String, _ description: String, status: Int = 400) -> FakeResponse {
        .json(["error": error, "error_description": description], status: status)
    }

    private func googleError(_ code: Int, _ status: String, _ message: String) -> FakeResponse {
        .json(["error": ["code": code, "message": message, "status": status]], status: code)
    }

    private func newToken(_ prefix: String) -> String {
        prefix + UUID().uuidString.replacingOccurrences(of: "-", with: "") + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(20)
    }

    private func handle(_ r: FakeRequest) -> FakeResponse {
        if r.method == "POST" && r.path == "/v1/token" { return sts(r) }
        if r.method == "POST" && r.path.hasPrefix("/v1/projects/-/serviceAccounts/") && r.path.hasSuffix(":generateAccessToken") { return generate(r) }
        if r.method == "POST" && r.path == "/revoke" {
            // Service-account and federated access tokens are not revocable: Google answers 400
            // invalid_request "Token is not revocable." (google-github-actions/auth#165).
            lock.withLock { revokeCalls += 1 }
            return oauthError("invalid_request", "Token is not revocable.")
        }
        if r.path == "/tokeninfo" {
            let t = r.query["access_token"] ?? r.form["access_token"] ?? ""
            return lock.withLock { () -> FakeResponse in
                guard let tok = tokens[t], !tok.revoked, tok.expires > Date() else { return .json(["error_description": "Invalid Value"], status: 400) }
                var o: [String: Any] = ["scope": tok.scopes.joined(separator: " "), "expires_in": String(Int(tok.expires.timeIntervalSinceNow)),
                                        "exp": String(Int(tok.expires.timeIntervalSince1970)), "access_type": "online"]
                if let e = tok.email { o["email"] = e; o["azp"] = e }
                return .json(o)
            }
        }
        return googleError(404, "NOT_FOUND", "no route \(r.method) \(r.path)")
    }

    private func sts(_ r: FakeRequest) -> FakeResponse {
        let f = r.form
        guard f["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange" else { return oauthError("unsupported_grant_type", "Unsupported grant type.") }
        guard ["urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"].contains(f["subject_token_type"] ?? "") else {
            return oauthError("invalid_request", "Invalid subject_token_type.")
        }
        guard f["requested_token_type"] == "urn:ietf:params:oauth:token-type:access_token" else { return oauthError("invalid_request", "Invalid requested_token_type.") }
        let audience = f["audience"] ?? ""
        guard let p = lock.withLock({ providers[audience] }) else {
            return oauthError("invalid_target", "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.")
        }
        let jwt = f["subject_token"] ?? ""
        guard let claims = issuer.verifiedClaims(jwt) else { return oauthError("invalid_grant", "Invalid JWT signature or the signing key is not in the issuer's JWKS.") }
        guard claims["iss"] as? String == p.issuer else { return oauthError("invalid_grant", "The issuer in ID Token \(claims["iss"] ?? "") does not match the expected ones.") }
        let auds = (claims["aud"] as? String).map { [$0] } ?? (claims["aud"] as? [String]) ?? []
        let allowed = p.allowedAudiences.isEmpty ? [audience, "https:" + audience] : p.allowedAudiences
        guard auds.contains(where: allowed.contains) else {
            return oauthError("invalid_grant", "The audience in ID Token [\(auds.joined(separator: ", "))] does not match the expected audience.")
        }
        guard let exp = (claims["exp"] as? NSNumber)?.doubleValue, exp > Date().timeIntervalSince1970 else {
            return oauthError("invalid_grant", "ID Token issued at \((claims["iat"] as? NSNumber)?.intValue ?? 0) is stale to sign-in.")
        }
        var strings: [String: String] = [:]
        for (k, v) in claims { if let s = v as? String { strings[k] = s } else if let n = v as? NSNumber { strings[k] = n.stringValue } }
        guard p.condition(strings) else { return oauthError("unauthorized_client", "The given credential is rejected by the attribute condition.") }
        let token = newToken("ya29.d.fed-")
        let scopes = (f["scope"] ?? "").split(separator: " ").map(String.init)
        lock.withLock { tokens[token] = Token(kind: "federated", subject: strings["sub"] ?? "", email: nil, expires: Date().addingTimeInterval(3600), revoked: false, scopes: scopes) }
        return .json(["access_token": token, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 3600])
    }

    private func generate(_ r: FakeRequest) -> FakeResponse {
        guard let auth = r.headers["authorization"], auth.hasPrefix("Bearer ") else {
            return googleError(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token.")
        }
        let email = String(r.path.dropFirst("/v1/projects/-/serviceAccounts/".count).dropLast(":generateAccessToken".count)).removingPercentEncoding ?? ""
        return lock.withLock { () -> FakeResponse in
            guard let fed = tokens[String(auth.dropFirst(7))], fed.kind == "federated", !fed.revoked, fed.expires > Date() else {
                return googleError(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
            }
            guard let impersonators = serviceAccounts[email] else { return googleError(404, "NOT_FOUND", "Not found; Gaia id not found for email \(email)") }
            guard impersonators.contains(fed.subject) else {
                return googleError(403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).")
            }
            let body = (try? JSONSerialization.jsonObject(with: r.body) as? [String: Any]) ?? [:]
            let lifetimeText = (body["lifetime"] as? String) ?? "3600s"
            guard lifetimeText.hasSuffix("s"), let lifetime = Int(lifetimeText.dropLast()), lifetime > 0, lifetime <= 3600 else {
                return googleError(400, "INVALID_ARGUMENT", "The lifetime \(lifetimeText) is invalid; it must be at most 3600s.")
            }
            let scopes = (body["scope"] as? [String]) ?? []
            guard !scopes.isEmpty else { return googleError(400, "INVALID_ARGUMENT", "Scope required.") }
            let token = newToken("ya29.c.sa-")
            let expires = Date().addingTimeInterval(Double(lifetime))
            tokens[token] = Token(kind: "impersonated", subject: fed.subject, email: email, expires: expires, revoked: false, scopes: scopes)
            let f = ISO8601DateFormatter()
            return .json(["accessToken": token, "expireTime": f.string(from: expires)])
        }
    }
}
