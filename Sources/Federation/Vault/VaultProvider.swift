public import Foundation
public import Identity
import Policy
import RunnerContract

/// A Vault profile: the JWT role to log in with and what to hand the job.
public struct VaultProfile: ProfileSettings {
    /// JWT auth role, templated from claims.
    public var role: String
    /// A dynamic secret path such as `database/creds/readonly` (leased; revoked with the token).
    public var secret: String?
    /// Sent as the body of a write to `secret` (`pki/issue/<role>` wants `common_name`); values
    /// templated from claims. Empty: `secret` is read.
    public var secretParams: [String: String]
    /// A KV v2 secret as `<mount>/<path>`, read at `<mount>/data/<path>`; templated.
    public var kv: String?
    /// Job variable → field of the secret(s).
    public var env: [String: String]
    /// Deliver a child token (VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE) with a TTL bounded by the job timeout.
    public var token: Bool

    public var target: [String: String] {
        var t = ["role": role]
        if let secret { t["secret"] = secret }
        if let kv { t["kv"] = kv }
        if token { t["token"] = "true" }
        return t
    }

    public init(role: String, secret: String?, secretParams: [String: String] = [:], kv: String?, env: [String: String], token: Bool) {
        self.role = role
        self.secret = secret
        self.secretParams = secretParams
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
            // What Vault refuses after a login is how the platform team set it up (the role's
            // policies, the paths the profile names), never something the job can change.
            throw FederationError(fault: .system, profile: profile, provider: name, code: "HTTP \(resp.status)",
                                  message: "\(method) \(path): \(Self.errors(resp.body))")
        }
        guard let json = try? JSONSerialization.jsonObject(with: resp.body) as? [String: Any] else {
            throw FederationError(fault: .system, profile: profile, provider: name, code: "MalformedResponse",
                                  message: "\(method) \(path) answered 200 with a body that is not a JSON object")
        }
        return json
    }

    /// The policy line a role's token needs for `path`, for messages.
    static func policyLine(_ path: String, _ capability: String) -> String {
        "path \"\(path)\" { capabilities = [\"\(capability)\"] }"
    }

    /// A login refusal, said so that whoever must act knows what to change. Vault and OpenBao
    /// answer 400 with these sentences (builtin/credential/jwt: path_login.go, claims.go).
    func loginError(_ e: FederationError, role: String) -> FederationError {
        var e = e
        let m = e.message
        let fix: String
        if m.contains("could not be found") {
            fix = "Vault has no JWT role \(role) at auth/\(authMount): create it (README: Vault) or change the profile's role"
        } else if m.contains("oidc role_type") {
            fix = "role \(role) is an OIDC (browser) role: set role_type=jwt (bao write auth/\(authMount)/role/\(role) role_type=jwt ...)"
        } else if m.contains("audience") {
            fix = "role \(role)'s bound_audiences does not include the ID token's audience ([gitlab].audience): add it to the role"
        } else if m.contains("bound claim") || m.contains("bound_claims") || m.contains("is missing") || m.contains("bound subject") {
            e.fault = .job
            fix = "this job's claims do not satisfy role \(role)'s bound_claims; Vault's rule and Airlock's policy disagree about this job"
        } else if m.contains("signature") || m.contains("issuer") || m.contains("keyset") || m.contains("jwks") {
            fix = "Vault cannot verify GitLab's ID token: check auth/\(authMount)/config (oidc_discovery_url or jwks_url, bound_issuer = [gitlab].issuer)"
        } else {
            fix = "check the JWT role \(role) in Vault: role_type=jwt, bound_audiences, bound_claims and the auth mount's config"
        }
        e.message = "\(m) (\(fix))"
        return e
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
        var params: [String: Any] = [:]
        do {
            role = try Template.render(p.role, claims: r.job, escaping: .awsName)
            kvPath = try p.kv.map { try Template.render($0, claims: r.job, escaping: .urlPathSegment) }
            for (k, v) in p.secretParams {
                let value = try Template.render(v, claims: r.job, escaping: .none)
                // Vault reads many parameters as comma-separated lists (alt_names, ip_sans): a claim
                // (a ref is the job's to name) must not add entries to one.
                guard value.filter({ $0 == "," }).count == v.filter({ $0 == "," }).count else {
                    throw FederationError(fault: .job, profile: r.profile, provider: name, code: "ClaimHasComma",
                                          message: "secret_params \(k): a claim in \(v) holds a comma, which Vault would read as another list entry")
                }
                params[k] = value
            }
        } catch let e as FederationError {
            throw e
        } catch {
            throw FederationError(fault: .job, profile: r.profile, provider: name, code: "TemplateClaimMissing", message: "\(error)")
        }
        let login: [String: Any]
        do {
            login = try await call("POST", "auth/\(authMount)/login", token: nil, body: ["role": role, "jwt": r.idToken], profile: r.profile, deadline: r.deadline)
        } catch let e as FederationError where e.code.hasPrefix("HTTP 4") {
            throw loginError(e, role: role)
        }
        guard let auth = login["auth"] as? [String: Any], let loginToken = auth["client_token"] as? String, !loginToken.isEmpty else {
            throw FederationError(fault: .system, profile: r.profile, provider: name, code: "MalformedResponse", message: "login answered without auth.client_token")
        }
        // A batch token (the role's token_type) has no accessor and cannot be revoked; what it
        // leased is revoked lease by lease at cleanup (Vault: "batch tokens cannot be revoked").
        let batch = (auth["token_type"] as? String) == "batch" || (auth["accessor"] as? String ?? "").isEmpty
        let accessor = auth["accessor"] as? String ?? ""
        var secrets = [Self.loginTokenKey: loginToken]
        var details = ["role": role, "address": address.absoluteString, "auth_mount": authMount, "token_type": batch ? "batch" : "service"]
        if !accessor.isEmpty { details["accessor"] = accessor }
        if let namespace { details["namespace"] = namespace }
        var ttl = Double(auth["lease_duration"] as? Int ?? r.jobTimeoutSeconds)
        let loginExpires = r.now.addingTimeInterval(ttl)
        details["login_expires_at"] = ISO8601.format(loginExpires)
        var leases: [String] = []
        /// Copies a secret's fields. A field named like Airlock's own key would replace the login
        /// token (and cleanup would revoke nothing): skipped.
        func take(_ fields: Any?) {
            for (k, v) in fields as? [String: Any] ?? [:] where k != Self.loginTokenKey { secrets[k] = (v as? String) ?? Self.text(v) }
        }
        do {
            if let path = p.secret {
                let s: [String: Any]
                do {
                    s = params.isEmpty
                        ? try await call("GET", path, token: loginToken, body: nil, profile: r.profile, deadline: r.deadline)
                        : try await call("POST", path, token: loginToken, body: params, profile: r.profile, deadline: r.deadline)
                } catch var e as FederationError where e.code == "HTTP 403" {
                    e.message += " (role \(role)'s token may not \(params.isEmpty ? "read" : "write") \(path): add \(Self.policyLine(path, params.isEmpty ? "read" : "update")) to a policy in the role's token_policies)"
                    throw e
                }
                take(s["data"])
                if let lease = s["lease_id"] as? String, !lease.isEmpty { leases.append(lease) }
                if let d = s["lease_duration"] as? Int, d > 0 { ttl = min(ttl, Double(d)) }
                details["secret"] = path
            }
            if let kvPath {
                let parts = kvPath.split(separator: "/", maxSplits: 1)
                guard parts.count == 2 else {
                    throw FederationError(fault: .system, profile: r.profile, provider: name, code: "BadKVPath", message: "kv must be <mount>/<path>, got \(kvPath)")
                }
                let dataPath = "\(parts[0])/data/\(parts[1])"
                let s: [String: Any]
                do {
                    s = try await call("GET", dataPath, token: loginToken, body: nil, profile: r.profile, deadline: r.deadline)
                } catch var e as FederationError where e.code == "HTTP 403" {
                    e.message += " (role \(role)'s token may not read \(dataPath): add \(Self.policyLine(dataPath, "read")) to a policy in the role's token_policies)"
                    throw e
                } catch var e as FederationError where e.code == "HTTP 404" {
                    e.message += " (no KV v2 secret at \(kvPath): create it with bao kv put -mount=\(parts[0]) \(parts[1]) ..., or fix the profile's kv)"
                    throw e
                }
                take((s["data"] as? [String: Any])?["data"])
                details["kv"] = kvPath
            }
            if !leases.isEmpty { details["lease_id"] = leases.joined(separator: ",") }
            for (variable, field) in p.env {
                guard secrets[field] != nil, field != Self.loginTokenKey else {
                    throw FederationError(fault: .system, profile: r.profile, provider: name, code: "FieldMissing",
                                          message: "field \(field) (for \(variable)) is not in what Vault returned; fields: \(secrets.keys.filter { $0 != Self.loginTokenKey }.sorted().joined(separator: ", "))")
                }
                details["env.\(variable)"] = field
            }
            if p.token {
                guard !batch else {
                    throw FederationError(fault: .system, profile: r.profile, provider: name, code: "BatchToken",
                                          message: "role \(role) issues batch tokens, which cannot create the child token token = true hands the job: set token_type=service on the role (bao write auth/\(authMount)/role/\(role) token_type=service ...) or drop token = true from the profile")
                }
                let ttlSeconds = max(60, min(Int(ttl), r.jobTimeoutSeconds))
                let c: [String: Any]
                do {
                    c = try await call("POST", "auth/token/create", token: loginToken, body: ["ttl": "\(ttlSeconds)s"], profile: r.profile, deadline: r.deadline)
                } catch var e as FederationError where e.code == "HTTP 403" {
                    e.message = "Vault refused auth/token/create to role \(role)'s token, so there is no child token for the job (token = true): add \(Self.policyLine("auth/token/create", "update")) to a policy in the role's token_policies, or drop token = true"
                    throw e
                }
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
            _ = try? await settle(loginToken: loginToken, batch: batch, leases: leases, loginExpires: loginExpires,
                                  profile: r.profile, now: Date())
            throw error
        }
        // The fields the profile maps, under its variable names; the child token (token = true only: a
        // secret's own field called "token" is not it) with where to use it. `details` stay audit facts.
        var delivery = DeliveryContract(copiedValues: kvPath != nil)
        for (variable, field) in p.env.sorted(by: { $0.key < $1.key }) {
            delivery.secrets.append(.token(field, variable: variable, file: "\(r.profile)-\(variable)"))
        }
        if p.token {
            delivery.secrets.append(.init(key: "token", variables: ["VAULT_TOKEN"], file: "\(r.profile)-vault-token", fileVariable: "VAULT_TOKEN_FILE"))
            delivery.environment["VAULT_ADDR"] = address.absoluteString
            if let namespace { delivery.environment["VAULT_NAMESPACE"] = namespace }
        }
        return IssuedCredential(profile: r.profile, provider: name, providerType: "vault", secrets: secrets, details: details,
                                expiresAt: r.now.addingTimeInterval(ttl), revocationHandle: batch ? "leases" : "accessor:\(accessor)",
                                delivery: delivery, summary: "role \(role)")
    }

    /// A field value that is not a string (a PKI `ca_chain` array, a number), as JSON.
    static func text(_ v: Any) -> String {
        guard JSONSerialization.isValidJSONObject([v]), let d = try? JSONSerialization.data(withJSONObject: [v], options: [.sortedKeys, .withoutEscapingSlashes]) else { return "\(v)" }
        let s = String(decoding: d, as: UTF8.self)
        return String(s.dropFirst().dropLast())
    }

    /// Ends a login: a service token revokes itself, and with it its children and every lease it
    /// made; a batch token cannot be revoked, so each of its leases is revoked on its own
    /// (`sys/leases/revoke`, which the role's policies must allow) and the token runs out.
    func settle(loginToken: String, batch: Bool, leases: [String], loginExpires: Date, profile: String, now: Date) async throws -> RevokeOutcome {
        guard batch else {
            _ = try await call("POST", "auth/token/revoke-self", token: loginToken, body: nil, profile: profile, deadline: now.addingTimeInterval(10))
            return .revoked
        }
        let remains = "the batch login token (Airlock's own, never given to the job; batch tokens cannot be revoked)"
        guard !leases.isEmpty else { return .notRevocable(expiresAt: loginExpires) }
        for lease in leases {
            do {
                _ = try await call("PUT", "sys/leases/revoke", token: loginToken, body: ["lease_id": lease], profile: profile, deadline: now.addingTimeInterval(10))
            } catch var e as FederationError where e.code == "HTTP 403" {
                e.message = "Vault refused sys/leases/revoke to the batch login token, so lease \(lease) lives until it expires: add \(Self.policyLine("sys/leases/revoke", "update")) to a policy in the role's token_policies, or set token_type=service on the role"
                throw e
            }
        }
        return .partlyRevoked(revoked: leases.count == 1 ? "its lease" : "its \(leases.count) leases", remains: remains, expiresAt: loginExpires)
    }

    public func revoke(_ c: IssuedCredential, now: Date) async throws -> RevokeOutcome {
        guard let token = c.secrets[Self.loginTokenKey] else { return .alreadyGone }
        let batch = c.details["token_type"] == "batch"
        let loginExpires = c.details["login_expires_at"].flatMap(ISO8601.parse) ?? c.expiresAt
        // An expired login took everything it made with it (a batch token's leases too).
        if loginExpires <= now || (batch && c.expiresAt <= now) { return .expired(at: min(loginExpires, c.expiresAt)) }
        do {
            return try await settle(loginToken: token, batch: batch, leases: (c.details["lease_id"] ?? "").split(separator: ",").map(String.init),
                                    loginExpires: loginExpires, profile: c.profile, now: now)
        } catch let e as FederationError where e.code == "HTTP 403" && !batch {
            // The token is gone already (revoked, or expired with everything it made).
            return c.expiresAt <= now ? .expired(at: c.expiresAt) : .alreadyGone
        }
    }
}
