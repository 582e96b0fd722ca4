import AirlockConfiguration
import AirlockCore
import AirlockTesting
import Foundation
import Identity
import HTTPClient
import Ledger
import RunnerContract

/// A test issuer, a config that trusts it, and a job to authorize.
final class IdentityFixture: @unchecked Sendable {
    let issuer: TestIssuer
    let dir: String
    let config: AirlockConfig
    var job = SimulatedJob(script: [])
    static let audience = "https://airlock.test"

    /// Warnings Airlock gave while authorizing (a stale key set in use, a failed refresh).
    let warnings = Warnings()

    /// `extraGitLab` goes into `[gitlab]`, `extraConfig` (providers, profiles) before the rules.
    init(extraGitLab: String = "", extraConfig: String = "", rules: String? = nil) throws {
        issuer = try TestIssuer()
        dir = "/var/tmp/airlock-unit-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let text = """
        [runner]
        builds_root = "\(dir)/builds"
        cache_root = "\(dir)/cache"
        state_dir = "\(dir)/state"
        audit_log = "\(dir)/audit.jsonl"

        [gitlab]
        issuer = "\(issuer.issuer)"
        audience = "\(Self.audience)"
        \(extraGitLab)

        [providers.aws-main]
        type = "aws"
        sts_endpoint = "http://127.0.0.1:1"

        [profiles.deploy-prod]
        provider = "aws-main"
        role_arn = "arn:aws:iam::123456789012:role/gitlab-{project_id}"

        [profiles.read-only]
        provider = "aws-main"
        role_arn = "arn:aws:iam::123456789012:role/ro"

        \(extraConfig)

        \(rules ?? """
        [[rules]]
        name = "protected main of platform projects"
        project_path = "platform/*"
        ref = "main"
        ref_protected = true
        grant = ["deploy-prod"]
        """)
        """
        config = try AirlockConfig.parse(text, path: "\(dir)/airlock.toml")
    }

    var audit: AuditLog { AuditLog(path: config.runner.auditLog) }

    func claims(now: Date = Date()) -> [String: Any] { issuer.claims(for: job, audience: Self.audience, now: now) }

    func env(token: String?, extra: [String: String] = [:]) -> RunnerEnvironment {
        var e = ["CUSTOM_ENV_CI_JOB_ID": "\(job.jobID)", "CUSTOM_ENV_CI_PROJECT_ID": "\(job.projectID)",
                 "CUSTOM_ENV_CI_PROJECT_PATH": job.projectPath]
        if let token { e["CUSTOM_ENV_AIRLOCK_ID_TOKEN"] = token }
        for (k, v) in extra { e["CUSTOM_ENV_\(k)"] = v }
        return RunnerEnvironment(e)
    }

    func authorize(_ token: String?, extra: [String: String] = [:], now: Date = Date()) async throws -> Authorization {
        let env = env(token: token, extra: extra)
        // The job's identity comes from the runner's payload, as in a real prepare.
        let response = try JobResponse(json: Data(#"{"id": \#(job.jobID), "job_info": {"project_id": \#(job.projectID)}}"#.utf8))
        return try await Authorizer.authorize(config: config, env: env, job: JobContext(response: response, variables: env.jobVariables),
                                              now: now, transport: URLSessionTransport(), warn: { [warnings] in warnings.add($0) })
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }
}

/// Messages collected from a `warn` callback.
final class Warnings: Sendable {
    private let lock = NSLock()
    nonisolated(unsafe) private var list: [String] = []
    func add(_ s: String) { lock.withLock { list.append(s) } }
    var all: [String] { lock.withLock { list } }
}
