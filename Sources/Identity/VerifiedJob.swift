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

/// Every claim GitLab may put in a job's ID token (custom-executor.md §2): a rule on another name is
/// most likely a typo, which `airlock check` reports.
public let knownGitLabClaims: Set<String> = [
    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "namespace_id", "namespace_path", "project_id", "project_path",
    "user_id", "user_login", "user_email", "user_access_level", "job_project_id", "job_project_path", "job_namespace_id",
    "job_namespace_path", "pipeline_id", "pipeline_source", "job_id", "ref", "ref_type", "ref_path", "ref_protected",
    "environment", "environment_protected", "deployment_tier", "environment_action", "runner_id", "runner_environment",
    "sha", "ci_config_ref_uri", "ci_config_sha", "project_visibility", "user_identities", "groups_direct",
    "job_source", "job_config",
]
