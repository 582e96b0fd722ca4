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

    /// The variables that send an SDK to the credential server's `kind` route for `profile`.
    public func environment(_ kind: EndpointKind, profile: String, secretsDir: String) -> [(String, String)] {
        let base = "http://127.0.0.1:\(port)"
        switch kind {
        case .awsContainer:
            // botocore before 1.32 (Debian bookworm's python3-botocore is 1.29) reads only the
            // variable; newer ones prefer the file. The job's own endpoint secret, masked.
            return [("AWS_CONTAINER_CREDENTIALS_FULL_URI", "\(base)/aws/\(profile)"),
                    ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "\(secretsDir)/\(Self.tokenFileName)"),
                    ("AWS_CONTAINER_AUTHORIZATION_TOKEN", secret)]
        case .azureManagedIdentity:
            return [("IDENTITY_ENDPOINT", "\(base)/azure"), ("IDENTITY_HEADER", secret)]
        case .gceMetadata:
            // google-auth builds http://<GCE_METADATA_HOST>/computeMetadata/v1/...; without the owner
            // rule the secret rides in the path (see ownerOnly). gcloud and older google-auth read
            // GCE_METADATA_ROOT (http://<it>/computeMetadata/v1/): the same host.
            return [("GCE_METADATA_HOST", metadataHost), ("GCE_METADATA_IP", metadataHost), ("GCE_METADATA_ROOT", metadataHost)]
        }
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
            let d = c.delivery
            guard !d.fromOlderLedger else {
                throw AirlockFailure(.system, "profile \(c.profile): its credential was issued by an earlier Airlock (upgraded while this job ran), whose ledger does not say how to deliver it; retry the job")
            }
            if rule.viaEndpoint {
                // No credential in the stage: only where to ask, and the job's secret (federation.md B1-B3).
                guard let endpoint else {
                    throw AirlockFailure(.system, "profile \(c.profile) is delivered by the credential server, which is not running; see endpoint.log in the job's state")
                }
                guard let kind = d.endpoint else {
                    throw AirlockFailure(.system, "profile \(c.profile): a \(c.providerType) credential has no endpoint that serves it")
                }
                for (k, v) in endpoint.environment(kind, profile: c.profile, secretsDir: secretsDir) { try set(k, v, c.profile) }
                if kind == .awsContainer { plan.files[EndpointAccess.tokenFileName] = endpoint.secret }
                for (k, v) in d.endpointEnvironment.sorted(by: { $0.key < $1.key }) { try set(k, v, c.profile) }
                continue
            }
            if rule.asFile, let file = d.file {
                // The provider's own file (AWS's shared credentials file) instead of one per secret.
                plan.files[file.name] = file.content.map { part in
                    switch part {
                    case .text(let t): t
                    case .secret(let key): c.secrets[key] ?? ""
                    }
                }.joined()
                try set(file.pathVariable, "\(secretsDir)/\(file.name)", c.profile)
                for (k, v) in file.environment.sorted(by: { $0.key < $1.key }) { try set(k, v, c.profile) }
            } else {
                for secret in d.secrets {
                    try give(c.secrets[secret.key] ?? "", asFile: rule.asFile, file: secret.file, fileVariable: secret.fileVariable,
                             env: secret.variables, c.profile)
                }
            }
            for (k, v) in d.environment.sorted(by: { $0.key < $1.key }) { try set(k, v, c.profile) }
        }
        return plan
    }
}
