public import AirlockConfiguration
import Foundation
import Ledger
public import RunnerContract

/// Whether a job's ref is protected: directories written by one class are never reused by the other
/// (GitLab keeps protected caches apart for the same reason: an unprotected branch must not plant
/// files that a protected deployment later runs).
public enum RefClass: String, Sendable, Codable {
    case protected
    case unprotected
}

/// Where one job lives on the host, and what the job sees of it.
///
/// Host paths derive only from trusted values (the runner's payload, the verified token, the uid
/// Airlock allocated), never from a job variable. With bubblewrap every job sees the same view:
/// its own builds dir mounted at `builds_root`, its cache at `cache_root`, its HOME at `homes_root`;
/// nobody else's directory exists inside its sandbox.
public struct JobPaths: Sendable, Codable, Equatable {
    /// The job's builds directory on the host (owned by its uid while it runs).
    public let buildsDir: String
    /// The job's cache directory on the host.
    public let cacheDir: String
    /// The job's HOME on the host, removed at cleanup.
    public let home: String
    /// The job's private state (0700 root, never visible to the job).
    public let state: String
    /// What the runner and the job see: config_exec's `builds_dir`, `cache_dir`, and HOME.
    public let buildsView: String
    public let cacheView: String
    public let homeView: String
    /// The uid (and gid) the job's stages run as; nil with `isolation = "none"`.
    public let uid: UInt32?
    /// The protection class its builds and cache directories belong to.
    public let refClass: RefClass

    /// State directory of a job (`JobStateStore` owns the layout).
    public static func state(_ runner: RunnerSettings, jobID: String) -> String { JobStateStore.directory(stateDir: runner.stateDir, jobID: jobID) }

    /// What config_exec hands the runner, before prepare has allocated anything.
    public static func view(runner: RunnerSettings, job: JobContext?) -> (builds: String, cache: String) {
        guard runner.isolation != .bubblewrap, let job else { return (runner.buildsRoot, runner.cacheRoot) }
        let u = unsandboxed(runner: runner, job: job)
        return (u.buildsDir, u.cacheDir)
    }

    /// The sandboxed layout: `<root>/project-<id>/<class>/<uid>` for builds and cache, one per uid
    /// slot, so that two running jobs never share one (each uid belongs to one running job).
    public static func sandboxed(runner: RunnerSettings, job: JobContext, uid: UInt32, refClass: RefClass) -> JobPaths {
        JobPaths(buildsDir: "\(slotParent(runner.buildsRoot, job: job, refClass))/\(uid)",
                 cacheDir: "\(slotParent(runner.cacheRoot, job: job, refClass))/\(uid)",
                 home: "\(runner.homesRoot)/job-\(job.jobID)", state: state(runner, jobID: job.jobID),
                 buildsView: runner.buildsRoot, cacheView: runner.cacheRoot, homeView: runner.homesRoot,
                 uid: uid, refClass: refClass)
    }

    /// Where a project's slot directories of one class live (for reuse: a free uid whose directory
    /// already exists there is preferred).
    public static func slotParent(_ root: String, job: JobContext, _ refClass: RefClass) -> String {
        "\(root)/project-\(job.projectID)/\(refClass.rawValue)"
    }

    /// `isolation = "none"` (unsafe): per-job host directories, removed at cleanup; the job sees the host.
    public static func unsandboxed(runner: RunnerSettings, job: JobContext) -> JobPaths {
        let b = "\(runner.buildsRoot)/project-\(job.projectID)/job-\(job.jobID)"
        let c = "\(runner.cacheRoot)/project-\(job.projectID)/job-\(job.jobID)"
        let h = "\(runner.homesRoot)/job-\(job.jobID)"
        return JobPaths(buildsDir: b, cacheDir: c, home: h, state: state(runner, jobID: job.jobID),
                        buildsView: b, cacheView: c, homeView: h, uid: nil, refClass: .unprotected)
    }
}

extension JobPaths {
    /// The paths as the job record keeps them: the keys Codable uses (records written with
    /// JSONEncoder before issue 19 read the same), no uid without isolation.
    public var json: JSONValue {
        var o: [String: JSONValue] = ["buildsDir": .string(buildsDir), "cacheDir": .string(cacheDir), "home": .string(home), "state": .string(state),
                                      "buildsView": .string(buildsView), "cacheView": .string(cacheView), "homeView": .string(homeView),
                                      "refClass": .string(refClass.rawValue)]
        if let uid { o["uid"] = .int(Int(uid)) }
        return .object(o)
    }

    /// The paths from `json`'s form; nil when a key is missing or has the wrong type.
    public init?(json n: JSONNode) {
        guard let buildsDir = n["buildsDir"]?.string, let cacheDir = n["cacheDir"]?.string, let home = n["home"]?.string,
              let state = n["state"]?.string, let buildsView = n["buildsView"]?.string, let cacheView = n["cacheView"]?.string,
              let homeView = n["homeView"]?.string, let refClass = n["refClass"]?.string.flatMap(RefClass.init(rawValue:)) else { return nil }
        let uid: UInt32?
        if let v = n["uid"], !v.isNull {
            guard let u = v.int64.flatMap(UInt32.init(exactly:)) else { return nil }
            uid = u
        } else {
            uid = nil
        }
        self.init(buildsDir: buildsDir, cacheDir: cacheDir, home: home, state: state, buildsView: buildsView, cacheView: cacheView,
                  homeView: homeView, uid: uid, refClass: refClass)
    }
}
