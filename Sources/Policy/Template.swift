import Foundation
public import Identity

/// `{claim}` placeholders in profile parameters, filled from the job's verified claims and escaped
/// for where the value goes, so that a claim cannot break out of its place (a ref with `/` or `:`
/// in an ARN, a `..` in a URL path).
public enum Template {
    /// How a value is escaped for its destination.
    public enum Escaping: Sendable {
        /// As it is (only where the value is opaque to the receiver).
        case none
        /// AWS names (role session names, ARN path parts): `[\w+=,.@-]`; others become `-`.
        case awsName
        /// One URL path segment: percent-encoded.
        case urlPathSegment
    }

    /// The placeholders a template uses.
    public static func placeholders(in template: String) -> [String] {
        var out: [String] = []
        var cur: String?
        for ch in template {
            if ch == "{" { cur = "" } else if ch == "}", let c = cur { out.append(c); cur = nil } else if cur != nil { cur!.append(ch) }
        }
        return out
    }

    /// Renders `template` with the job's claims.
    /// - Throws: `TemplateError` naming a placeholder the token does not carry.
    public static func render(_ template: String, claims: VerifiedJob, escaping: Escaping) throws(TemplateError) -> String {
        var out = ""
        var name: String?
        for ch in template {
            if ch == "{" && name == nil {
                name = ""
            } else if ch == "}", let n = name {
                guard let v = claims[n] else { throw TemplateError(placeholder: n, template: template) }
                out += escape(v, escaping)
                name = nil
            } else if name != nil {
                name!.append(ch)
            } else {
                out.append(ch)
            }
        }
        if let n = name { out += "{" + n }
        return out
    }

    /// `[\w+=,.@-]`, anything else becomes `-` (AWS IAM names, session names).
    public static func escapeForAWS(_ v: String) -> String { escape(v, .awsName) }

    static func escape(_ v: String, _ e: Escaping) -> String {
        switch e {
        case .none: return v
        case .awsName:
            return String(String.UnicodeScalarView(v.unicodeScalars.map { s in
                let ok = (s.value >= 0x30 && s.value <= 0x39) || (s.value >= 0x41 && s.value <= 0x5a) || (s.value >= 0x61 && s.value <= 0x7a)
                    || "_+=,.@-".unicodeScalars.contains(s)
                return ok ? s : "-"
            }))
        case .urlPathSegment:
            var out = ""
            for b in v.utf8 {
                let ok = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b == 0x2d || b == 0x5f || b == 0x7e
                out += ok ? String(UnicodeScalar(b)) : String(format: "%%%02X", b)
            }
            return out
        }
    }
}

/// A template names a claim the token does not carry.
public struct TemplateError: Error, CustomStringConvertible, Equatable {
    public let placeholder: String
    public let template: String
    public var description: String { "template \(template.debugDescription) uses {\(placeholder)}, which the job's token does not carry" }
}
