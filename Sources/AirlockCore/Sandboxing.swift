import Delivery
import Foundation
import RunnerContract

/// Builds the sandbox for a stage from the config and the job: what is hidden, what is writable,
/// and the job's environment, made from scratch.
enum Sandboxing {
    /// The inside path of the stage script.
    static let scriptInside = "/tmp/.airlock-stage.sh"
    /// Where the stage's secret files appear inside the sandbox (under its private /run).
    static let secretsInside = "/run/airlock/secrets"

    /// - Throws: `AirlockFailure` (system) when bubblewrap is configured but absent.
    static func requireBubblewrap(_ runner: RunnerSettings) throws(AirlockFailure) {
        if runner.bwrap.hasPrefix("/") {
            if FileManager.default.isExecutableFile(atPath: runner.bwrap) { return }
        } else {
            let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
            for dir in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(dir)/\(runner.bwrap)") {
                return
            }
        }
        throw AirlockFailure(.system, "bubblewrap (\(runner.bwrap)) is not installed: `apt-get install bubblewrap`, or set [runner] bwrap to its path, or isolation = \"none\" (weaker: jobs then see the host)")
    }

    /// The job's environment: PATH, HOME, LANG, TMPDIR and what the stage is delivered. No
    /// `CUSTOM_ENV_*`, no runner variables, no Airlock variables.
    static func environment(config: AirlockConfig, env: RunnerEnvironment, paths: JobPaths, extra: [String: String]) -> [String: String] {
        var e: [String: String] = [
            "PATH": config.runner.jobPath ?? env.raw["PATH"] ?? "/usr/local/bin:/usr/bin:/bin",
            "HOME": paths.home,
            "LANG": env.raw["LANG"] ?? "C.UTF-8",
        ]
        if config.runner.isolation == .bubblewrap { e["TMPDIR"] = "/tmp" }
        for (k, v) in extra { e[k] = v }
        return e
    }

    static func spec(config: AirlockConfig, env: RunnerEnvironment, paths: JobPaths, scriptPath: String,
                     extraEnvironment: [String: String]) -> SandboxSpec {
        let bw = config.runner.isolation == .bubblewrap
        var hiddenDirs = [config.runner.stateDir, config.runner.secretsRoot]
        var hiddenFiles = [config.path, config.runner.auditLog]
        if let t = env.runnerTempDir { hiddenDirs.append(t) }
        if let r = env.jobResponseFile {
            hiddenFiles.append(r)
            hiddenDirs.append((r as NSString).deletingLastPathComponent)
        }
        // A directory that holds only Airlock's files (e.g. /etc/airlock) is hidden whole: keys and
        // JWKS files live beside the config.
        let configDir = (config.path as NSString).deletingLastPathComponent
        let jobDirs = [paths.buildsDir, paths.cacheDir, paths.home]
        if (configDir as NSString).lastPathComponent.contains("airlock"),
           !jobDirs.contains(where: { $0.hasPrefix(configDir + "/") }) {
            hiddenDirs.append(configDir)
        }
        let workdir = paths.buildsDir
        return SandboxSpec(
            useBubblewrap: bw, bwrapPath: config.runner.bwrap,
            writable: jobDirs,
            hiddenDirectories: hiddenDirs, hiddenFiles: hiddenFiles,
            readOnlyFiles: bw ? [(scriptPath, scriptInside)] : [],
            directory: workdir,
            environment: environment(config: config, env: env, paths: paths, extra: extraEnvironment),
            command: ["bash", "--noprofile", "--norc", bw ? scriptInside : scriptPath])
    }
}
