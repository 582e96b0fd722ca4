public import Foundation
import Identity

/// Microsoft Entra ID's token endpoint, a Cosmos DB account's data plane and a Key Vault, on three
/// loopback servers, following federation.md A2 (Entra's v2.0 client-credentials flow with a
/// federated client assertion; Cosmos DB's AAD Authorization header; Key Vault's get-secret) and,
/// for error text, what Entra returns as seen in public issue threads: today's codes for a
/// federated assertion no credential matches, each invalid_client with HTTP 401 (AADSTS700211 for
/// the issuer, Azure/azure-workload-identity#1200; AADSTS700213 for the subject, Azure/login#482 and
/// dotnet/maui#31978; AADSTS7002138 for a subject that matches only ignoring case, Azure/login#515),
/// the legacy AADSTS70021 "Assertion Issuer/Subject/Audience" sentence (`legacyCodes`), and the JSON
/// fields error/error_description/error_codes/timestamp/trace_id/correlation_id/error_uri.
/// AADSTS501661's exact sentence is UNCONFIRMED.
///
/// The Entra fake checks a federated assertion as Entra does: the app must exist in the tenant; a
/// federated identity credential must match the assertion's iss and sub exactly (case-sensitive),
/// or a flexible credential's `claims['sub'] matches '…*'`; the token's aud must be one of that
/// credential's audiences; Entra must be able to reach the issuer's discovery (switchable, to act
/// out a GitLab behind a firewall); the RS256 signature must verify against the issuer's keys; and
/// the assertion must be within its time range by Entra's clock (which tests may set ahead).
/// Access tokens are opaque here, remembered with their resource so that the Cosmos DB and Key
/// Vault fakes can check audience exactly as those services do.
public final class FakeAzure: @unchecked Sendable {
    public struct FederatedCredential: Sendable {
        public var issuer: String
        /// nil for a flexible credential, which matches `subjectPattern` (`*` wildcard) instead.
        public var subject: String?
        public var subjectPattern: String?
        public var audiences: [String]
        public init(issuer: String, subject: String? = nil, subjectPattern: String? = nil, audiences: [String] = ["api://AzureADTokenExchange"]) {
            self.issuer = issuer
            self.subject = subject
            self.subjectPattern = subjectPattern
            self.audiences = audiences
        }
    }
    struct Token { var resource: String; var app: String; var expires: Date }

    public let tenant: String
    public let cosmosAccount: String
    public private(set) var entra: LoopbackHTTPServer!
    public private(set) var cosmos: LoopbackHTTPServer!
    public private(set) var keyVault: LoopbackHTTPServer!
    private let issuer: any TrustedIssuer
    private let lock = NSLock()
    private var apps: [String: [FederatedCredential]] = [:]
    private var tokens: [String: Token] = [:]
    private var secrets: [String: (value: String, readers: Set<String>)] = [:]
    private var requests: [(scope: String, app: String)] = []
    /// Whether the account's own scope is registered in the tenant; false acts out AADSTS500011 for it.
    public var cosmosAccountScopeKnown = true
    /// Whether Entra can fetch the issuer's discovery document (false: GitLab behind a firewall).
    public var issuerReachable = true
    /// Answer a credential mismatch with the legacy AADSTS70021 (400, invalid_request), as Entra did
    /// before 2024, instead of today's 700211/700213/7002138.
    public var legacyCodes = false
    /// Entra's clock relative to the runner's.
    public var clockOffset: TimeInterval = 0
    public var tokenLifetime = 3599
    /// Seconds Entra takes to answer a token request (a slow tenant), so that requests overlap.
    public var tokenDelay: Double = 0

    public var authorityHost: String { entra.baseURL }
    public var cosmosEndpoint: String { cosmos.baseURL }
    public var keyVaultURL: String { keyVault.baseURL }
    /// The scopes Entra was asked for, in order.
    public var requestedScopes: [String] { lock.withLock { requests.map(\.scope) } }

    public init(issuer: any TrustedIssuer, tenant: String = "72f988bf-86f1-41af-91ab-2d7cd011db47", cosmosAccount: String = "orders-db") throws {
        self.issuer = issuer
        self.tenant = tenant
        self.cosmosAccount = cosmosAccount
        entra = try LoopbackHTTPServer { [unowned self] in self.token($0) }
        cosmos = try LoopbackHTTPServer { [unowned self] in self.cosmosRequest($0) }
        keyVault = try LoopbackHTTPServer { [unowned self] in self.keyVaultRequest($0) }
    }

    public func addApp(_ clientID: String, _ credentials: [FederatedCredential]) { lock.withLock { apps[clientID] = credentials } }
    public func putSecret(_ name: String, _ value: String, readers: Set<String>) { lock.withLock { secrets[name] = (value, readers) } }

    private static func iso(_ d: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss'Z'"
        return f.string(from: d)
    }

    private func aadError(_ code: Int, _ error: String, _ message: String, status: Int = 400) -> FakeResponse {
        let trace = UUID().uuidString.lowercased(), corr = UUID().uuidString.lowercased(), ts = Self.iso(Date())
        return .json(["error": error,
                      "error_description": "AADSTS\(code): \(message)\r\nTrace ID: \(trace)\r\nCorrelation ID: \(corr)\r\nTimestamp: \(ts)",
                      "error_codes": [code], "timestamp": ts, "trace_id": trace, "correlation_id": corr,
                      "error_uri": "https://login.microsoftonline.com/error?code=\(code)"], status: status)
    }

    static func glob(_ pattern: String, _ s: String) -> Bool {
        let regex = "^" + NSRegularExpression.escapedPattern(for: pattern).replacingOccurrences(of: "\\*", with: ".*") + "$"
        return s.range(of: regex, options: .regularExpression) != nil
    }

    private func token(_ r: FakeRequest) -> FakeResponse {
        if tokenDelay > 0 { Thread.sleep(forTimeInterval: tokenDelay) }
        let parts = r.path.split(separator: "/")
        guard r.method == "POST", parts.count == 4, parts[1] == "oauth2", parts[2] == "v2.0", parts[3] == "token" else {
            return FakeResponse(status: 404, body: Data())
        }
        guard parts[0] == tenant else { return aadError(90002, "invalid_request", "Tenant '\(parts[0])' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.") }
        let f = r.form
        guard f["grant_type"] == "client_credentials" else { return aadError(70003, "unsupported_grant_type", "The app requested an unsupported grant type.") }
        guard f["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", let assertion = f["client_assertion"] else {
            return aadError(7000218, "invalid_client", "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.", status: 401)
        }
        guard let scope = f["scope"], scope.hasSuffix("/.default"), !scope.contains(" ") else {
            return aadError(70011, "invalid_scope", "The provided request must include a 'scope' input parameter with a single resource's /.default scope.")
        }
        let client = f["client_id"] ?? ""
        guard let fics = lock.withLock({ apps[client] }) else {
            return aadError(700016, "unauthorized_client", "Application with identifier '\(client)' was not found in the directory '\(tenant)'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.")
        }
        let segs = assertion.split(separator: ".", omittingEmptySubsequences: false)
        guard segs.count == 3, let pd = Base64URL.decode(segs[1]), let claims = try? JSONSerialization.jsonObject(with: pd) as? [String: Any] else {
            return aadError(50027, "invalid_request", "JWT token is invalid or malformed.")
        }
        let iss = claims["iss"] as? String ?? "", sub = claims["sub"] as? String ?? ""
        let auds = (claims["aud"] as? String).map { [$0] } ?? (claims["aud"] as? [String]) ?? []
        let matched = fics.filter { $0.issuer == iss && ($0.subject.map { $0 == sub } ?? $0.subjectPattern.map { Self.glob($0, sub) } ?? false) }
        guard !matched.isEmpty else {
            if legacyCodes {
                return aadError(70021, "invalid_request", "No matching federated identity record found for presented assertion. Assertion Issuer: '\(iss)'. Assertion Subject: '\(sub)'. Assertion Audience: '\(auds.joined(separator: ","))'. https://learn.microsoft.com/entra/workload-id/workload-identity-federation")
            }
            let sameIssuer = fics.filter { $0.issuer == iss }
            guard !sameIssuer.isEmpty else {
                return aadError(700211, "invalid_client", "No matching federated identity record found for presented assertion issuer '\(iss)'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation", status: 401)
            }
            if sameIssuer.contains(where: { $0.subject?.lowercased() == sub.lowercased() }) {
                return aadError(7002138, "invalid_client", "No matching federated identity record found for presented assertion subject '\(sub)'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. See documentation at: https://learn.microsoft.com/entra/workload-id/workload-identity-federation.", status: 401)
            }
            return aadError(700213, "invalid_client", "No matching federated identity record found for presented assertion subject '\(sub)'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation", status: 401)
        }
        guard matched.contains(where: { fic in auds.contains { fic.audiences.contains($0) } }) else {
            return aadError(700212, "invalid_request", "No matching federated identity record found for presented assertion audience '\(auds.joined(separator: ","))'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.")
        }
        guard issuerReachable else {
            return aadError(501661, "invalid_request", "Unable to retrieve the OpenID Connect metadata for issuer '\(iss)': the discovery document at '\(iss)/.well-known/openid-configuration' could not be fetched.")
        }
        // Entra takes RSA-signed external tokens only (AzureAD/microsoft-identity-web#3467: ES256 is
        // refused with AADSTS5002738).
        let alg = Base64URL.decode(segs[0]).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }?["alg"] as? String ?? ""
        guard ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"].contains(alg) else {
            return aadError(5002738, "invalid_request", "Invalid JWT token. '\(alg)' is not a supported signature algorithm.")
        }
        guard issuer.verifiedClaims(assertion) != nil else {
            return aadError(700027, "invalid_client", "Client assertion failed signature validation.")
        }
        let now = Date().addingTimeInterval(clockOffset)
        let exp = (claims["exp"] as? NSNumber)?.doubleValue ?? 0, nbf = (claims["nbf"] as? NSNumber)?.doubleValue ?? 0
        guard now.timeIntervalSince1970 < exp, now.timeIntervalSince1970 + 300 >= nbf else {
            return aadError(700024, "invalid_client", "Client assertion is not within its valid time range. Current time: \(Self.iso(now)), assertion valid from \(Self.iso(Date(timeIntervalSince1970: nbf))), expiry time of assertion \(Self.iso(Date(timeIntervalSince1970: exp))). Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .")
        }
        let resource = String(scope.dropLast("/.default".count))
        var known: Set<String> = ["https://management.azure.com", "https://vault.azure.net", "https://cosmos.azure.com"]
        if cosmosAccountScopeKnown { known.insert("https://\(cosmosAccount).documents.azure.com") }
        lock.withLock { requests.append((scope, client)) }
        guard known.contains(resource) else {
            return aadError(500011, "invalid_resource", "The resource principal named \(resource) was not found in the tenant named \(tenant). This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.")
        }
        let access = "eyJ0eXAiOiJKV1Qi.fake-entra." + UUID().uuidString.replacingOccurrences(of: "-", with: "") + UUID().uuidString.prefix(12)
        lock.withLock { tokens[access] = Token(resource: resource, app: client, expires: Date().addingTimeInterval(Double(tokenLifetime))) }
        return .json(["token_type": "Bearer", "expires_in": tokenLifetime, "ext_expires_in": tokenLifetime, "access_token": access])
    }

    private func valid(_ token: String, resources: [String]) -> Token? {
        lock.withLock { tokens[token].flatMap { $0.expires > Date() && resources.contains($0.resource) ? $0 : nil } }
    }

    /// Cosmos DB: `GET /dbs` with `Authorization: type=aad&ver=1.0&sig=<token>` (raw or URL-encoded),
    /// `x-ms-date` and `x-ms-version` (federation.md A2, Cosmos DB data plane).
    private func cosmosRequest(_ r: FakeRequest) -> FakeResponse {
        func unauthorized(_ m: String) -> FakeResponse { .json(["code": "Unauthorized", "message": m], status: 401) }
        guard let raw = r.headers["authorization"] else { return unauthorized("Required Header authorization is missing. Ensure a valid Authorization token is passed.") }
        let header = raw.removingPercentEncoding ?? raw
        let fields = FakeRequest.parseQuery(header)
        guard fields["type"] == "aad", fields["ver"] == "1.0", let sig = fields["sig"] else {
            return unauthorized("The input authorization token can't serve the request. The wrong key is being used or the expected payload is not built as per the protocol.")
        }
        guard let date = r.headers["x-ms-date"], Self.rfc1123(date).map({ abs($0.timeIntervalSinceNow) < 900 }) == true else {
            return unauthorized("The MAC signature found in the HTTP request is not the same as the computed signature; x-ms-date is missing or more than 15 minutes off.")
        }
        guard r.headers["x-ms-version"] != nil else { return .json(["code": "BadRequest", "message": "x-ms-version header is required"], status: 400) }
        guard valid(sig, resources: ["https://\(cosmosAccount).documents.azure.com", "https://cosmos.azure.com"]) != nil else {
            return unauthorized("Local Authorization is disabled and the AAD token is invalid, expired or for another audience.")
        }
        guard r.method == "GET", r.path == "/dbs" else { return .json(["code": "NotFound", "message": "Resource Not Found"], status: 404) }
        return .json(["_rid": "", "Databases": [["id": "orders", "_rid": "q5ZgAA==", "_self": "dbs/q5ZgAA==/"]], "_count": 1])
    }

    static func rfc1123(_ s: String) -> Date? {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return f.date(from: s)
    }

    /// Key Vault: `GET /secrets/<name>[/<version>]?api-version=…` with a Bearer token for
    /// `https://vault.azure.net` (federation.md A2, Key Vault). No token: 401 with the challenge.
    private func keyVaultRequest(_ r: FakeRequest) -> FakeResponse {
        guard r.query["api-version"] != nil else {
            return .json(["error": ["code": "BadParameter", "message": "The 'api-version' query parameter is missing."]], status: 400)
        }
        guard let auth = r.headers["authorization"], auth.hasPrefix("Bearer ") else {
            var resp = FakeResponse.json(["error": ["code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."]], status: 401)
            resp.headers["WWW-Authenticate"] = "Bearer authorization=\"https://login.microsoftonline.com/\(tenant)\", resource=\"https://vault.azure.net\""
            return resp
        }
        guard let t = valid(String(auth.dropFirst(7)), resources: ["https://vault.azure.net"]) else {
            return .json(["error": ["code": "Unauthorized", "message": "AKV10032: Invalid issuer, audience or expired token."]], status: 401)
        }
        let parts = r.path.split(separator: "/").map(String.init)
        guard r.method == "GET", parts.count >= 2, parts[0] == "secrets" else { return .json(["error": ["code": "NotFound", "message": "not found"]], status: 404) }
        guard let s = lock.withLock({ secrets[parts[1]] }) else {
            return .json(["error": ["code": "SecretNotFound", "message": "A secret with (name/id) \(parts[1]) was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command."]], status: 404)
        }
        guard s.readers.contains(t.app) else {
            return .json(["error": ["code": "Forbidden", "message": "Caller is not authorized to perform action on resource. Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'", "innererror": ["code": "ForbiddenByRbac"]]], status: 403)
        }
        let version = parts.count > 2 ? parts[2] : "4387e9f3d6e14c459867679a90fd0f79"
        let now = Int(Date().timeIntervalSince1970)
        return .json(["value": s.value, "id": "\(keyVault.baseURL)/secrets/\(parts[1])/\(version)",
                      "attributes": ["enabled": true, "created": now - 86_400, "updated": now - 86_400, "recoveryLevel": "Recoverable+Purgeable"], "tags": [String: String]()])
    }
}
