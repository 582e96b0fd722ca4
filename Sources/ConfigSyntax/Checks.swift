import Foundation

/// The checks every table of the configuration shares: URLs, variable names, patterns.
extension TOMLCursor {
    /// https, or http to a loopback host (tests, local agents).
    package static func isSecureURL(_ v: String) -> Bool {
        guard let u = URL(string: v), let host = u.host else { return false }
        return u.scheme == "https" || (u.scheme == "http" && ["127.0.0.1", "localhost", "::1"].contains(host))
    }

    package static func isVariableName(_ v: String) -> Bool {
        Pattern("^[A-Za-z_][A-Za-z0-9_]*$").matches(v)
    }

    /// Whether all of `v` matches `pattern`, an anchored `^…$` pattern (see `Pattern`: no ICU).
    package static func matches(_ v: String, _ pattern: String) -> Bool {
        Pattern(pattern).matches(v)
    }

    /// `v`, or an error on `key` when it is not a variable name.
    package func variableName(_ v: String, key: String) throws(ConfigError) -> String {
        guard Self.isVariableName(v) else { throw error(key, "\(v.quoted) is not a variable name") }
        return v
    }

    /// An optional https (or loopback http) URL under `key`.
    package mutating func secureURL(_ key: String, default d: String? = nil) throws(ConfigError) -> String? {
        guard let v = try string(key) ?? d else { return nil }
        guard Self.isSecureURL(v) else {
            throw error(key, "must be an https URL (http only on loopback), got \(v.quoted)")
        }
        return v
    }

    /// A required https (or loopback http) URL under `key`.
    package mutating func requiredSecureURL(_ key: String, hint: String) throws(ConfigError) -> String {
        let v = try requiredString(key, hint: hint)
        guard Self.isSecureURL(v) else {
            throw error(key, "must be an https URL (http only on loopback), got \(v.quoted)")
        }
        return v
    }
}
