public import Foundation
public import Identity
public import JWTKit
import Policy
import RunnerContract

/// How an OAuth 2.0 profile obtains its token.
public enum OAuthGrant: String, Sendable, CaseIterable {
    /// RFC 8693: the job's ID token is the subject token.
    case tokenExchange = "token_exchange"
    /// `client_credentials` with a private_key_jwt client assertion Airlock signs.
    case clientCredentials = "client_credentials"
}

/// An OAuth 2.0 profile.
public struct OAuthProfile: ProfileSettings {
    public var grant: OAuthGrant
    /// Templated from claims.
    public var audience: String?
    public var scope: String?
    /// RFC 8693 subject token type; Auth0's Custom Token Exchange wants the profile's own URI.
    public var subjectTokenType: String
    /// The job variable that receives the access token.
    public var variable: String
    /// Ask the introspection endpoint whether the token is active before handing it out.
    public var introspect: Bool
    public var target: [String: String] {
        var t = ["grant": grant.rawValue]
        if let audience { t["audience"] = audience }
        if let scope { t["scope"] = scope }
        return t
    }

    /// Only token exchange sends the job's identity (as the subject token).
    public var presentsJobIdentity: Bool { grant == .tokenExchange }

    public init(grant: OAuthGrant, audience: String?, scope: String?, subjectTokenType: String, variable: String, introspect: Bool) {
        self.grant = grant
        self.audience = audience
        self.scope = scope
        self.subjectTokenType = subjectTokenType
        self.variable = variable
        self.introspect = introspect
    }
}

/// The client's key for private_key_jwt: a PEM file only Airlock can read.
public struct ClientKey: Sendable {
    public var path: String
    public var keyID: String?
    /// The operator said the server takes ES256 assertions (`assertion_algorithm = "ES256"`).
    /// Without it a P-256 key is refused: Auth0's private_key_jwt takes RS256, RS384 and PS256 only
    /// (Auth0 docs, "Configure Private Key JWT Authentication": supported algorithms).
    public var es256: Bool

    public init(path: String, keyID: String?, es256: Bool = false) {
        self.path = path
        self.keyID = keyID
        self.es256 = es256
    }

    /// Loads the key into a collection that signs with it.
    /// - Throws: `FederationError` (system) for a missing, unreadable, group/world-readable or unparsable key.
    public func load(profile: String, provider: String) async throws -> (JWTKeyCollection, String) {
        // KeyFile: no NSS lookup (airlock-cleanup, statically linked, revokes without the network
        // when the hand-over fails).
        guard let file = KeyFile.read(path) else {
            throw FederationError(fault: .system, profile: profile, provider: provider, code: "ClientKeyUnreadable", message: "cannot read private_key_file \(path)")
        }
        let (pem, mode) = (file.pem, file.mode)
        guard mode & 0o077 == 0 else {
            throw FederationError(fault: .system, profile: profile, provider: provider, code: "ClientKeyExposed",
                                  message: "private_key_file \(path) is readable by group or others (mode \(String(mode & 0o777, radix: 8))); chmod 600 it")
        }
        let keys = JWTKeyCollection()
        let kid = keyID.map { JWKIdentifier(string: $0) }
        if let ec = try? ES256PrivateKey(pem: pem) {
            guard es256 else {
                throw FederationError(fault: .system, profile: profile, provider: provider, code: "ClientKeyAlgorithm",
                                      message: "private_key_file \(path) is a P-256 (ES256) key; Auth0 accepts private_key_jwt assertions signed RS256, RS384 or PS256 only: use an RSA key (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048), or, if your server accepts ES256, set assertion_algorithm = \"ES256\" on the provider")
            }
            await keys.add(ecdsa: ec, kid: kid)
            return (keys, "ES256")
        }
        if let rsa = try? Insecure.RSA.PrivateKey(pem: pem) {
            guard !es256 else {
                throw FederationError(fault: .system, profile: profile, provider: provider, code: "ClientKeyAlgorithm",
                                      message: "private_key_file \(path) is an RSA key but assertion_algorithm = \"ES256\": give a P-256 key or remove the line (RS256)")
            }
            await keys.add(rsa: rsa, digestAlgorithm: .sha256, kid: kid)
            return (keys, "RS256")
        }
        throw FederationError(fault: .system, profile: profile, provider: provider, code: "ClientKeyInvalid",
                              message: "private_key_file \(path) is not an RSA or P-256 private key in PEM")
    }
}

/// RFC 7523 client assertion claims.
struct ClientAssertion: JWTPayload {
    var iss: String
    var sub: String
    var aud: String
    var iat: Int
    var exp: Int
    var jti: String
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// A generic OAuth 2.0 server such as Auth0 (federation.md A5): RFC 8693 token exchange with the
/// ID token, or client_credentials with a private_key_jwt assertion; optional RFC 7662
/// introspection; RFC 7009 revocation where the server has an endpoint (refresh tokens always,
/// access tokens where the server supports it), "expires at" otherwise.
public struct OAuthProvider: CredentialProvider {
    public let name: String
    public let tokenEndpoint: URL
    public let revocationEndpoint: URL?
    public let introspectionEndpoint: URL?
    public let clientID: String?
    public let clientKey: ClientKey?
    /// The assertion's aud: by default the token endpoint's origin with a trailing slash (Auth0).
    public let assertionAudience: String
    public let profiles: [String: OAuthProfile]
    public let transport: any HTTPTransport

    public init(name: String, tokenEndpoint: URL, revocationEndpoint: URL?, introspectionEndpoint: URL?, clientID: String?,
                clientKey: ClientKey?, assertionAudience: String?, profiles: [String: OAuthProfile], transport: any HTTPTransport) {
        self.name = name
        self.tokenEndpoint = tokenEndpoint
        self.revocationEndpoint = revocationEndpoint
        self.introspectionEndpoint = introspectionEndpoint
        self.clientID = clientID
        self.clientKey = clientKey
        var origin = "\(tokenEndpoint.scheme ?? "https")://\(tokenEndpoint.host ?? "")"
        if let port = tokenEndpoint.port { origin += ":\(port)" }
        self.assertionAudience = assertionAudience ?? origin + "/"
        self.profiles = profiles
        self.transport = transport
    }

    /// Client authentication fields: a fresh assertion (unique jti, 60 s life) or the bare client_id.
    func clientAuth(profile: String, now: Date) async throws -> [(String, String)] {
        guard let clientID else { return [] }
        guard let clientKey else { return [("client_id", clientID)] }
        let (keys, alg) = try await clientKey.load(profile: profile, provider: name)
        let t = Int(now.timeIntervalSince1970)
        let claims = ClientAssertion(iss: clientID, sub: clientID, aud: assertionAudience, iat: t, exp: t + 60,
                                     jti: UUID().uuidString.lowercased())
        var header = JWTHeader()
        header.alg = alg
        header.typ = "JWT"
        let jwt: String
        do {
            jwt = try await keys.sign(claims, kid: clientKey.keyID.map { JWKIdentifier(string: $0) }, header: header)
        } catch {
            throw FederationError(fault: .system, profile: profile, provider: name, code: "AssertionSigningFailed", message: "\(error)")
        }
        return [("client_id", clientID), ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"), ("client_assertion", jwt)]
    }

    func post(_ url: URL, _ form: [(String, String)], profile: String, deadline: Date) async throws -> HTTPResponse {
        let body = Data(form.map { "\($0.0)=\(FormEncoding.encode($0.1))" }.joined(separator: "&").utf8)
        do {
            return try await transport.send(HTTPRequest(method: "POST", url: url,
                headers: ["Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"],
                body: body, timeout: max(1, deadline.timeIntervalSinceNow)))
        } catch {
            throw FederationError(fault: .system, profile: profile, provider: name, code: "ConnectionFailed",
                                  message: "cannot reach \(url.absoluteString): \(error)", transient: true)
        }
    }

    static func oauthError(_ r: HTTPResponse) -> (String, String) {
        let o = (try? JSONSerialization.jsonObject(with: r.body) as? [String: Any]) ?? [:]
        return ((o["error"] as? String) ?? "HTTP \(r.status)", String(((o["error_description"] as? String) ?? "").prefix(300)))
    }

    public func issue(_ r: IssueRequest) async throws -> IssuedCredential {
        guard let p = profiles[r.profile] else {
            throw FederationError(fault: .system, profile: r.profile, provider: name, code: "ProfileMissing", message: "no OAuth profile \(r.profile)")
        }
        let audience: String?
        let scope: String?
        do {
            audience = try p.audience.map { try Template.render($0, claims: r.job, escaping: .none) }
            scope = try p.scope.map { try Template.render($0, claims: r.job, escaping: .awsName) }
        } catch {
            throw FederationError(fault: .job, profile: r.profile, provider: name, code: "TemplateClaimMissing", message: "\(error)")
        }
        let profileName = r.profile
        let resp = try await Retry.run(deadline: r.deadline) { _ -> HTTPResponse in
            // A fresh assertion per attempt: a replayed jti is refused.
            var form: [(String, String)]
            switch p.grant {
            case .tokenExchange:
                form = [("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("subject_token", r.idToken),
                        ("subject_token_type", p.subjectTokenType)]
            case .clientCredentials:
                guard clientKey != nil else {
                    throw FederationError(fault: .system, profile: profileName, provider: name, code: "NoClientKey",
                                          message: "client_credentials needs private_key_file on the provider")
                }
                form = [("grant_type", "client_credentials")]
            }
            if let audience { form.append(("audience", audience)) }
            if let scope { form.append(("scope", scope)) }
            form += try await clientAuth(profile: profileName, now: Date())
            let resp = try await post(tokenEndpoint, form, profile: profileName, deadline: r.deadline)
            if resp.status == 200 { return resp }
            let (code, desc) = Self.oauthError(resp)
            let transient = resp.status >= 500 || resp.status == 429
            // invalid_grant / access_denied are about the job's identity; invalid_client and the rest about Airlock's setup.
            let fault: Fault = ["invalid_grant", "access_denied", "invalid_target", "unauthorized_client"].contains(code) ? .job : .system
            throw FederationError(fault: fault, profile: profileName, provider: name, code: code, message: desc.isEmpty ? "HTTP \(resp.status)" : desc,
                                  transient: transient, retryAfter: resp.headers["retry-after"].flatMap(Double.init))
        }
        guard let o = try? JSONSerialization.jsonObject(with: resp.body) as? [String: Any], let access = o["access_token"] as? String else {
            throw FederationError(fault: .system, profile: r.profile, provider: name, code: "MalformedResponse", message: "the token endpoint answered 200 without access_token")
        }
        let expiresIn = (o["expires_in"] as? Int) ?? Int((o["expires_in"] as? String) ?? "") ?? 3600
        var secrets = ["access_token": access]
        if let rt = o["refresh_token"] as? String { secrets["refresh_token"] = rt }
        var details = ["grant": p.grant.rawValue, "token_endpoint": tokenEndpoint.absoluteString, "variable": p.variable]
        if let clientID { details["client_id"] = clientID }
        if let audience { details["audience"] = audience }
        if let s = (o["scope"] as? String) ?? scope { details["scope"] = s }
        let credential = IssuedCredential(profile: r.profile, provider: name, providerType: "oauth2", secrets: secrets, details: details,
                                          expiresAt: r.now.addingTimeInterval(Double(expiresIn)),
                                          revocationHandle: revocationEndpoint?.absoluteString,
                                          delivery: DeliveryContract(secrets: [.token("access_token", variable: p.variable, file: "\(r.profile)-access-token")]),
                                          summary: audience ?? "oauth2")
        if p.introspect, let introspectionEndpoint {
            let form = [("token", access), ("token_type_hint", "access_token")] + (try await clientAuth(profile: r.profile, now: Date()))
            let ir = try await post(introspectionEndpoint, form, profile: r.profile, deadline: r.deadline)
            let active = (try? JSONSerialization.jsonObject(with: ir.body) as? [String: Any])?["active"] as? Bool
            guard ir.status == 200, active == true else {
                _ = try? await revoke(credential, now: Date())
                throw FederationError(fault: .system, profile: r.profile, provider: name, code: "InactiveToken",
                                      message: "introspection says the token just issued is not active")
            }
        }
        return credential
    }

    /// Whether an access token is a JWT (three base64url parts, a JSON header): a resource server
    /// checks it on its own, so no revocation ends it before its `exp` (Auth0's API access tokens).
    static func isJWT(_ token: String) -> Bool {
        // Three parts (JWS) or five (JWE, an encrypted token the API decrypts itself).
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 || parts.count == 5, let h = Base64URL.decode(parts[0]),
              let header = try? JSONSerialization.jsonObject(with: h) as? [String: Any] else { return false }
        return header["alg"] != nil
    }

    /// Whether the server's introspection says `token` is no longer active (false without an endpoint).
    func introspectsInactive(_ token: String, profile: String, now: Date) async throws -> Bool {
        guard let introspectionEndpoint else { return false }
        let form = [("token", token), ("token_type_hint", "access_token")] + (try await clientAuth(profile: profile, now: Date()))
        let r = try await post(introspectionEndpoint, form, profile: profile, deadline: now.addingTimeInterval(10))
        guard r.status == 200 else { return false }
        return (try? JSONSerialization.jsonObject(with: r.body) as? [String: Any])?["active"] as? Bool == false
    }

    /// The refresh token (where one was issued) is revoked; an opaque access token is called revoked
    /// only when introspection confirms it; a JWT access token is never called revoked: it runs to
    /// its expiry.
    public func revoke(_ c: IssuedCredential, now: Date) async throws -> RevokeOutcome {
        let runsOut: RevokeOutcome = c.expiresAt <= now ? .expired(at: c.expiresAt) : .notRevocable(expiresAt: c.expiresAt)
        guard let endpoint = revocationEndpoint else { return runsOut }
        // Refresh token first: it outlives the access token.
        var refreshRevoked = false
        if let rt = c.secrets["refresh_token"] {
            let form = [("token", rt), ("token_type_hint", "refresh_token")] + (try await clientAuth(profile: c.profile, now: Date()))
            let resp = try await post(endpoint, form, profile: c.profile, deadline: now.addingTimeInterval(10))
            guard resp.status == 200 else {
                let (code, desc) = Self.oauthError(resp)
                throw FederationError(fault: .system, profile: c.profile, provider: name, code: code, message: "refresh token revocation: \(desc)")
            }
            refreshRevoked = true
        }
        let access = c.secrets["access_token"] ?? ""
        if Self.isJWT(access) || c.expiresAt <= now {
            guard refreshRevoked, c.expiresAt > now else { return runsOut }
            return .partlyRevoked(revoked: "its refresh token", remains: "the access token (a JWT, which revocation does not end)", expiresAt: c.expiresAt)
        }
        let form = [("token", access), ("token_type_hint", "access_token")] + (try await clientAuth(profile: c.profile, now: Date()))
        let resp = try await post(endpoint, form, profile: c.profile, deadline: now.addingTimeInterval(10))
        if resp.status == 200 {
            // RFC 7009 answers 200 for a token the server does not revoke too (§2.2): only the
            // server's own introspection saying the token is no longer active proves it ended.
            if try await introspectsInactive(access, profile: c.profile, now: now) { return .revoked }
            let why = introspectionEndpoint == nil
                ? "the access token (the server answered 200, which it also gives tokens it does not revoke; set introspection_endpoint to confirm)"
                : "the access token (introspection still says it is active)"
            // Unconfirmed, it counts as live until it expires.
            guard refreshRevoked else { return runsOut }
            return .partlyRevoked(revoked: "its refresh token", remains: why, expiresAt: c.expiresAt)
        }
        let (code, _) = Self.oauthError(resp)
        if code == "unsupported_token_type" {
            // The server revokes refresh tokens only: the access token runs to its expiry.
            guard refreshRevoked else { return runsOut }
            return .partlyRevoked(revoked: "its refresh token", remains: "the access token (the server does not revoke access tokens)", expiresAt: c.expiresAt)
        }
        throw FederationError(fault: .system, profile: c.profile, provider: name, code: code, message: "access token revocation failed (HTTP \(resp.status))")
    }
}
