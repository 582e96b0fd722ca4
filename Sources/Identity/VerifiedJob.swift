import RunnerContract

/// A job whose GitLab ID token passed every check: its claims, as GitLab sent them.
///
/// Claim values are kept as strings (GitLab sends IDs and booleans as strings; `runner_id` is the
/// one number and is converted), so policy matching and templating see exactly what GitLab wrote.
public struct VerifiedJob: Sendable, Equatable, Codable {
    /// Every string-valued claim (and `runner_id`), by claim name.
    public let claims: [String: String]
    /// `groups_direct` and other list claims.
    public let listClaims: [String: [String]]

    public init(claims: [String: String], listClaims: [String: [String]] = [:]) {
        self.claims = claims
        self.listClaims = listClaims
    }

    /// A claim's value.
    public subscript(_ name: String) -> String? { claims[name] }
}
