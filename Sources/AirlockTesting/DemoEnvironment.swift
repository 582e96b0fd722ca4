import Foundation

/// The embedded default the README's demo runs on: a private directory tree and config.
public final class DemoEnvironment: @unchecked Sendable {
    public let directory: String
    public let configPath: String
    public let auditLog: String
    public let job: SimulatedJob

    init(directory: String, configPath: String, auditLog: String, job: SimulatedJob) {
        self.directory = directory
        self.configPath = configPath
        self.auditLog = auditLog
        self.job = job
    }

    /// Creates the demo tree and config under `directory`.
    /// - Throws: when the directory cannot be written.
    public static func start(directory: String, isolation: String) async throws -> DemoEnvironment {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config = "\(directory)/airlock.toml"
        let audit = "\(directory)/log/audit.jsonl"
        let text = """
        [runner]
        builds_root = "\(directory)/builds"
        cache_root = "\(directory)/cache"
        state_dir = "\(directory)/state"
        audit_log = "\(audit)"
        isolation = "\(isolation)"
        graceful_kill = "5s"

        """
        try text.write(toFile: config, atomically: true, encoding: .utf8)
        var job = SimulatedJob(script: [
            "echo \"hello from job $CI_JOB_ID in $(pwd)\"",
            "echo \"hostname inside the sandbox: $(hostname)\"",
            "ls /var/lib/airlock 2>&1 | head -1 || true",
            "env | grep -c CUSTOM_ENV_ || echo 'no CUSTOM_ENV_ variables reach the job'",
        ])
        job.afterScript = ["echo after_script ran"]
        return DemoEnvironment(directory: directory, configPath: config, auditLog: audit, job: job)
    }

    /// Stops what the demo started.
    public func stop() {}
}
