import Foundation

/// A job for the runner simulator, read from a JSON job file.
///
///     {"script": ["aws sts get-caller-identity"], "after_script": ["echo done"],
///      "variables": {"AWS_REGION": "eu-west-1"}, "id_tokens": {"AIRLOCK_ID_TOKEN": "eyJ..."},
///      "project_id": 42, "project_path": "platform/api", "ref": "main", "timeout": 3600}
public struct SimulatedJob: Codable, Sendable {
    public var name: String = "build"
    public var jobID: Int = Int.random(in: 100_000...999_999_999)
    public var pipelineID: Int = 7001
    public var projectID: Int = 42
    public var projectPath: String = "platform/api"
    public var ref: String = "main"
    public var sha: String = "0123456789abcdef0123456789abcdef01234567"
    public var runnerShortToken: String = "t3stRunr"
    public var concurrentProjectID: Int = 0
    /// Seconds; sets CI_JOB_TIMEOUT and is enforced like the runner's job timeout.
    public var timeout: Int = 3600
    /// `git_info.protected` in the runner's payload (newer GitLab); nil leaves it out.
    public var refProtected: Bool? = nil
    /// Job variables (`variables:` in .gitlab-ci.yml), public and unmasked.
    public var variables: [String: String] = [:]
    /// Masked job variables: the simulator masks their exact values in the log, as the runner does.
    public var maskedVariables: [String: String] = [:]
    /// File-type variables: the job gets a path to a file with this content.
    public var fileVariables: [String: String] = [:]
    /// `id_tokens:` entries, already minted: name → JWT.
    public var idTokens: [String: String] = [:]
    public var script: [String] = []
    public var afterScript: [String] = []
    /// `cache:`: the runner sends restore_cache and archive_cache(_on_failure) only when there is one.
    public var cache: Bool = false
    /// `artifacts:` with its `when` ("on_success", "on_failure", "always"); nil: none, and the runner
    /// sends no upload_artifacts_* stage.
    public var artifactsWhen: String? = nil
    /// Artifacts of earlier jobs to download: the runner sends download_artifacts only then.
    public var dependencies: Bool = false
    /// `image:` and `services:`: a custom executor gets them as CUSTOM_ENV_CI_JOB_IMAGE and
    /// CUSTOM_ENV_CI_JOB_SERVICES (a JSON array) and nothing else.
    public var image: String = ""
    public var services: [String] = []
    /// Test-only: commands appended to the body of a runner-made stage (prepare_script, get_sources,
    /// cleanup_file_variables), to observe what that stage's environment holds. Naming a stage the
    /// simulator otherwise skips (`restore_cache`, `download_artifacts`, `step_<name>`, `archive_cache`,
    /// `upload_artifacts_on_success`) makes it run, at the runner's place for it (custom-executor.md §1).
    public var stageProbes: [String: [String]] = [:]

    public init(script: [String]) { self.script = script }

    enum CodingKeys: String, CodingKey {
        case name, jobID = "job_id", pipelineID = "pipeline_id", projectID = "project_id", projectPath = "project_path"
        case ref, sha, runnerShortToken = "runner_short_token", concurrentProjectID = "concurrent_project_id", timeout
        case variables, maskedVariables = "masked_variables", fileVariables = "file_variables", idTokens = "id_tokens"
        case script, afterScript = "after_script", stageProbes = "stage_probes", refProtected = "ref_protected"
        case cache, artifactsWhen = "artifacts_when", dependencies, image, services
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = SimulatedJob(script: [])
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? d.name
        jobID = try c.decodeIfPresent(Int.self, forKey: .jobID) ?? d.jobID
        pipelineID = try c.decodeIfPresent(Int.self, forKey: .pipelineID) ?? d.pipelineID
        projectID = try c.decodeIfPresent(Int.self, forKey: .projectID) ?? d.projectID
        projectPath = try c.decodeIfPresent(String.self, forKey: .projectPath) ?? d.projectPath
        ref = try c.decodeIfPresent(String.self, forKey: .ref) ?? d.ref
        sha = try c.decodeIfPresent(String.self, forKey: .sha) ?? d.sha
        runnerShortToken = try c.decodeIfPresent(String.self, forKey: .runnerShortToken) ?? d.runnerShortToken
        concurrentProjectID = try c.decodeIfPresent(Int.self, forKey: .concurrentProjectID) ?? d.concurrentProjectID
        timeout = try c.decodeIfPresent(Int.self, forKey: .timeout) ?? d.timeout
        refProtected = try c.decodeIfPresent(Bool.self, forKey: .refProtected)
        variables = try c.decodeIfPresent([String: String].self, forKey: .variables) ?? [:]
        maskedVariables = try c.decodeIfPresent([String: String].self, forKey: .maskedVariables) ?? [:]
        fileVariables = try c.decodeIfPresent([String: String].self, forKey: .fileVariables) ?? [:]
        idTokens = try c.decodeIfPresent([String: String].self, forKey: .idTokens) ?? [:]
        script = try c.decodeIfPresent([String].self, forKey: .script) ?? []
        afterScript = try c.decodeIfPresent([String].self, forKey: .afterScript) ?? []
        stageProbes = try c.decodeIfPresent([String: [String]].self, forKey: .stageProbes) ?? [:]
        cache = try c.decodeIfPresent(Bool.self, forKey: .cache) ?? false
        artifactsWhen = try c.decodeIfPresent(String.self, forKey: .artifactsWhen)
        dependencies = try c.decodeIfPresent(Bool.self, forKey: .dependencies) ?? false
        image = try c.decodeIfPresent(String.self, forKey: .image) ?? ""
        services = try c.decodeIfPresent([String].self, forKey: .services) ?? []
    }

    /// Whether the runner has work for `stage` (it skips the others: `ErrSkipBuildStage`). Probing a
    /// stage gives it work, as a cache or artifact would.
    func hasWork(_ stage: String, failed: Bool) -> Bool {
        switch stage {
        case "restore_cache", "archive_cache", "archive_cache_on_failure":
            return cache || stageProbes["restore_cache"] != nil && stage == "restore_cache" || stageProbes["archive_cache"] != nil && stage != "restore_cache"
        case "download_artifacts":
            return dependencies || stageProbes[stage] != nil
        case "upload_artifacts_on_success":
            return !failed && (artifactsWhen == "on_success" || artifactsWhen == "always" || stageProbes[stage] != nil)
        case "upload_artifacts_on_failure":
            return failed && (artifactsWhen == "on_failure" || artifactsWhen == "always" || stageProbes[stage] != nil)
        default:
            return true
        }
    }

    /// Loads a job file.
    /// - Throws: a message naming the file and the JSON problem.
    public static func load(_ path: String) throws -> SimulatedJob {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SimulatorError("cannot read job file \(path)")
        }
        do {
            return try JSONDecoder().decode(SimulatedJob.self, from: data)
        } catch {
            throw SimulatorError("job file \(path) is not a valid job: \(error)")
        }
    }
}

/// A simulator failure (bad job file, executable missing).
public struct SimulatorError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
