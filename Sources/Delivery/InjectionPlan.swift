public import Federation
import Foundation
public import RunnerContract

/// How one profile is delivered.
public struct DeliveryRule: Sendable {
    public var profile: String
    public var asFile: Bool
    /// nil: build_script, step_* and after_script.
    public var stages: [String]?
    /// Served by the job's credential server instead of injected.
    public var viaEndpoint: Bool

    public init(profile: String, asFile: Bool, stages: [String]?, viaEndpoint: Bool = false) {
        self.profile = profile
        self.asFile = asFile
        self.stages = stages
        self.viaEndpoint = viaEndpoint
    }

    public func applies(to stage: String) -> Bool {
        stages.map { $0.contains(stage) } ?? Stage.receivesCredentialsByDefault(stage)
    }
}

/// How a job reaches its credential server: a loopback port and the job's own secret.
public struct EndpointAccess: Sendable {
    /// The file (in the stage's secrets dir) holding the secret, for AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE.
    public static let tokenFileName = "endpoint-token"
    public var port: Int
    public var secret: String
    /// The job has a uid of its own, and the server answers GCE metadata at the root of the host to
    /// that uid's connections, as every Google client builds the URL (Node's gcp-metadata drops a path
    /// prefix: `new URL('/computeMetadata/v1', host)`); otherwise the secret rides in the path.
    public var ownerOnly: Bool
    public init(port: Int, secret: String, ownerOnly: Bool = false) {
        self.port = port
        self.secret = secret
        self.ownerOnly = ownerOnly
    }

    /// GCE_METADATA_HOST's value: `127.0.0.1:PORT`, or with the secret as a path prefix.
    public var metadataHost: String { ownerOnly ? "127.0.0.1:\(port)" : "127.0.0.1:\(port)/\(secret)" }
}

/// What one stage receives: environment variables and files for its secrets dir.
public struct InjectionPlan: Sendable {
    public var environment: [String: String] = [:]
    /// File name (inside the secrets dir) → content, written 0600 with no trailing newline.
    public var files: [String: String] = [:]
    /// Profiles delivered to this stage, for the job log.
    public var profiles: [String] = []

    /// Builds the plan for `stage`. `secretsDir` is the path the job sees.
    /// - Throws: `AirlockFailure` (system) when two profiles would set the same variable.
    public static func make(stage: String, credentials: [IssuedCredential], rules: [String: DeliveryRule],
                            secretsDir: String, endpoint: EndpointAccess? = nil) throws(AirlockFailure) -> InjectionPlan {
        var plan = InjectionPlan()
        var setBy: [String: String] = [:]
        func set(_ k: String, _ v: String, _ profile: String) throws(AirlockFailure) {
            // Two profiles may agree on a value (AZURE_TENANT_ID of two apps in one tenant); not disagree.
            if let other = setBy[k], other != profile, plan.environment[k] != v {
                throw AirlockFailure(.system, "profiles \(other) and \(profile) both set \(k) in stage \(stage): deliver one of them with deliver = \"file\" or give them different stages")
            }
            setBy[k] = profile
            plan.environment[k] = v
        }
        /// A secret value as a file (its path in `fileVariable`) or in the environment.
        func give(_ value: String, asFile: Bool, file name: String, fileVariable: String, env: [String], _ profile: String) throws(AirlockFailure) {
            if asFile {
                plan.files[name] = value
                try set(fileVariable, "\(secretsDir)/\(name)", profile)
            } else {
                for v in env { try set(v, value, profile) }
            }
        }
        for c in credentials.sorted(by: { $0.profile < $1.profile }) {
            guard let rule = rules[c.profile], rule.applies(to: stage) else { continue }
            plan.profiles.append(c.profile)
            if rule.viaEndpoint {
                // No credential in the stage: only where to ask, and the job's secret (federation.md B1-B3).
                guard let endpoint else {
                    throw AirlockFailure(.system, "profile \(c.profile) is delivered by the credential server, which is not running; see endpoint.log in the job's state")
                }
                let base = "http://127.0.0.1:\(endpoint.port)"
                switch c.providerType {
                case "aws":
                    plan.files[EndpointAccess.tokenFileName] = endpoint.secret
                    try set("AWS_CONTAINER_CREDENTIALS_FULL_URI", "\(base)/aws/\(c.profile)", c.profile)
                    try set("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "\(secretsDir)/\(EndpointAccess.tokenFileName)", c.profile)
                    // botocore before 1.32 (Debian bookworm's python3-botocore is 1.29) reads only the
                    // variable; newer ones prefer the file. The job's own endpoint secret, masked.
                    try set("AWS_CONTAINER_AUTHORIZATION_TOKEN", endpoint.secret, c.profile)
                    try set("AWS_REGION", c.details["region"] ?? "us-east-1", c.profile)
                    try set("AWS_DEFAULT_REGION", c.details["region"] ?? "us-east-1", c.profile)
                case "azure":
                    try set("IDENTITY_ENDPOINT", "\(base)/azure", "azure-endpoint")
                    try set("IDENTITY_HEADER", endpoint.secret, "azure-endpoint")
                    if let t = c.details["tenant_id"] { try set("AZURE_TENANT_ID", t, c.profile) }
                case "gcp":
                    // google-auth builds http://<GCE_METADATA_HOST>/computeMetadata/v1/...; without the
                    // owner rule the secret rides in the path (see EndpointAccess.ownerOnly).
                    try set("GCE_METADATA_HOST", endpoint.metadataHost, c.profile)
                    try set("GCE_METADATA_IP", endpoint.metadataHost, c.profile)
                    // gcloud and google-auth before 1.x's GCE_METADATA_HOST read GCE_METADATA_ROOT
                    // (http://<it>/computeMetadata/v1/): the same host.
                    try set("GCE_METADATA_ROOT", endpoint.metadataHost, c.profile)
                    if let project = c.details["project_id"] {
                        try set("GOOGLE_CLOUD_PROJECT", project, c.profile)
                        try set("CLOUDSDK_CORE_PROJECT", project, c.profile)
                    }
                default:
                    throw AirlockFailure(.system, "no endpoint for provider type \(c.providerType)")
                }
                continue
            }
            switch c.providerType {
            case "aws":
                let region = c.details["region"] ?? "us-east-1"
                if rule.asFile {
                    let name = "aws-credentials-\(c.profile)"
                    plan.files[name] = """
                    [\(c.profile)]
                    aws_access_key_id = \(c.secrets["AccessKeyId"] ?? "")
                    aws_secret_access_key = \(c.secrets["SecretAccessKey"] ?? "")
                    aws_session_token = \(c.secrets["SessionToken"] ?? "")
                    region = \(region)
                    """
                    try set("AWS_SHARED_CREDENTIALS_FILE", "\(secretsDir)/\(name)", c.profile)
                    try set("AWS_PROFILE", c.profile, c.profile)
                } else {
                    try set("AWS_ACCESS_KEY_ID", c.secrets["AccessKeyId"] ?? "", c.profile)
                    try set("AWS_SECRET_ACCESS_KEY", c.secrets["SecretAccessKey"] ?? "", c.profile)
                    try set("AWS_SESSION_TOKEN", c.secrets["SessionToken"] ?? "", c.profile)
                }
                try set("AWS_REGION", region, c.profile)
                try set("AWS_DEFAULT_REGION", region, c.profile)
            case "vault":
                // details["env.VAR"] = field: the profile's mapping, recorded at issue.
                for (key, field) in c.details.sorted(by: { $0.key < $1.key }) where key.hasPrefix("env.") {
                    let variable = String(key.dropFirst(4))
                    let value = c.secrets[field] ?? ""
                    try give(value, asFile: rule.asFile, file: "\(c.profile)-\(variable)", fileVariable: variable, env: [variable], c.profile)
                }
                if c.details["delivers_token"] == "true", let token = c.secrets["token"] {
                    try set("VAULT_ADDR", c.details["address"] ?? "", c.profile)
                    if let ns = c.details["namespace"] { try set("VAULT_NAMESPACE", ns, c.profile) }
                    try give(token, asFile: rule.asFile, file: "\(c.profile)-vault-token", fileVariable: "VAULT_TOKEN_FILE", env: ["VAULT_TOKEN"], c.profile)
                }
            case "oauth2":
                let variable = c.details["variable"] ?? "OAUTH_ACCESS_TOKEN"
                let token = c.secrets["access_token"] ?? ""
                try give(token, asFile: rule.asFile, file: "\(c.profile)-access-token", fileVariable: variable, env: [variable], c.profile)
            case "azure":
                if c.details["delivers"] == "key_vault_secrets" {
                    // Key Vault values under the profile's variable names; the token stays with Airlock.
                    for key in c.details.keys.sorted() where key.hasPrefix("secret.") {
                        let variable = String(key.dropFirst(7))
                        let value = c.secrets[variable] ?? ""
                        try give(value, asFile: rule.asFile, file: "\(c.profile)-\(variable)", fileVariable: variable, env: [variable], c.profile)
                    }
                    continue
                }
                let variable = c.details["variable"] ?? "AZURE_ACCESS_TOKEN"
                let token = c.secrets["access_token"] ?? ""
                try give(token, asFile: rule.asFile, file: "\(c.profile)-azure-token", fileVariable: variable, env: [variable], c.profile)
                if let t = c.details["tenant_id"] { try set("AZURE_TENANT_ID", t, c.profile) }
                if let id = c.details["client_id"] { try set("AZURE_CLIENT_ID", id, c.profile) }
            case "gcp":
                let token = c.secrets["access_token"] ?? ""
                // gcloud reads auth/access_token_file from CLOUDSDK_AUTH_ACCESS_TOKEN_FILE.
                try give(token, asFile: rule.asFile, file: "\(c.profile)-gcp-token", fileVariable: "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE",
                         env: ["CLOUDSDK_AUTH_ACCESS_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN"], c.profile)
                if let project = c.details["project_id"] {
                    try set("CLOUDSDK_CORE_PROJECT", project, c.profile)
                    try set("GOOGLE_CLOUD_PROJECT", project, c.profile)
                }
            default:
                throw AirlockFailure(.system, "no delivery for provider type \(c.providerType)")
            }
        }
        return plan
    }
}
