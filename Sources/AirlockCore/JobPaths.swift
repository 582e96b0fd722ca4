import Foundation
import RunnerContract

/// Where one job lives on the host. Computed from the config and the job's variables alone, so every
/// stage (and sweep) finds the same paths without trusting anything the job could write.
public struct JobPaths: Sendable, Codable, Equatable {
    /// Handed to the runner as `builds_dir`; the runner appends `<namespace>/<project>` itself.
    /// Unique per runner token, concurrent slot and project id, so two concurrent jobs never share it
    /// and a job never sees another project's checkout.
    public let buildsDir: String
    /// Handed to the runner as `cache_dir`; per project id (project paths can be reused).
    public let cacheDir: String
    /// The job's HOME, removed at cleanup.
    public let home: String
    /// The job's private state (0700, invisible to the job).
    public let state: String

    public init(runner: RunnerSettings, job: JobContext) {
        buildsDir = "\(runner.buildsRoot)/\(job.runnerShortToken)/\(job.concurrentProjectID)/project-\(job.projectID)"
        cacheDir = "\(runner.cacheRoot)/project-\(job.projectID)"
        home = "\(runner.homesRoot)/job-\(job.jobID)"
        state = "\(runner.stateDir)/jobs/\(job.jobID)"
    }
}
