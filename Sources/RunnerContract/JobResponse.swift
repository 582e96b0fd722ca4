
/// The runner's job payload, `JOB_RESPONSE_FILE` (gitlab-runner `spec.Job`, written 0600 into the
/// runner's temp dir before config_exec): the only source of job identity a job cannot forge.
///
/// Every `CUSTOM_ENV_` value is the job's to choose: the runner appends the job's own `variables:`
/// after the predefined ones and the last value wins (threat-model.md), so `CI_JOB_ID`,
/// `CI_PROJECT_ID`, `CI_JOB_TIMEOUT` and `CI_CONCURRENT_*` prove nothing. The payload's `id`,
/// `job_info.project_id` and `runner_info.timeout` come from GitLab and the runner alone.
public struct JobResponse: Sendable, Equatable {
    /// `id`: the job id, digits.
    public let jobID: String
    /// `job_info.project_id`: the project that runs the job (for a fork's merge request, the target).
    public let projectID: String
    /// `runner_info.timeout` in seconds; nil when absent or not positive (the runner then uses 7200).
    public let timeoutSeconds: Int?
    /// `job_info.name`, for logs.
    public let jobName: String?
    /// `git_info.protected`, when GitLab sends it (newer versions): whether the ref is protected.
    public let refProtected: Bool?
    /// Every `variables` entry in payload order, duplicates kept.
    public let variables: [(key: String, value: String)]

    public static func == (a: JobResponse, b: JobResponse) -> Bool {
        a.jobID == b.jobID && a.projectID == b.projectID && a.timeoutSeconds == b.timeoutSeconds && a.jobName == b.jobName
            && a.refProtected == b.refProtected && a.variables.map(\.key) == b.variables.map(\.key)
            && a.variables.map(\.value) == b.variables.map(\.value)
    }

    /// Parses the payload (with `JSONReader`: no Foundation on this path, which every stage takes).
    /// - Throws: `AirlockFailure` (system) naming the field that is missing or malformed.
    public init(json data: some Sequence<UInt8>, source: String = "response.json") throws(AirlockFailure) {
        let top: JSONNode
        do { top = try JSONReader.parse(data) } catch {
            throw AirlockFailure(.system, "\(source) is not the runner's JSON job payload (\(error))")
        }
        guard top.isObject else { throw AirlockFailure(.system, "\(source) is not the runner's JSON job payload (not an object)") }
        func id(_ value: JSONNode?, _ name: String) throws(AirlockFailure) -> String {
            // spec.Job has int64 ids, which Go writes as plain digits; a string of digits is accepted too.
            if let i = value?.int64, i > 0 { return String(i) }
            if let s = value?.string, !s.isEmpty, s.utf8.count <= 19, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) { return s }
            throw AirlockFailure(.system, "\(source): \(name) is missing or not a positive integer; is this gitlab-runner's JOB_RESPONSE_FILE?")
        }
        jobID = try id(top["id"], "id")
        let info = top["job_info"]
        projectID = try id(info?["project_id"], "job_info.project_id")
        jobName = info?["name"]?.string
        let timeout = top["runner_info"]?["timeout"]
        if let t = timeout?.int64 ?? timeout?.double.flatMap({ $0.isFinite && abs($0) < 1e15 ? Int64($0) : nil }), t > 0 {
            timeoutSeconds = Int(t)
        } else {
            timeoutSeconds = nil
        }
        let protected = top["git_info"]?["protected"]
        refProtected = protected?.bool ?? protected?.double.map { $0 != 0 }
        // An array of objects (anything else in it and the runner did not write it: none are read).
        let list = top["variables"]?.array ?? []
        variables = list.allSatisfy(\.isObject) ? list.compactMap { v in
            guard let k = v["key"]?.string else { return nil }
            return (k, v["value"]?.string ?? "")
        } : []
    }

    /// Reads the payload the runner names in `JOB_RESPONSE_FILE`.
    /// - Throws: `AirlockFailure` (system) when it is missing or unreadable.
    public static func load(path: String?) throws(AirlockFailure) -> JobResponse {
        guard let path, !path.isEmpty else {
            throw AirlockFailure(.system, "JOB_RESPONSE_FILE is not set: Airlock must run as a GitLab Runner custom executor (or through `airlock simulate`); it takes the job's identity from the runner's payload, never from job variables")
        }
        guard let data = FileContents.read(path) else {
            throw AirlockFailure(.system, "cannot read the runner's job payload \(path) (JOB_RESPONSE_FILE)")
        }
        return try JobResponse(json: data, source: path)
    }
}
