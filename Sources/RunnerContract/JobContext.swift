/// The job as Airlock knows it: the first boundary type of the data path.
///
/// What decides paths, state, uid and token matching (`jobID`, `projectID`, `jobTimeoutSeconds`)
/// comes from the runner's payload (`JobResponse`), never from a `CUSTOM_ENV_` value the job could
/// set. `projectPath`, `pipelineID` and `jobName` are the job's variables, kept for logs only; the
/// audit's authoritative identity is the verified ID token's claims.
public struct JobContext: Sendable, Codable, Equatable {
    /// The payload's `id`, digits only.
    public let jobID: String
    /// `CI_PIPELINE_ID` as the job's variables say (informational).
    public let pipelineID: String?
    /// The payload's `job_info.project_id`, digits only.
    public let projectID: String
    /// `CI_PROJECT_PATH` as the job's variables say (informational: never used for a path or a check).
    public let projectPath: String
    /// The payload's `runner_info.timeout` (7200 s, the runner's default, when absent).
    public let jobTimeoutSeconds: Int
    /// The payload's `job_info.name`, for logs.
    public let jobName: String?
    /// The payload's `git_info.protected`, when GitLab sent it.
    public let refProtected: Bool?

    /// The job timeout the runner applies when the payload has none (`DefaultTimeout`).
    public static let defaultJobTimeoutSeconds = 7200

    /// The job from the runner's payload, plus the informational variables.
    public init(response: JobResponse, variables v: [String: String]) {
        jobID = response.jobID
        projectID = response.projectID
        jobTimeoutSeconds = response.timeoutSeconds ?? Self.defaultJobTimeoutSeconds
        jobName = response.jobName
        refProtected = response.refProtected
        pipelineID = v["CI_PIPELINE_ID"].flatMap { $0.isEmpty || $0.count > 20 ? nil : $0 }
        projectPath = String((v["CI_PROJECT_PATH"] ?? "").prefix(255))
    }

    /// Reads the payload named by `JOB_RESPONSE_FILE`.
    /// - Throws: `AirlockFailure` (system) when it is missing or malformed.
    public init(_ env: RunnerEnvironment) throws(AirlockFailure) {
        self.init(response: try JobResponse.load(path: env.jobResponseFile), variables: env.jobVariables)
    }

    /// The job as the job record keeps it: the keys Codable uses (records written with JSONEncoder
    /// before issue 19 read the same), absent optionals left out.
    public var json: JSONValue {
        var o: [String: JSONValue] = ["jobID": .string(jobID), "projectID": .string(projectID), "projectPath": .string(projectPath),
                                      "jobTimeoutSeconds": .int(jobTimeoutSeconds)]
        if let pipelineID { o["pipelineID"] = .string(pipelineID) }
        if let jobName { o["jobName"] = .string(jobName) }
        if let refProtected { o["refProtected"] = .bool(refProtected) }
        return .object(o)
    }

    /// The job from `json`'s form; nil when a key is missing or has the wrong type.
    public init?(json n: JSONNode) {
        guard let jobID = n["jobID"]?.string, let projectID = n["projectID"]?.string, let projectPath = n["projectPath"]?.string,
              let timeout = n["jobTimeoutSeconds"]?.int64 else { return nil }
        func optional<T>(_ key: String, _ get: (JSONNode) -> T?) -> T?? {
            guard let v = n[key], !v.isNull else { return .some(nil) }
            return get(v).map { .some($0) }
        }
        guard let pipelineID = optional("pipelineID", \.string), let jobName = optional("jobName", \.string),
              let refProtected = optional("refProtected", \.bool) else { return nil }
        self.jobID = jobID
        self.projectID = projectID
        self.projectPath = projectPath
        self.jobTimeoutSeconds = Int(timeout)
        self.pipelineID = pipelineID
        self.jobName = jobName
        self.refProtected = refProtected
    }
}
