import Federation
import Foundation
import RunnerContract

/// How one profile is delivered.
public struct DeliveryRule: Sendable {
    public var profile: String
    public var asFile: Bool
    /// nil: build_script, step_* and after_script.
    public var stages: [String]?

    public init(profile: String, asFile: Bool, stages: [String]?) {
        self.profile = profile
        self.asFile = asFile
        self.stages = stages
    }

    public func applies(to stage: String) -> Bool {
        stages.map { $0.contains(stage) } ?? Stage.receivesCredentialsByDefault(stage)
    }
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
                            secretsDir: String) throws(AirlockFailure) -> InjectionPlan {
        var plan = InjectionPlan()
        var setBy: [String: String] = [:]
        func set(_ k: String, _ v: String, _ profile: String) throws(AirlockFailure) {
            if let other = setBy[k], other != profile {
                throw AirlockFailure(.system, "profiles \(other) and \(profile) both set \(k) in stage \(stage): deliver one of them with deliver = \"file\" or give them different stages")
            }
            setBy[k] = profile
            plan.environment[k] = v
        }
        for c in credentials.sorted(by: { $0.profile < $1.profile }) {
            guard let rule = rules[c.profile], rule.applies(to: stage) else { continue }
            plan.profiles.append(c.profile)
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
            default:
                throw AirlockFailure(.system, "no delivery for provider type \(c.providerType)")
            }
        }
        return plan
    }
}
