public import Foundation
public import Identity
import Policy
import RunnerContract

/// An AWS profile: which role to assume and how (templates rendered against the job's claims).
public struct AWSRoleProfile: ProfileSettings {
    public var roleARN: String
    public var sessionName: String
    public var maxDuration: Double
    public var sessionPolicy: String?
    public var policyARNs: [String]
    public var region: String

    public var target: [String: String] {
        var t = ["role_arn": roleARN, "region": region, "max_duration_seconds": String(Int(maxDuration))]
        if !policyARNs.isEmpty { t["policy_arns"] = policyARNs.joined(separator: ",") }
        if sessionPolicy != nil { t["session_policy"] = "inline" }
        return t
    }

    public init(roleARN: String, sessionName: String, maxDuration: Double, sessionPolicy: String?, policyARNs: [String], region: String) {
        self.roleARN = roleARN
        self.sessionName = sessionName
        self.maxDuration = maxDuration
        self.sessionPolicy = sessionPolicy
        self.policyARNs = policyARNs
        self.region = region
    }
}

/// AWS STS AssumeRoleWithWebIdentity (federation.md A1): an unsigned form POST, XML answer.
/// Session credentials cannot be revoked through STS; they expire, and revoke says so.
public struct AWSProvider: CredentialProvider {
    public let name: String
    public let endpoint: URL
    public let profiles: [String: AWSRoleProfile]
    public let transport: any HTTPTransport

    public init(name: String, endpoint: URL, profiles: [String: AWSRoleProfile], transport: any HTTPTransport) {
        self.name = name
        self.endpoint = endpoint
        self.profiles = profiles
        self.transport = transport
    }

    /// Session names: 2-64 characters of `[\w+=,.@-]`.
    public static func sessionName(_ rendered: String) -> String {
        let cleaned = Template.escapeForAWS(rendered)
        let cut = String(cleaned.prefix(64))
        return cut.count >= 2 ? cut : cut + "--"
    }

    /// The duration asked for: the job timeout, within [900 s, the profile's maximum].
    public static func duration(jobTimeout: Int, max: Double) -> Int {
        Int(Swift.min(max, Swift.max(900, Double(jobTimeout))))
    }

    public func issue(_ r: IssueRequest) async throws -> IssuedCredential {
        guard let p = profiles[r.profile] else {
            throw FederationError(fault: .system, profile: r.profile, provider: name, code: "ProfileMissing", message: "no AWS profile \(r.profile)")
        }
        let role: String
        let session: String
        do {
            role = try Template.render(p.roleARN, claims: r.job, escaping: .awsName)
            session = Self.sessionName(try Template.render(p.sessionName, claims: r.job, escaping: .awsName))
        } catch {
            throw FederationError(fault: .job, profile: r.profile, provider: name, code: "TemplateClaimMissing", message: error.description)
        }
        let duration = Self.duration(jobTimeout: r.jobTimeoutSeconds, max: p.maxDuration)
        var form: [(String, String)] = [
            ("Action", "AssumeRoleWithWebIdentity"), ("Version", "2011-06-15"), ("RoleArn", role),
            ("RoleSessionName", session), ("WebIdentityToken", r.idToken), ("DurationSeconds", String(duration)),
        ]
        if let pol = p.sessionPolicy { form.append(("Policy", pol)) }
        for (i, arn) in p.policyARNs.enumerated() { form.append(("PolicyArns.member.\(i + 1).arn", arn)) }
        let body = Data(form.map { "\($0.0)=\(FormEncoding.encode($0.1))" }.joined(separator: "&").utf8)
        let profileName = r.profile
        let response = try await Retry.run(deadline: r.deadline) { _ in
            let resp: HTTPResponse
            do {
                resp = try await transport.send(HTTPRequest(
                    method: "POST", url: endpoint,
                    headers: ["Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Accept": "application/xml"],
                    body: body, timeout: max(1, r.deadline.timeIntervalSinceNow)))
            } catch {
                throw FederationError(fault: .system, profile: profileName, provider: name, code: "ConnectionFailed",
                                      message: "cannot reach STS at \(endpoint.absoluteString): \(error)", transient: true)
            }
            if resp.status == 200 { return resp }
            throw mapError(resp, profile: profileName, role: role)
        }
        let x = XMLFields(response.body)
        guard let key = x["AccessKeyId"], let secret = x["SecretAccessKey"], let token = x["SessionToken"],
              let expText = x["Expiration"], let exp = ISO8601.parse(expText) else {
            throw FederationError(fault: .system, profile: r.profile, provider: name, code: "MalformedResponse",
                                  message: "STS answered 200 without complete Credentials (AccessKeyId, SecretAccessKey, SessionToken, Expiration)")
        }
        var details = ["role_arn": role, "session_name": session, "region": p.region, "duration_seconds": String(duration),
                       "access_key_id": key]
        if let arn = x["Arn"] { details["assumed_role_arn"] = arn }
        return IssuedCredential(
            profile: r.profile, provider: name, providerType: "aws",
            secrets: ["AccessKeyId": key, "SecretAccessKey": secret, "SessionToken": token],
            details: details, expiresAt: exp, revocationHandle: nil,
            delivery: AWSKind.delivery(profile: r.profile, region: p.region), summary: role)
    }

    public func revoke(_ c: IssuedCredential, now: Date) async throws -> RevokeOutcome {
        // STS session credentials have no revocation call; they stop working at Expiration.
        c.expiresAt <= now ? .expired(at: c.expiresAt) : .notRevocable(expiresAt: c.expiresAt)
    }

    func mapError(_ resp: HTTPResponse, profile: String, role: String) -> FederationError {
        let x = XMLFields(resp.body)
        let code = x["Code"] ?? "HTTP \(resp.status)"
        let msg = (x["Message"] ?? String(decoding: resp.body.prefix(200), as: UTF8.self)).prefix(300)
        let retryAfter = resp.headers["retry-after"].flatMap(Double.init)
        switch code {
        case "InvalidIdentityToken", "IDPRejectedClaim", "ExpiredTokenException", "AccessDenied", "AccessDeniedException":
            let hint = code == "IDPRejectedClaim" || code == "AccessDenied"
                ? " (check the trust policy of \(role): its Federated principal must be the GitLab OIDC provider and its sub/aud conditions must match this job)"
                : ""
            return FederationError(fault: .job, profile: profile, provider: name, code: code, message: "\(msg)\(hint)")
        case "Throttling", "ThrottlingException", "RequestLimitExceeded", "IDPCommunicationError":
            return FederationError(fault: .system, profile: profile, provider: name, code: code, message: String(msg), transient: true, retryAfter: retryAfter)
        case "MalformedPolicyDocument", "PackedPolicyTooLarge", "RegionDisabledException", "ValidationError":
            return FederationError(fault: .system, profile: profile, provider: name, code: code, message: "\(msg) (fix the profile in the Airlock config)")
        default:
            let transient = resp.status >= 500 || resp.status == 429
            return FederationError(fault: .system, profile: profile, provider: name, code: code, message: String(msg), transient: transient, retryAfter: retryAfter)
        }
    }
}

/// application/x-www-form-urlencoded: everything but unreserved characters percent-encoded (moto
/// splits the body naively on & and =, so nothing may be left raw).
public enum FormEncoding {
    public static func encode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            let ok = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b == 0x2d || b == 0x2e || b == 0x5f || b == 0x7e
            out += ok ? String(UnicodeScalar(b)) : String(format: "%%%02X", b)
        }
        return out
    }
}

/// ISO-8601 timestamps with or without fractional seconds (moto sends microseconds).
public enum ISO8601 {
    public static func parse(_ s: String) -> Date? {
        let plain = ISO8601DateFormatter()
        if let d = plain.date(from: s) { return d }
        let frac = ISO8601DateFormatter()
        frac.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = frac.date(from: s) { return d }
        // More than millisecond precision: drop the extra digits.
        if let dot = s.firstIndex(of: "."), let z = s[dot...].firstIndex(where: { $0 == "Z" || $0 == "+" || $0 == "-" }) {
            let digits = s[s.index(after: dot)..<z].prefix(3)
            return frac.date(from: String(s[..<dot]) + "." + digits + String(s[z...]))
        }
        return nil
    }

    public static func format(_ d: Date) -> String { UTCTimestamp.seconds(d) }
}

/// The text of the first element with each name in an STS answer. STS answers (federation.md A1)
/// are flat elements with text content, so a scan suffices; this keeps FoundationXML (libxml2) out
/// of every executable. Entities are decoded; CDATA, attributes on leaves and mixed content are not
/// used by STS and are not supported.
struct XMLFields {
    private var values: [String: String] = [:]

    init(_ data: Data) {
        let text = String(decoding: data, as: UTF8.self)
        var i = text.startIndex
        while let open = text[i...].firstIndex(of: "<") {
            guard let close = text[open...].firstIndex(of: ">") else { break }
            var tag = String(text[text.index(after: open)..<close])
            i = text.index(after: close)
            if tag.hasPrefix("/") || tag.hasPrefix("?") || tag.hasPrefix("!") || tag.hasSuffix("/") { continue }
            if let space = tag.firstIndex(of: " ") { tag = String(tag[..<space]) }
            if let colon = tag.lastIndex(of: ":") { tag = String(tag[tag.index(after: colon)...]) }
            // A leaf: text up to the next '<', which must be this element's closing tag.
            guard let next = text[i...].firstIndex(of: "<"), text[next...].dropFirst().hasPrefix("/") else { continue }
            let value = Self.unescape(String(text[i..<next])).trimmingCharacters(in: .whitespacesAndNewlines)
            if values[tag] == nil && !value.isEmpty { values[tag] = value }
        }
    }

    subscript(_ name: String) -> String? { values[name] }

    static func unescape(_ s: String) -> String {
        guard s.contains("&") else { return s }
        return s.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }
}
