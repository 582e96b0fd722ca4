package import ConfigSyntax
import Foundation
package import Identity

/// `type = "aws"`: AWS STS AssumeRoleWithWebIdentity (federation.md A1).
package enum AWSKind: ProviderKind {
    package static let endpoint: EndpointKind? = .awsContainer
    package static let typeName = "aws"
    package static let defaultEndpoint = "https://sts.amazonaws.com"
    package static let minimumDuration = 900.0
    package static let defaultMaxDuration = 3600.0
    /// An IAM role ARN, each part possibly a {claim} template.
    static let roleARN = #"^arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::([0-9]{12}|\{[a-z_]+\}):role/([A-Za-z0-9+=,.@_/-]|\{[a-z_]+\})+$"#
    static let policyARN = #"^arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::([0-9]{12}|aws):policy/[A-Za-z0-9+=,.@_/-]+$"#

    package static func settings(name: String, _ c: inout TOMLCursor, warnings: inout [String]) throws(ConfigError) -> AWSSettings {
        let endpoint = try c.string("sts_endpoint") ?? defaultEndpoint
        guard let u = URL(string: endpoint), u.scheme == "https" || u.scheme == "http", u.host != nil else {
            throw c.error("sts_endpoint", "must be a URL, got \(endpoint.quoted)")
        }
        return AWSSettings(stsEndpoint: endpoint, region: try c.string("region") ?? "us-east-1")
    }

    package static func profile(name: String, provider: String, settings: AWSSettings, deliver: DeliveryMode,
                                _ c: inout TOMLCursor) throws(ConfigError) -> AWSRoleProfile {
        let role = try c.requiredString("role_arn", hint: "e.g. \"arn:aws:iam::123456789012:role/gitlab-{project_id}\"")
        guard TOMLCursor.matches(role, roleARN) else {
            throw c.error("role_arn", "must be an IAM role ARN, arn:aws:iam::<12-digit account>:role/<name> ({claim} templates allowed), got \(role.quoted)")
        }
        let session = try c.string("session_name") ?? "gitlab-{project_id}-{job_id}"
        let maxDuration = try c.duration("max_duration") ?? defaultMaxDuration
        guard maxDuration >= minimumDuration, maxDuration <= 43_200 else {
            throw c.error("max_duration", "must be between 15m and 12h (STS DurationSeconds 900-43200)")
        }
        let policy = try c.string("session_policy")
        if let policy {
            guard (try? JSONSerialization.jsonObject(with: Data(policy.utf8))) != nil else {
                throw c.error("session_policy", "is not valid JSON")
            }
            guard policy.utf8.count <= 2048 else { throw c.error("session_policy", "is over STS's 2048-character limit") }
        }
        let arns = try c.stringArray("policy_arns") ?? []
        guard arns.count <= 10 else { throw c.error("policy_arns", "STS takes at most 10 managed policy ARNs") }
        for arn in arns where !TOMLCursor.matches(arn, policyARN) {
            throw c.error("policy_arns", "\(arn.quoted) is not a managed policy ARN (arn:aws:iam::<12-digit account or aws>:policy/<name>)")
        }
        let region = try c.string("region")
        try c.checkClaims(role, key: "role_arn")
        try c.checkClaims(session, key: "session_name")
        return AWSRoleProfile(roleARN: role, sessionName: session, maxDuration: maxDuration,
                              sessionPolicy: policy, policyARNs: arns, region: region ?? settings.region)
    }

    package static func provider(name: String, settings: AWSSettings, profiles: [String: AWSRoleProfile],
                                 transport: any HTTPTransport) -> any CredentialProvider {
        AWSProvider(name: name, endpoint: URL(string: settings.stsEndpoint)!, profiles: profiles, transport: transport)
    }

    /// What a session reaches the job as: the three variables the SDKs read, or a shared
    /// credentials file with the profile's name; the region beside them; or the container endpoint.
    package static func delivery(profile: String, region: String) -> DeliveryContract {
        let regionEnv = ["AWS_REGION": region, "AWS_DEFAULT_REGION": region]
        return DeliveryContract(
            secrets: [
                .init(key: "AccessKeyId", variables: ["AWS_ACCESS_KEY_ID"], file: "", fileVariable: ""),
                .init(key: "SecretAccessKey", variables: ["AWS_SECRET_ACCESS_KEY"], file: "", fileVariable: ""),
                .init(key: "SessionToken", variables: ["AWS_SESSION_TOKEN"], file: "", fileVariable: ""),
            ],
            file: .init(name: "aws-credentials-\(profile)",
                        content: [.text("[\(profile)]\naws_access_key_id = "), .secret("AccessKeyId"),
                                  .text("\naws_secret_access_key = "), .secret("SecretAccessKey"),
                                  .text("\naws_session_token = "), .secret("SessionToken"),
                                  .text("\nregion = \(region)")],
                        pathVariable: "AWS_SHARED_CREDENTIALS_FILE", environment: ["AWS_PROFILE": profile]),
            environment: regionEnv, endpoint: .awsContainer, endpointEnvironment: regionEnv)
    }
}

/// `[providers.NAME]` of type aws.
public struct AWSSettings: ProviderSettings {
    public var stsEndpoint: String
    public var region: String
    /// IAM's default client ID (audience) for an OIDC provider used with STS.
    public var airlockAudience: String? { "sts.amazonaws.com" }
}

/// The container credentials endpoint's answer (federation.md B1), as botocore reads it.
public enum AWSContainerCredentials {
    public static func body(_ c: IssuedCredential) -> [String: String] {
        ["AccessKeyId": c.secrets["AccessKeyId"] ?? "", "SecretAccessKey": c.secrets["SecretAccessKey"] ?? "",
         "Token": c.secrets["SessionToken"] ?? "", "Expiration": ISO8601.format(c.expiresAt)]
    }
}
