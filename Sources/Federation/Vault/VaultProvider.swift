import Foundation
import Identity
import Policy
import RunnerContract

/// A Vault profile: the JWT role to log in with and what to hand the job.
public struct VaultProfile: Sendable {
    /// JWT auth role, templated from claims.
    public var role: String
    /// A dynamic secret path such as `database/creds/readonly` (leased; revoked with the token).
    public var secret: String?
    /// A KV v2 secret as `<mount>/<path>`, read at `<mount>/data/<path>`; templated.
    public var kv: String?
    /// Job variable → field of the secret(s).
    public var env: [String: String]
    /// Deliver a child token (VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE) with a TTL bounded by the job timeout.
    public var token: Bool

    public init(role: String, secret: String?, kv: String?, env: [String: String], token: Bool) {
        self.role = role
        self.secret = secret
        self.kv = kv
        self.env = env
        self.token = token
    }
}

/// HashiCorp Vault JWT auth (federation.md A4): log in with the job's ID token, read what the
/// profile names with that token, and at cleanup `auth/token/revoke-self`, which revokes the
/// login token, its children and every lease made with them. The audit log gets the accessor,
/// never the token.
public struct VaultProvider: CredentialProvider {
    public let name: String
    public let address: URL
    public let authMount: String
    public let namespace: String?
    public let profiles: [String: VaultProfile]
    public let transport: any HTTPTransport

    /// The secrets key holding the login token: masked, used for revocation, never delivered.
    public static let loginTokenKey = "_vault_login_token"

    public init(name: String, address: URL, authMount: String, namespace: String?, profiles: [String: VaultProfile], transport: any HTTPTransport) {
        self.name = name
        self.address = address
        self.authMount = authMount
        self.namespace = namespace
        self.profiles = profiles
        self.transport = transport
    }

    func headers(token: String?) -> [String: String] {
        var h = ["X-Vault-Request": "true", "Content-Type": "application/json", "Accept": "application/json"]
        if let namespace { h["X-Vault-Namespace"] = namespace }
        if let token { h["X-Vault-Token"] = token }
        return h
    }

    func call(_ method: String, _ path: String, token: String?, body: [String: Any]?, profile: String, deadline: Date) async throws -> [String: Any] {
        guard let url = URL(string: address.absoluteString.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/v1/" + path) else {
            throw FederationError(fault: .system, profile: profile, provider: name, code: "BadPath", message: "cannot build a URL for \(path)")
        }
        let data = try body.map { try JSONSerialization.data(withJSONObject: $0) }
        let resp = try await Retry.run(deadline: deadline) { _ -> HTTPResponse in
            let r: HTTPResponse
            do {
                r = try await transport.send(HTTPRequest(method: method, url: url, headers: headers(token: token), body: data,
                                                         timeout: max(1, deadline.timeIntervalSinceNow)))
            } catch {
                throw FederationError(fault: .system, profile: profile, provider: name, code: "ConnectionFailed",
                                      message: "cannot reach Vault at \(address.absoluteString): \(error)", transient: true)
            }
            if r.status >= 500 || r.status == 429 {
                throw FederationError(fault: .system, profile: profile, provider: name, code: "HTTP \(r.status)",
                                      message: Self.errors(r.body), transient: true, retryAfter: r.headers["retry-after"].flatMap(Double.init))
            }
            return r
        }
        if resp.status == 204 { return [:] }
        guard resp.status == 200 else {
            throw FederationError(fault: .job, profile: profile, provider: name, code: "HTTP \(resp.status)",
                                  message: "\(method) \(path): \(Self.errors(resp.body))")
        }
        return (try? JSONSerialization.jsonObject(with: resp.body) as? [String: Any]) ?? [:]
    }

    static func errors(_ body: Data) -> String {
        let e = (try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["errors"] as? [String]
        return String((e?.joined(separator: "; ") ?? String(decoding: body.prefix(200), as: UTF8.self)).prefix(300))
    }

    public func issue(_ r: IssueRequest) async throws -> IssuedCredential {
        guard let p = profiles[r.profile] else {
            throw FederationError(fault: .system, profile: r.profile, provider: name, code: "ProfileMissing", message: "no Vault profile \(r.profile)")
        }
        let role: String
        var kvPath: String?
        do {
            role = try Template.render(p.role, claims: r.job, escaping: .awsName)
            kvPath = try p.kv.map { try Template.render($0, claims: r.job, escaping: .urlPathSegment) }
        } catch {
            throw FederationError(fault: .job, profile: r.profile, provider: name, code: "TemplateClaimMissing", message: "\(error)")
        }
        var login: [String: Any]
        do {
            login = try await call("POST", "auth/\(authMount)/login", token: nil, body: ["role": role, "jwt": r.idToken], profile: r.profile, deadline: r.deadline)
        } catch var e as FederationError where e.code.hasPrefix("HTTP 4") {
            e.message += " (check the JWT role \(role) in Vault: bound_audiences, bound_claims and the auth mount's jwks or oidc_discovery_url)"
            throw e
        }
        guard let auth = login["auth"] as? [String: Any], let loginToken = auth["client_token"] as? String,
              let accessor = auth["accessor"] as? String else {
            throw FederationError(fault: .system, profile: r.profile, provider: name, code: "MalformedResponse", message: "login answered without auth.client_token")
        }
        var secrets = [Self.loginTokenKey: loginToken]
        var details = ["accessor": accessor, "role": role, "address": address.absoluteString, "auth_mount": authMount]
        if let namespace { details["namespace"] = namespace }
        var ttl = Double(auth["lease_duration"] as? Int ?? r.jobTimeoutSeconds)
        do {
            if let path = p.secret {
                let s = try await call("GET", path, token: loginToken, body: nil, profile: r.profile, deadline: r.deadline)
                for (k, v) in s["data"] as? [String: Any] ?? [:] { secrets[k] = "\(v)" }
                if let lease = s["lease_id"] as? String { details["lease_id"] = lease }
                if let d = s["lease_duration"] as? Int, d > 0 { ttl = min(ttl, Double(d)) }
                details["secret"] = path
            }
            if let kvPath {
                let parts = kvPath.split(separator: "/", maxSplits: 1)
                guard parts.count == 2 else {
                    throw FederationError(fault: .system, profile: r.profile, provider: name, code: "BadKVPath", message: "kv must be <mount>/<path>, got \(kvPath)")
                }
                let s = try await call("GET", "\(parts[0])/data/\(parts[1])", token: loginToken, body: nil, profile: r.profile, deadline: r.deadline)
                for (k, v) in (s["data"] as? [String: Any])?["data"] as? [String: Any] ?? [:] { secrets[k] = "\(v)" }
                details["kv"] = kvPath
            }
            for (variable, field) in p.env {
                guard secrets[field] != nil, field != Self.loginTokenKey else {
                    throw FederationError(fault: .system, profile: r.profile, provider: name, code: "FieldMissing",
                                          message: "field \(field) (for \(variable)) is not in what Vault returned; fields: \(secrets.keys.filter { $0 != Self.loginTokenKey }.sorted().joined(separator: ", "))")
                }
                details["env.\(variable)"] = field
            }
            if p.token {
                let ttlSeconds = max(60, min(Int(ttl), r.jobTimeoutSeconds))
                let c = try await call("POST", "auth/token/create", token: loginToken, body: ["ttl": "\(ttlSeconds)s"], profile: r.profile, deadline: r.deadline)
                guard let child = (c["auth"] as? [String: Any])?["client_token"] as? String else {
                    throw FederationError(fault: .system, profile: r.profile, provider: name, code: "MalformedResponse", message: "token/create answered without a token")
                }
                secrets["token"] = child
                details["child_accessor"] = ((c["auth"] as? [String: Any])?["accessor"] as? String) ?? ""
                details["delivers_token"] = "true"
                ttl = min(ttl, Double(ttlSeconds))
            }
        } catch {
            // Nothing of a half-issued login may outlive this call.
            _ = try? await call("POST", "auth/token/revoke-self", token: loginToken, body: nil, profile: r.profile, deadline: Date().addingTimeInterval(5))
            throw error
        }
        return IssuedCredential(profile: r.profile, provider: name, providerType: "vault", secrets: secrets, details: details,
                                expiresAt: r.now.addingTimeInterval(ttl), revocationHandle: "accessor:\(accessor)")
    }

    public func revoke(_ c: IssuedCredential, now: Date) async throws -> RevokeOutcome {
        guard let token = c.secrets[Self.loginTokenKey] else { return .alreadyGone }
        do {
            _ = try await call("POST", "auth/token/revoke-self", token: token, body: nil, profile: c.profile, deadline: now.addingTimeInterval(10))
            return .revoked
        } catch let e as FederationError where e.code == "HTTP 403" {
            // The token is gone already (revoked, or expired with everything it made).
            return c.expiresAt <= now ? .expired(at: c.expiresAt) : .alreadyGone
        }
    }
}
