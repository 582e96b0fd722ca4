public import Foundation
import JWTKit
public import RunnerContract

/// A token Airlock minted for one exchange (issue 17). `token` goes to the provider and nowhere
/// else; the rest is for the audit log.
public struct MintedIdentity: Sendable {
    public let token: String
    public let jti: String
    public let kid: String
    public let audience: String
    public let subject: String
    public let expiresAt: Date
}

/// Mints the job identity providers see when they trust Airlock's issuer instead of GitLab's: only
/// a job that passed Airlock's checks on these runners gets one, for one provider's audience, for
/// minutes.
///
/// Claims: `iss` (the issuer url), `aud`, `sub` (GitLab's, or the configured template's result), every
/// claim of the verified GitLab token but GitLab's own registered ones (strings as GitLab sent them,
/// so that trust conditions written for GitLab's token keep matching; `runner_id` a number, list
/// claims as lists), `runner_host`, `airlock_profile`, and `iat`, `nbf`, `exp` (= `iat` + lifetime)
/// and a fresh `jti`.
public struct IdentityMinter: Sendable {
    public let issuer: String
    public let key: IssuerKey
    public let lifetime: Double
    public let runnerHost: String

    /// Claims GitLab's token carries that describe GitLab's token itself, not the job.
    static let registered: Set<String> = ["iss", "aud", "sub", "exp", "nbf", "iat", "jti"]

    public init(issuer: String, key: IssuerKey, lifetime: Double, runnerHost: String) {
        self.issuer = issuer
        self.key = key
        self.lifetime = lifetime
        self.runnerHost = runnerHost
    }

    /// The claims of a token for `job`, granted `profile`, for `audience`.
    public func claims(job: VerifiedJob, audience: String, subject: String, profile: String, now: Date, jti: String) -> [String: JSONValue] {
        var c: [String: JSONValue] = [:]
        for (name, value) in job.claims where !Self.registered.contains(name) {
            c[name] = name == "runner_id" ? (Int(value).map(JSONValue.int) ?? .string(value)) : .string(value)
        }
        // A list of objects (user_identities) was kept as an empty list of strings: not carried.
        for (name, values) in job.listClaims where !Self.registered.contains(name) && !values.isEmpty { c[name] = .array(values.map(JSONValue.string)) }
        let t = Int(now.timeIntervalSince1970)
        c["iss"] = .string(issuer)
        c["aud"] = .string(audience)
        c["sub"] = .string(subject)
        c["iat"] = .int(t)
        c["nbf"] = .int(t)
        c["exp"] = .int(t + Int(lifetime))
        c["jti"] = .string(jti)
        c["runner_host"] = .string(runnerHost)
        c["airlock_profile"] = .string(profile)
        return c
    }

    /// A signed token for one exchange.
    public func mint(job: VerifiedJob, audience: String, subject: String, profile: String, now: Date) async throws -> MintedIdentity {
        let jti = UUID().uuidString.lowercased()
        let claims = claims(job: job, audience: audience, subject: subject, profile: profile, now: now, jti: jti)
        let token = try await key.sign(MintedPayload(values: claims))
        return MintedIdentity(token: token, jti: jti, kid: key.kid, audience: audience, subject: subject,
                              expiresAt: Date(timeIntervalSince1970: TimeInterval(Int(now.timeIntervalSince1970) + Int(lifetime))))
    }
}

/// The payload jwt-kit signs: the claims as one JSON object.
struct MintedPayload: JWTPayload {
    var values: [String: JSONValue]

    init(values: [String: JSONValue]) { self.values = values }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        for (k, v) in values { try c.encode(v, forKey: Key(stringValue: k)) }
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        var v: [String: JSONValue] = [:]
        for k in c.allKeys { v[k.stringValue] = try c.decode(JSONValue.self, forKey: k) }
        values = v
    }

    /// Airlock's own tokens are verified by the providers, not here.
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}
