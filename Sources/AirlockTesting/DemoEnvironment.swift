import Foundation

/// The embedded default the README's demo runs on: a local GitLab issuer (discovery, JWKS, a minted
/// ID token), moto's server as the AWS STS, a private directory tree and a config tying them together.
public final class DemoEnvironment: @unchecked Sendable {
    public let directory: String
    public let configPath: String
    public let auditLog: String
    public let job: SimulatedJob
    let issuer: TestIssuer
    let moto: MotoServer

    init(directory: String, configPath: String, auditLog: String, job: SimulatedJob, issuer: TestIssuer, moto: MotoServer) {
        self.directory = directory
        self.configPath = configPath
        self.auditLog = auditLog
        self.job = job
        self.issuer = issuer
        self.moto = moto
    }

    /// Starts the issuer and moto, and writes the config under `directory`.
    /// - Throws: when moto cannot start or the directory cannot be written.
    public static func start(directory: String, isolation: String) async throws -> DemoEnvironment {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let issuer = try TestIssuer()
        let moto = try MotoServer()
        let config = "\(directory)/airlock.toml"
        let audit = "\(directory)/log/audit.jsonl"
        let audience = "https://airlock.demo"
        let text = """
        [runner]
        builds_root = "\(directory)/builds"
        cache_root = "\(directory)/cache"
        state_dir = "\(directory)/state"
        audit_log = "\(audit)"
        isolation = "\(isolation)"
        graceful_kill = "5s"
        job_path = "/opt/airlock-venv/bin:/usr/local/bin:/usr/bin:/bin"

        [gitlab]
        issuer = "\(issuer.issuer)"            # the demo's local GitLab issuer
        audience = "\(audience)"

        [providers.aws-demo]
        type = "aws"
        sts_endpoint = "\(moto.url)"           # moto's server on loopback
        region = "eu-west-1"

        [profiles.deploy-prod]
        provider = "aws-demo"
        role_arn = "arn:aws:iam::123456789012:role/gitlab-{project_id}"
        session_name = "gitlab-{project_id}-{job_id}"
        max_duration = "1h"
        stages = ["build_script", "after_script"]

        [[rules]]
        name = "protected main of project 42"
        project_id = 42
        ref = "main"
        ref_protected = true
        grant = ["deploy-prod"]

        """
        try text.write(toFile: config, atomically: true, encoding: .utf8)
        var job = SimulatedJob(script: [
            "echo \"job $CI_JOB_ID in $(pwd) on $(hostname)\"",
            "echo \"ID token visible to the job: [${AIRLOCK_ID_TOKEN}]\"",
            "aws sts get-caller-identity --output text --query Arn",
            "echo \"the secret key, plainly: $AWS_SECRET_ACCESS_KEY\"",
            "printf '%s' \"$AWS_SECRET_ACCESS_KEY\" | base64 -w0; echo '   <- base64'",
            "ls \(directory)/state 2>&1 || true",
        ])
        job.afterScript = ["echo \"after_script still has credentials: ${AWS_ACCESS_KEY_ID:+yes}\""]
        job.variables = ["AWS_ENDPOINT_URL_STS": moto.url]
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: audience))]
        return DemoEnvironment(directory: directory, configPath: config, auditLog: audit, job: job, issuer: issuer, moto: moto)
    }

    /// Stops moto and the issuer.
    public func stop() {
        moto.stop()
        issuer.server.stop()
    }
}
