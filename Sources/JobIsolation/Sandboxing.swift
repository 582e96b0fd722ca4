package import AirlockConfiguration
package import Delivery
import Foundation
import Ledger
package import RunnerContract

/// Builds the sandbox for a stage from the config and the job: what is hidden, what is writable,
/// and the job's environment, made from scratch.
package enum Sandboxing {
    /// The inside path of the stage script.
    package static let scriptInside = "/tmp/.airlock-stage.sh"
    /// Where the stage's secret files appear inside the sandbox (under its private /run).
    package static let secretsInside = "/run/airlock/secrets"

    /// - Throws: `AirlockFailure` (system) when bubblewrap is configured but absent.
    package static func requireBubblewrap(_ runner: RunnerSettings) throws(AirlockFailure) {
        if installed(runner.bwrap) { return }
        throw AirlockFailure(.system, "bubblewrap (\(runner.bwrap)) is not installed: `apt-get install bubblewrap`, or set [runner] bwrap to its path, or isolation = \"none\" (weaker: jobs then see the host)")
    }

    /// Whether `name` (a path, or a command found on PATH) is an executable.
    package static func installed(_ name: String) -> Bool { resolve(name) != nil }

    /// The absolute path of `name` (a path, or a command found on PATH), if it is an executable.
    package static func resolve(_ name: String) -> String? {
        // A file (not a directory) this process may execute: stat(2) and access(2), without
        // FileManager (4% of every run stage).
        func executable(_ p: String) -> Bool {
            guard let st = Files.status(p, follow: true), !st.isDirectory else { return false }
            return access(p, X_OK) == 0
        }
        if name.hasPrefix("/") { return executable(name) ? name : nil }
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") where executable("\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        return nil
    }

    /// - Throws: `AirlockFailure` (system) when Airlock cannot give the job its own uid.
    package static func requireRoot(_ runner: RunnerSettings) throws(AirlockFailure) {
        guard geteuid() == 0 else {
            throw AirlockFailure(.system, "Airlock runs as uid \(geteuid()), and must run as root to give each job its own unprivileged uid from [runner] job_uids (gitlab-runner's packages run the service as root); isolation = \"none\" skips this and is unsafe")
        }
    }

    /// The job's environment: PATH, HOME, LANG, TMPDIR and what the stage is delivered. No
    /// `CUSTOM_ENV_*`, no runner variables, no Airlock variables.
    package static func environment(runner: RunnerSettings, env: RunnerEnvironment, paths: JobPaths, extra: [String: String]) -> [String: String] {
        var e: [String: String] = [
            "PATH": runner.jobPath ?? env.raw["PATH"] ?? "/usr/local/bin:/usr/bin:/bin",
            "HOME": paths.homeView,
            "LANG": env.raw["LANG"] ?? "C.UTF-8",
        ]
        if runner.isolation == .bubblewrap { e["TMPDIR"] = "/tmp" }
        for (k, v) in extra { e[k] = v }
        return e
    }

    /// The allow-listed view: the system read-only; the job's own builds dir, cache dir and HOME at
    /// the paths every job sees; a private /tmp and /run; and nothing of Airlock's, the runner's or
    /// another job's. Files it needs (script, secrets) arrive as descriptors.
    package static func spec(view: JobView, env: RunnerEnvironment, paths: JobPaths, scriptPath: String, scriptFD: Int32?,
                     dataFiles: [(fd: Int32, inside: String)], extraEnvironment: [String: String]) -> SandboxSpec {
        let r = view.runner
        let bw = r.isolation == .bubblewrap
        // Roots of every job's directories are covered whole; the job's own are mounted on top.
        var hiddenDirs = [r.buildsRoot, r.cacheRoot, r.homesRoot, r.stateDir, r.secretsRoot,
                          (r.auditLog as NSString).deletingLastPathComponent] + r.hiddenPaths
        var hiddenFiles = [view.path, r.auditLog] + view.hiddenFiles
        if let t = env.runnerTempDir {
            hiddenDirs.append(t)
            // The runner makes one temp dir per job beside the others: hide their parent too, unless
            // it is a system directory the job needs.
            let parent = (t as NSString).deletingLastPathComponent
            if parent.split(separator: "/").count >= 2 && !["/var/tmp", "/usr/local", "/var/lib"].contains(parent) {
                hiddenDirs.append(parent)
            }
        }
        if let f = env.jobResponseFile {
            hiddenFiles.append(f)
            hiddenDirs.append((f as NSString).deletingLastPathComponent)
        }
        // A directory that holds only Airlock's files (e.g. /etc/airlock) is hidden whole: keys and
        // JWKS files live beside the config.
        let configDir = (view.path as NSString).deletingLastPathComponent
        if (configDir as NSString).lastPathComponent.contains("airlock") { hiddenDirs.append(configDir) }
        let own = [(paths.buildsDir, paths.buildsView), (paths.cacheDir, paths.cacheView), (paths.home, paths.homeView)]
        // A hidden directory that holds one of the job's own mount points cannot be covered before
        // them without also covering them; bubblewrap mounts the job's after, so that order is fine,
        // but never hide a directory *inside* the job's own view.
        hiddenDirs = hiddenDirs.filter { d in !own.contains { d.hasPrefix($0.1 + "/") } }
        return SandboxSpec(
            useBubblewrap: bw, bwrapPath: resolve(r.bwrap) ?? r.bwrap, uid: bw ? paths.uid : nil,
            writable: bw ? own.map { (host: $0.0, inside: $0.1) } : [],
            hiddenDirectories: hiddenDirs, hiddenFiles: hiddenFiles,
            dataFiles: bw ? (scriptFD.map { [(fd: $0, inside: scriptInside)] } ?? []) + dataFiles : [],
            directory: paths.buildsView,
            environment: environment(runner: r, env: env, paths: paths, extra: extraEnvironment),
            command: ["bash", "--noprofile", "--norc", bw ? scriptInside : scriptPath])
    }
}
