public import _CryptoExtras
public import Crypto
import Foundation
import Identity

/// An OAuth 2.0 authorization server fake that follows federation.md A5 (RFC 8693 token exchange,
/// RFC 7523 client assertions as OIDC private_key_jwt, RFC 7009 revocation, RFC 7662 introspection,
/// RFC 6749 errors) in Auth0's shape (`POST /oauth/token`, `POST /oauth/revoke`):
/// - client assertions are verified against the client's registered public key: alg, signature,
///   iss = sub = client_id, aud = the expected audience (Auth0: the tenant origin with a trailing
///   slash), exp in the future and at most 5 minutes away, and a jti never seen before (replay);
/// - subject tokens (token exchange) are verified against the test GitLab issuer's JWKS, their aud
///   and exp, and the subject_token_type must be the configured one;
/// - issued access and refresh tokens are kept with their state; revocation and introspection use it.
///
/// As Auth0 does: private_key_jwt assertions signed RS256 only here (Auth0 takes RS256, RS384 and
/// PS256; ES256 is refused unless `acceptsES256`); access tokens are JWTs (Auth0's for an API
/// audience; `jwtAccessTokens = false` for a server with opaque tokens); a refresh token comes back
/// only when the scope asks for `offline_access` (Auth0: "Get Refresh Tokens").
public final class FakeOAuthServer: @unchecked Sendable {
    public struct Client: Sendable {
        public var rsaKey: _RSA.Signing.PublicKey?
        public var ecKey: P256.Signing.PublicKey?
        public init(rsaKey: _RSA.Signing.PublicKey? = nil, ecKey: P256.Signing.PublicKey? = nil) {
            self.rsaKey = rsaKey
            self.ecKey = ecKey
        }
    }
    struct Issued { var clientID: String; var kind: String; var revoked: Bool; var expires: Date }

    public private(set) var server: LoopbackHTTPServer!
    private let lock = NSLock()
    private let issuer: any TrustedIssuer
    private var clients: [String: Client] = [:]
    private var seenJTI: Set<String> = []
    private var tokens: [String: Issued] = [:]
    private var revokedLog: [(token: String, hint: String?)] = []
    /// What `subject_token_type` must be (Auth0 Custom Token Exchange wants the profile's own URI).
    public var subjectTokenType = "urn:ietf:params:oauth:token-type:jwt"
    /// The `aud` a subject token must carry.
    public var subjectAudience: String
    public var revocationEnabled = true
    /// Seconds to wait before answering /oauth/token.
    public var tokenDelay: Double = 0
    /// Refuse access-token revocation with `unsupported_token_type`, as Auth0 does.
    public var refreshTokensOnlyRevocation = true
    /// Access tokens are issued already inactive (introspection answers `active: false`).
    public var issuedTokensInactive = false
    /// Whether ES256 client assertions are accepted (Auth0: no).
    public var acceptsES256 = false
    /// Access tokens are JWTs (Auth0) rather than opaque strings.
    public var jwtAccessTokens = true

    public var baseURL: String { server.baseURL }
    public var tokenEndpoint: String { baseURL + "/oauth/token" }
    /// Auth0's client assertion audience: the tenant origin with its trailing slash.
    public var assertionAudience: String { baseURL + "/" }

    public init(issuer: any TrustedIssuer, subjectAudience: String) throws {
        self.issuer = issuer
        self.subjectAudience = subjectAudience
        server = try LoopbackHTTPServer { [unowned self] in self.handle($0) }
    }

    public func register(clientID: String, _ c: Client) { lock.withLock { clients[clientID] = c } }
    /// Every token revoked, with the hint it came with.
    public var revoked: [(token: String, hint: String?)] { lock.withLock { revokedLog } }
    /// Whether a token is known and not revoked.
    public func isActive(_ token: String) -> Bool { lock.withLock { tokens[token].map { !$0.revoked && $0.expires > Date() } ?? false } }
    /// Refresh tokens issued so far.
    public var refreshTokens: [String] { lock.withLock { tokens.filter { $0.value.kind == "refresh_token" }.map(\.key) } }

    private func err(_ code: String, _ desc: String, status: Int = 400) -> FakeResponse {
        .json(["error": code, "error_description": desc], status: status)
    }

    private func handle(_ r: FakeRequest) -> FakeResponse {
        let f = r.form
        switch r.path {
        case "/oauth/token":
            if tokenDelay > 0 { Thread.sleep(forTimeInterval: tokenDelay) }
            return token(f)
        case "/oauth/revoke":
            guard revocationEnabled else { return FakeResponse(status: 404, body: Data("Not Found".utf8)) }
            guard let client = authenticate(f, requireAssertion: false).0 else { return err("invalid_client", "client authentication failed", status: 401) }
            guard let t = f["token"] else { return err("invalid_request", "token is required") }
            return lock.withLock { () -> FakeResponse in
                if let i = tokens[t], i.clientID == client {
                    if i.kind == "access_token" && refreshTokensOnlyRevocation {
                        return err("unsupported_token_type", "only refresh tokens can be revoked")
                    }
                    tokens[t]?.revoked = true
                    revokedLog.append((t, f["token_type_hint"]))
                }
                return FakeResponse(status: 200, body: Data())  // 200 even for unknown tokens (RFC 7009 §2.2)
            }
        case "/oauth/introspect":
            guard authenticate(f, requireAssertion: false).0 != nil else { return err("invalid_client", "client authentication failed", status: 401) }
            let active = f["token"].map(isActive) ?? false
            return active ? .json(["active": true, "token_type": "Bearer"] as [String: Any]) : .json(["active": false] as [String: Any])
        default:
            return FakeResponse(status: 404, body: Data())
        }
    }

    /// Returns the authenticated client id, or nil and the reason.
    private func authenticate(_ f: [String: String], requireAssertion: Bool) -> (String?, String) {
        guard let assertion = f["client_assertion"] else {
            if requireAssertion { return (nil, "client_assertion is required") }
            if let id = f["client_id"], lock.withLock({ clients[id] != nil }) { return (id, "") }
            return (nil, "unknown client")
        }
        guard f["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" else { return (nil, "bad client_assertion_type") }
        let parts = assertion.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let h = Base64URL.decode(parts[0]), let p = Base64URL.decode(parts[1]), let sig = Base64URL.decode(parts[2]),
              let header = try? JSONSerialization.jsonObject(with: h) as? [String: Any],
              let claims = try? JSONSerialization.jsonObject(with: p) as? [String: Any],
              let iss = claims["iss"] as? String, let client = lock.withLock({ clients[iss] }) else { return (nil, "malformed assertion or unknown client") }
        let input = Data("\(parts[0]).\(parts[1])".utf8)
        let ok: Bool
        switch header["alg"] as? String {
        case "RS256": ok = client.rsaKey.map { $0.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: sig), for: input, padding: .insecurePKCS1v1_5) } ?? false
        case "ES256" where !acceptsES256: return (nil, "Client assertion signing algorithm ES256 is not supported; use RS256, RS384 or PS256")
        case "ES256": ok = (try? P256.Signing.ECDSASignature(rawRepresentation: sig)).map { s in client.ecKey?.isValidSignature(s, for: input) ?? false } ?? false
        default: ok = false
        }
        guard ok else { return (nil, "assertion signature invalid") }
        guard claims["sub"] as? String == iss else { return (nil, "sub must equal iss") }
        let aud = (claims["aud"] as? String).map { [$0] } ?? (claims["aud"] as? [String]) ?? []
        guard aud.contains(assertionAudience) else { return (nil, "aud must be \(assertionAudience)") }
        let now = Date().timeIntervalSince1970
        guard let exp = claims["exp"] as? Double, exp > now, exp - now <= 300 else { return (nil, "exp missing, past, or more than 5 minutes away") }
        guard let jti = claims["jti"] as? String else { return (nil, "jti required") }
        let fresh = lock.withLock { seenJTI.insert(jti).inserted }
        guard fresh else { return (nil, "jti \(jti) was already used (replay)") }
        return (iss, "")
    }

    private func token(_ f: [String: String]) -> FakeResponse {
        switch f["grant_type"] {
        case "client_credentials":
            let (client, why) = authenticate(f, requireAssertion: true)
            guard let client else { return err("invalid_client", why, status: 401) }
            return issue(client: client, refresh: false, scope: f["scope"], audience: f["audience"])
        case "urn:ietf:params:oauth:grant-type:token-exchange":
            let (client, why) = authenticate(f, requireAssertion: false)
            guard let client else { return err("invalid_client", why, status: 401) }
            guard f["subject_token_type"] == subjectTokenType else {
                return err("invalid_request", "subject_token_type must be \(subjectTokenType)")
            }
            guard let st = f["subject_token"], verifySubject(st) else { return err("invalid_grant", "subject token is invalid") }
            let offline = (f["scope"] ?? "").split(separator: " ").contains("offline_access")
            return issue(client: client, refresh: offline, scope: f["scope"], audience: f["audience"])
        default:
            return err("unsupported_grant_type", "grant_type \(f["grant_type"] ?? "") is not supported")
        }
    }

    private func verifySubject(_ jwt: String) -> Bool {
        guard let claims = issuer.verifiedClaims(jwt) else { return false }
        let aud = (claims["aud"] as? String).map { [$0] } ?? (claims["aud"] as? [String]) ?? []
        guard aud.contains(subjectAudience), let exp = claims["exp"] as? Double, exp > Date().timeIntervalSince1970 else { return false }
        return true
    }

    private func issue(client: String, refresh: Bool, scope: String?, audience: String?) -> FakeResponse {
        func random() -> String { (0..<3).map { _ in UUID().uuidString.replacingOccurrences(of: "-", with: "") }.joined() }
        let access: String
        if jwtAccessTokens {
            let now = Int(Date().timeIntervalSince1970)
            var claims: [String: Any] = ["iss": baseURL + "/", "sub": client + "@clients", "iat": now, "exp": now + 3600, "jti": random()]
            if let audience { claims["aud"] = audience }
            if let scope { claims["scope"] = scope }
            let sig = Data((0..<256).map { _ in UInt8.random(in: 0...255) })
            access = TestIssuer.segment(["alg": "RS256", "typ": "at+jwt", "kid": "fake-auth0"]) + "." + TestIssuer.segment(claims) + "." + Base64URL.encode(sig)
        } else {
            access = "at_" + random()
        }
        var body: [String: Any] = ["access_token": access, "token_type": "Bearer", "expires_in": 3600,
                                   "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"]
        // `issuedTokensInactive`: an access token already revoked when handed out (an administrator
        // disabled the client or user between issue and use); introspection answers inactive.
        lock.withLock { tokens[access] = Issued(clientID: client, kind: "access_token", revoked: issuedTokensInactive, expires: Date().addingTimeInterval(3600)) }
        if refresh {
            let rt = "rt_" + random()
            body["refresh_token"] = rt
            lock.withLock { tokens[rt] = Issued(clientID: client, kind: "refresh_token", revoked: false, expires: Date().addingTimeInterval(86400)) }
        }
        if let scope { body["scope"] = scope }
        return .json(body)
    }
}
