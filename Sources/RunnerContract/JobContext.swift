/// The job as the runner describes it through `CUSTOM_ENV_*`: the first boundary type of the data path.
///
/// Values that end up in file paths are validated here, so a hostile variable cannot steer Airlock
/// outside its directories.
public struct JobContext: Sendable, Codable, Equatable {
    /// `CI_JOB_ID`, digits only.
    public let jobID: String
    /// `CI_PIPELINE_ID`, if given.
    public let pipelineID: String?
    /// `CI_PROJECT_ID`, digits only.
    public let projectID: String
    /// `CI_PROJECT_PATH`, e.g. `platform/api`.
    public let projectPath: String
    /// `CI_RUNNER_SHORT_TOKEN`, or "local" when absent.
    public let runnerShortToken: String
    /// `CI_CONCURRENT_PROJECT_ID`, or "0" when absent.
    public let concurrentProjectID: String
    /// `CI_JOB_TIMEOUT` in seconds (3600 when absent).
    public let jobTimeoutSeconds: Int
    /// `CI_JOB_NAME`, for logs.
    public let jobName: String?

    /// The default job timeout GitLab applies when none is set.
    public static let defaultJobTimeoutSeconds = 3600

    /// Reads the job from its variables (the `CUSTOM_ENV_` prefix already removed).
    /// - Throws: `AirlockFailure` (system fault) naming the variable that is missing or malformed.
    public init(variables v: [String: String]) throws(AirlockFailure) {
        func digits(_ name: String, default def: String? = nil) throws(AirlockFailure) -> String {
            guard let value = v[name] ?? def else {
                throw AirlockFailure(.system, "CUSTOM_ENV_\(name) is not set: Airlock must run as a GitLab Runner custom executor (or through `airlock simulate`)")
            }
            guard !value.isEmpty, value.count <= 20, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
                throw AirlockFailure(.system, "CUSTOM_ENV_\(name) must be a decimal number, got \(value.debugDescription.prefix(40))")
            }
            return value
        }
        jobID = try digits("CI_JOB_ID")
        projectID = try digits("CI_PROJECT_ID")
        pipelineID = v["CI_PIPELINE_ID"].flatMap { $0.isEmpty ? nil : $0 }
        concurrentProjectID = try digits("CI_CONCURRENT_PROJECT_ID", default: "0")
        let token = v["CI_RUNNER_SHORT_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } ?? "local"
        guard token.count <= 64, token.utf8.allSatisfy({ c in
            (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c == 0x5f || c == 0x2d
        }) else {
            throw AirlockFailure(.system, "CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN has characters outside [A-Za-z0-9_-]")
        }
        runnerShortToken = token
        projectPath = v["CI_PROJECT_PATH"] ?? ""
        jobName = v["CI_JOB_NAME"]
        if let t = v["CI_JOB_TIMEOUT"], let secs = Int(t), secs > 0 {
            jobTimeoutSeconds = secs
        } else {
            jobTimeoutSeconds = Self.defaultJobTimeoutSeconds
        }
    }
}
