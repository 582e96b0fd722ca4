import _CryptoExtras
import Crypto
import Foundation
import Identity

/// Kept for what a real server will not do on demand (5xx, garbage, slowness); everything else is
/// tested against OpenBao (`OpenBaoServer`). Where it stays it is as strict as OpenBao 2.7:
/// a role must be `role_type = "jwt"`, and a token may create children only when its role's
/// policies allow `auth/token/create` (the default policy does not).
///
/// A HashiCorp Vault fake that follows federation.md A4 (and Vault's api-docs for auth/jwt,
/// auth/token, secret/kv/kv-v2 and the database engine's creds endpoint):
/// - `POST /v1/auth/<mount>/login {"role","jwt"}`: verifies the JWT's RS256 signature against the
///   test issuer's JWKS (its own check, not Airlock's verifier), the role's bound audience, expiry
///   and bound claims; answers `auth.{client_token, accessor, policies, lease_duration, renewable}`.
/// - `GET /v1/<db>/creds/<role>`: a leased username/password tied to the calling token.
/// - `GET /v1/<kv>/data/<path>`: KV v2, `data.data` and `data.metadata`.
/// - `POST /v1/auth/token/create`: a child token with a TTL.
/// - `POST /v1/auth/token/revoke-self`: revokes the token, its children and their leases.
/// - Errors are `{"errors": [...]}` with 400/403; `X-Vault-Namespace` is required when configured.
/// It records revocations so tests can assert them.
public final class FakeVault: @unchecked Sendable {
    public struct Role: Sendable {
        public var boundAudience: String
        public var boundClaims: [String: String]
        /// `role_type`; OpenBao refuses a JWT login on anything but "jwt".
        public var roleType: String
        /// Whether the role's policies allow `auth/token/create`.
        public var mayCreateTokens: Bool
        public init(boundAudience: String, boundClaims: [String: String] = [:], roleType: String = "jwt", mayCreateTokens: Bool = false) {
            self.boundAudience = boundAudience
            self.boundClaims = boundClaims
            self.roleType = roleType
            self.mayCreateTokens = mayCreateTokens
        }
    }
    /// A fault to answer every request with.
    public enum Fault: Sendable { case none, status(Int), garbage }
    struct Token { var accessor: String; var parent: String?; var revoked: Bool; var leases: [String]; var expires: Date; var mayCreate: Bool }

    public private(set) var server: LoopbackHTTPServer!
    private let lock = NSLock()
    private let issuer: TestIssuer
    private let namespace: String?
    private var roles: [String: Role] = [:]
    private var kv: [String: [String: String]] = [:]
    private var tokens: [String: Token] = [:]
    private var leases: [String: (token: String, revoked: Bool)] = [:]
    /// Seconds to wait before answering a login (to show concurrency).
    public var loginDelay: Double = 0
    /// Answer everything with this fault.
    public var fault: Fault {
        get { lock.withLock { _fault } }
        set { lock.withLock { _fault = newValue } }
    }
    private var _fault: Fault = .none

    public var address: String { server.baseURL }

    public init(issuer: TestIssuer, namespace: String? = nil) throws {
        self.issuer = issuer
        self.namespace = namespace
        server = try LoopbackHTTPServer { [unowned self] in self.handle($0) }
    }

    public func addRole(_ name: String, _ role: Role) { lock.withLock { roles[name] = role } }
    public func putKV(_ path: String, _ data: [String: String]) { lock.withLock { kv[path] = data } }

    /// Accessors of tokens that were revoked.
    public var revokedAccessors: [String] { lock.withLock { tokens.values.filter(\.revoked).map(\.accessor) } }
    /// Lease ids that were revoked, and all lease ids.
    public var revokedLeases: [String] { lock.withLock { leases.filter(\.value.revoked).map(\.key) } }
    public var allLeases: [String] { lock.withLock { Array(leases.keys) } }
    /// Accessors of tokens still valid.
    public var liveAccessors: [String] { lock.withLock { tokens.values.filter { !$0.revoked }.map(\.accessor) } }
    /// Whether a token (by accessor) is still valid.
    public func isLive(accessor: String) -> Bool { lock.withLock { tokens.values.contains { $0.accessor == accessor && !$0.revoked } } }

    private func error(_ status: Int, _ msg: String) -> FakeResponse { .json(["errors": [msg]], status: status) }

    private func handle(_ r: FakeRequest) -> FakeResponse {
        switch fault {
        case .none: break
        case .status(let code): return error(code, "internal error")
        case .garbage: return FakeResponse(status: 200, body: Data("<html>captive portal</html>".utf8))
        }
        if let ns = namespace, r.headers["x-vault-namespace"]?.trimmingCharacters(in: CharacterSet(charactersIn: "/")) != ns {
            return error(403, "permission denied (namespace)")
        }
        let path = r.path
        if path.hasPrefix("/v1/auth/"), path.hasSuffix("/login"), r.method == "POST" || r.method == "PUT" {
            if loginDelay > 0 { Thread.sleep(forTimeInterval: loginDelay) }
            return login(r)
        }
        guard let token = r.headers["x-vault-token"] ?? r.headers["authorization"].map({ String($0.dropFirst("Bearer ".count)) }) else {
            return error(403, "permission denied")
        }
        return lock.withLock { () -> FakeResponse in
            guard let t = tokens[token], !t.revoked, t.expires > Date() else { return error(403, "permission denied") }
            if path == "/v1/auth/token/revoke-self" {
                revoke(token)
                return FakeResponse(status: 204, body: Data())
            }
            if path == "/v1/auth/token/lookup-self" {
                // The fields a job would read (Vault's token lookup-self): remaining ttl, accessor, parent.
                return .json(["data": ["accessor": t.accessor, "ttl": max(0, Int(t.expires.timeIntervalSinceNow.rounded())),
                                       "orphan": t.parent == nil, "expire_time": ISO8601DateFormatter().string(from: t.expires)] as [String: Any]])
            }
            if path == "/v1/auth/token/create" {
                let body = (try? JSONSerialization.jsonObject(with: r.body) as? [String: Any]) ?? [:]
                let ttl = Int(String(describing: body["ttl"] ?? "3600").replacingOccurrences(of: "s", with: "")) ?? 3600
                guard t.mayCreate else { return error(403, "1 error occurred:\n\t* permission denied\n\n") }
                let (child, accessor) = newToken(parent: token, ttl: ttl, mayCreate: true)
                return .json(["auth": ["client_token": child, "accessor": accessor, "lease_duration": ttl, "renewable": true, "policies": ["default"]]])
            }
            if path.contains("/creds/") {
                let lease = path.dropFirst(4) + "/" + UUID().uuidString.prefix(8)
                leases[String(lease)] = (token, false)
                tokens[token]?.leases.append(String(lease))
                return .json(["lease_id": String(lease), "lease_duration": 3600, "renewable": true,
                              "data": ["username": "v-jwt-ci-\(UUID().uuidString.prefix(8).lowercased())",
                                       "password": "A1a-" + UUID().uuidString.replacingOccurrences(of: "-", with: "")]])
            }
            if let range = path.range(of: "/data/") {
                let mount = path[path.index(path.startIndex, offsetBy: 4)..<range.lowerBound]
                let key = mount + "/" + path[range.upperBound...]
                guard let d = kv[String(key)] else { return error(404, "no secret at \(key)") }
                return .json(["data": ["data": d, "metadata": ["created_time": "2026-11-01T00:00:00Z", "version": 3, "destroyed": false]]])
            }
            return error(404, "no handler for route \(path)")
        }
    }

    private func newToken(parent: String?, ttl: Int, mayCreate: Bool) -> (String, String) {
        let token = "hvs." + UUID().uuidString.replacingOccurrences(of: "-", with: "") + UUID().uuidString.prefix(8)
        let accessor = UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(24)
        tokens[token] = Token(accessor: String(accessor), parent: parent, revoked: false, leases: [], expires: Date().addingTimeInterval(Double(ttl)), mayCreate: mayCreate)
        return (token, String(accessor))
    }

    private func revoke(_ token: String) {
        guard var t = tokens[token], !t.revoked else { return }
        t.revoked = true
        tokens[token] = t
        for l in t.leases { leases[l]?.revoked = true }
        for (child, c) in tokens where c.parent == token { revoke(child) }
    }

    private func login(_ r: FakeRequest) -> FakeResponse {
        guard let body = try? JSONSerialization.jsonObject(with: r.body) as? [String: Any],
              let roleName = body["role"] as? String, let jwt = body["jwt"] as? String else {
            return error(400, "missing role or jwt")
        }
        guard let role = lock.withLock({ roles[roleName] }) else { return error(400, "role \"\(roleName)\" could not be found") }
        guard role.roleType == "jwt" else { return error(400, "role with oidc role_type is not allowed") }
        guard let claims = issuer.verifiedClaims(jwt) else {
            return error(400, "error validating token: failed to verify id token signature")
        }
        let aud = (claims["aud"] as? String).map { [$0] } ?? (claims["aud"] as? [String]) ?? []
        guard aud.contains(role.boundAudience) else { return error(400, "error validating claims: invalid audience (aud) claim: audience claim does not match any expected audience") }
        guard let exp = claims["exp"] as? Double, exp > Date().timeIntervalSince1970 else { return error(400, "error validating claims: token is expired") }
        for (k, v) in role.boundClaims where (claims[k] as? String) != v {
            return error(400, "error validating claims: claim \"\(k)\" does not match any associated bound claim values")
        }
        let (token, accessor) = lock.withLock { newToken(parent: nil, ttl: 3600, mayCreate: role.mayCreateTokens) }
        return .json(["auth": ["client_token": token, "accessor": accessor, "policies": ["default", "ci"], "lease_duration": 3600,
                               "renewable": true, "token_type": "service", "orphan": true]])
    }
}
