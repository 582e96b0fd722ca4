import Delivery
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The executables a runner's `[runners.custom]` block registers; each with its `*_args`.
public struct DriverSpec: Sendable {
    public var configExec: [String]?
    public var prepareExec: [String]?
    public var runExec: [String]
    public var cleanupExec: [String]?

    public init(configExec: [String]?, prepareExec: [String]?, runExec: [String], cleanupExec: [String]?) {
        self.configExec = configExec
        self.prepareExec = prepareExec
        self.runExec = runExec
        self.cleanupExec = cleanupExec
    }

    /// Airlock's four executables from `binDir`, each with `--config configPath`.
    public static func airlock(binDir: String, config: String) -> DriverSpec {
        func exe(_ n: String) -> [String] { ["\(binDir)/airlock-\(n)", "--config", config] }
        return DriverSpec(configExec: exe("config"), prepareExec: exe("prepare"), runExec: exe("run"), cleanupExec: exe("cleanup"))
    }
}

/// How the simulated runner behaves.
public struct SimulatorOptions: Sendable {
    /// Seconds between prepare attempts (the runner waits 3 s).
    public var retryDelay: Double = 3
    /// Send a cancel (SIGTERM to the process group) this many seconds into `cancelStage`.
    public var cancelAfter: Double?
    /// The stage a cancel lands in: any stage name, or "prepare" (prepare_exec), as a cancel can land
    /// anywhere in a real runner (custom-executor.md §1).
    public var cancelStage: String = "build_script"
    /// `config_exec_timeout`, `prepare_exec_timeout`, `cleanup_exec_timeout`: the runner's default
    /// is 3600 s each (a missing or non-positive value means the default).
    public var configExecTimeout: Double = 3600
    public var prepareExecTimeout: Double = 3600
    public var cleanupExecTimeout: Double = 3600
    /// `graceful_kill_timeout` (runner default 600 s) and `force_kill_timeout` (10 s).
    public var gracefulKillTimeout: Double = 600
    public var forceKillTimeout: Double = 10
    /// Mask the job's masked variables in the log as the runner does. Tests switch it off to see
    /// what Airlock itself lets through.
    public var runnerMasking: Bool = true
    /// Print the job log live to stdout.
    public var echo: Bool = false
    /// Where the runner's own temp dirs go (the runner uses its TMPDIR).
    public var tempRoot: String = NSTemporaryDirectory()
    /// Environment of the runner process; the simulator's own by default.
    public var environment: [String: String] = ProcessInfo.processInfo.environment

    public init() {}
}

/// What happened to a simulated job.
public struct SimulationResult: Codable, Sendable {
    public struct StageRun: Codable, Sendable {
        public var stage: String
        public var exitCode: Int32
        public var scriptPath: String
    }
    /// "success", "failed" or "canceled".
    public var status: String = "success"
    /// The job's exit code (from BUILD_EXIT_CODE_FILE) when the script failed.
    public var jobExitCode: Int?
    /// "script_failure", "system_failure", "unknown_failure", "canceled", "job_execution_timeout".
    public var failureReason: String?
    /// The job log as GitLab would show it (runner-masked).
    public var log: String = ""
    /// cleanup_exec's output: the runner logs it unmasked at DEBUG/WARN.
    public var runnerLog: String = ""
    public var stages: [StageRun] = []
    public var prepareAttempts: Int = 0
    public var cleanupRuns: Int = 0
    /// Wall time of each executable the runner started, in order ("config", "prepare", the run
    /// stage's name, "cleanup"), in milliseconds: what `scripts/bench` reports per stage.
    public var timings: [Timing] = []
    public struct Timing: Codable, Sendable {
        public var exec: String
        public var milliseconds: Double
    }

    /// The job log without the runner's echo of each command (`\e[32;1m$ command\e[0;m`, which can
    /// span lines): only what the job's processes and the stages printed. Assert markers against
    /// this, so that a marker written in the command line itself never satisfies a test.
    public var output: String { Self.removingEchoedCommands(log) }

    public static func removingEchoedCommands(_ log: String) -> String {
        var out = ""
        var rest = Substring(log)
        while let start = rest.range(of: "\u{1b}[32;1m$ ") {
            out += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].range(of: "\u{1b}[0;m") else { return out }
            rest = rest[end.upperBound...]
            if rest.first == "\n" { rest = rest.dropFirst() }
        }
        return out + rest
    }
}

/// Drives a custom executor exactly as GitLab Runner 19.x does (custom-executor.md §1): temp dir with
/// response.json, environment, config → prepare (retried) → run per stage → cleanup, cancel and
/// timeout by SIGTERM to the process group, then after_script and the failure stages.
public final class RunnerSimulator: @unchecked Sendable {
    let job: SimulatedJob
    let driver: DriverSpec
    let options: SimulatorOptions
    private var result = SimulationResult()
    private let jobToken = "glcbt-" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
    private var runnerMasks: MaskPatterns
    /// config_exec's answer for the current attempt.
    private var currentConfig = ConfigJSON()

    public init(job: SimulatedJob, driver: DriverSpec, options: SimulatorOptions = .init()) {
        self.job = job
        self.driver = driver
        self.options = options
        runnerMasks = MaskPatterns(exact: [jobToken] + Array(job.maskedVariables.values) + Array(job.idTokens.values))
    }

    /// Runs the job to its end and returns what happened.
    public func run() -> SimulationResult {
        log("Running with gitlab-runner 19.4.0 (airlock runner simulator)")
        log("  on simulated-runner \(job.runnerShortToken), system ID: s_simulated")
        // The job timeout covers prepare too (Build.Run's context): it starts now.
        let deadline = Date().addingTimeInterval(Double(job.timeout))
        log("Preparing the \"custom\" executor")
        var tmp = ""
        var env: [String: String] = [:]
        var configOut = ConfigJSON()
        var prepared = false
        var attempt = 0
        while attempt < 3 {
            attempt += 1
            result.prepareAttempts = attempt
            tmp = makeTempDir()
            env = baseEnvironment(tmp: tmp)
            // The runner writes the payload before config_exec (executors/custom/custom.go Prepare).
            writeResponse(tmp: tmp, env: env)
            let config = runConfig(env: env, deadline: deadline)
            switch config {
            case .ok(let c):
                configOut = c
                currentConfig = c
            case .timedOut:
                log("ERROR: Job failed: execution took longer than \(job.timeout) seconds")
                result.status = "failed"; result.failureReason = "job_execution_timeout"
                runCleanup(env: env, tmp: tmp)
                return finish()
            case .failed(let code, let why):
                log("ERROR: Preparation failed: \(why)")
                // After any failed prepare the runner runs cleanup_exec (Executor.Cleanup), which removes the temp dir.
                runCleanup(env: env, tmp: tmp)
                try? FileManager.default.removeItem(atPath: tmp)
                // config_exec exiting with the build failure code is a BuildError: the job fails, no retry.
                if code == buildFailure {
                    result.status = "failed"; result.failureReason = "script_failure"
                    log("ERROR: Job failed: exit code \(buildFailure)")
                    return finish()
                }
                if attempt < 3 { log("Will be retried in \(Int(options.retryDelay))s ..."); retryWait() }
                continue
            }
            if let shell = configOut.shell, shell != "bash" {
                log("ERROR: Preparation failed: the simulator speaks bash only; config_exec asked for shell \(shell)")
                runCleanup(env: env, tmp: tmp)
                result.status = "failed"; result.failureReason = "system_failure"
                return finish()
            }
            for (k, v) in configOut.jobEnv ?? [:] { env[k] = v }
            env = addJobVariables(env, config: configOut)
            if let d = configOut.driver { log("Using Custom executor with driver \(d.name ?? "") \(d.version ?? "")...") }
            guard let prep = driver.prepareExec else { prepared = true; break }
            let cancel = options.cancelStage == "prepare" ? options.cancelAfter : nil
            let limit = min(options.prepareExecTimeout, max(0, deadline.timeIntervalSinceNow))
            let r = exec(prep, label: "prepare", env: env, cwd: tmp, captureTo: .jobLog, signalAfter: min(limit, cancel ?? .infinity))
            if r.signaled {
                runCleanup(env: env, tmp: tmp)
                if let cancel, cancel < limit {
                    // A cancel: no retry; cleanup still runs.
                    result.status = "canceled"; result.failureReason = "canceled"
                    log("ERROR: Job failed: canceled")
                    return finish()
                }
                if deadline.timeIntervalSinceNow <= 0.05 {
                    result.status = "failed"; result.failureReason = "job_execution_timeout"
                    log("ERROR: Job failed: execution took longer than \(job.timeout) seconds")
                    return finish()
                }
                // prepare_exec_timeout: an error like any other failed prepare, retried.
                log("ERROR: Preparation failed: prepare_exec timed out after \(Int(options.prepareExecTimeout))s")
                if attempt < 3 { log("Will be retried in \(Int(options.retryDelay))s ..."); retryWait() }
                continue
            }
            if r.code == 0 { prepared = true; break }
            if r.code == buildFailure {
                log("ERROR: Job failed: exit code \(buildFailure)")
                result.status = "failed"; result.failureReason = "script_failure"
                runCleanup(env: env, tmp: tmp)
                return finish()
            }
            log("ERROR: Preparation failed: exit code \(r.code)")
            runCleanup(env: env, tmp: tmp)
            if attempt < 3 { log("Will be retried in \(Int(options.retryDelay))s ..."); retryWait() }
        }
        guard prepared else {
            result.status = "failed"; result.failureReason = "system_failure"
            log("ERROR: Job failed (system failure): preparation failed 3 times")
            return finish()
        }

        let projectDir = self.projectDir(configOut)
        var failed = false
        var canceled = false
        var timedOut = false
        // The runner's order (custom-executor.md §1); a stage with nothing to do is not sent.
        var mainStages: [(String, String?, [String], Bool)] = [
            // prepare_script exports no variable: it only says where the job runs.
            ("prepare_script", nil, ["echo \"Running on $(hostname) via \(configOut.hostname ?? "simulated-runner")...\""], false),
            ("get_sources", "Getting source from Git repository", getSourcesBody(projectDir), true),
        ]
        if job.hasWork("restore_cache", failed: false) { mainStages.append(("restore_cache", "Restoring cache", ["echo \"Checking cache\""], true)) }
        if job.hasWork("download_artifacts", failed: false) { mainStages.append(("download_artifacts", "Downloading artifacts", ["echo \"Downloading artifacts (none)\""], true)) }
        mainStages.append(("build_script", "Executing \"step_script\" stage of the job script", userBody(job.script, projectDir), true))
        for step in job.stageProbes.keys.filter({ $0.hasPrefix("step_") }).sorted() {
            mainStages.append((step, "Executing \"\(step)\" stage of the job script", ["cd \(BashScript.escape(projectDir))"], true))
        }
        for (stage, banner, body, exports) in mainStages where !failed {
            if let banner { log(banner) } else { log("Preparing environment") }
            let outcome = runStage(stage, body: (exports ? variableBody(projectDir) : []) + body + (job.stageProbes[stage] ?? []), env: env, tmp: tmp,
                                   cancelAfter: stage == options.cancelStage ? options.cancelAfter : nil, deadline: deadline)
            if outcome.canceled { canceled = true }
            if outcome.reason == "job_execution_timeout" { timedOut = true }
            if !outcome.ok { failed = true; if !outcome.canceled && result.failureReason == nil { record(outcome) } }
        }
        // Once the job timeout is hit every later stage is skipped (executeStage checks ctx.Err()),
        // wherever it is hit: only cleanup_exec runs. A cancel stops only the script: the rest still runs.
        /// Whether the job timeout has passed: then the stage is not sent, and the job fails so.
        func outOfTime() -> Bool {
            if !timedOut && deadline.timeIntervalSinceNow <= 0 {
                timedOut = true
                failed = true
                if result.failureReason == nil || result.failureReason == "script_failure" && !canceled {
                    result.failureReason = "job_execution_timeout"
                }
            }
            return timedOut
        }
        if !job.afterScript.isEmpty && !outOfTime() {
            log("Running after_script")
            let outcome = runStage("after_script", body: variableBody(projectDir) + userBody(job.afterScript, projectDir),
                                   env: env, tmp: tmp, cancelAfter: nil, deadline: min(deadline, Date().addingTimeInterval(300)))
            if !outcome.ok && !outOfTime() { log("WARNING: after_script failed, but job will continue unaffected: exit code \(outcome.jobCode ?? 1)") }
        }
        let archive = failed ? "archive_cache_on_failure" : "archive_cache"
        if job.hasWork(archive, failed: failed) && !outOfTime() {
            log("Saving cache")
            _ = runStage(archive, body: variableBody(projectDir) + ["echo \"Creating cache (none)\""] + (job.stageProbes["archive_cache"] ?? []),
                         env: env, tmp: tmp, cancelAfter: nil, deadline: deadline)
        }
        let upload = failed ? "upload_artifacts_on_failure" : "upload_artifacts_on_success"
        if job.hasWork(upload, failed: failed) && !outOfTime() {
            _ = runStage(upload, body: variableBody(projectDir) + ["echo \"Uploading artifacts (none)\""] + (job.stageProbes[upload] ?? []),
                         env: env, tmp: tmp, cancelAfter: nil, deadline: deadline)
        }
        if !outOfTime() {
            log("Cleaning up project directory and file based variables")
            // cleanup_file_variables exports every variable, like the other script stages.
            _ = runStage("cleanup_file_variables", body: variableBody(projectDir) + ["rm -rf \(BashScript.escape(projectDir + ".tmp"))"] + (job.stageProbes["cleanup_file_variables"] ?? []),
                         env: env, tmp: tmp, cancelAfter: nil, deadline: deadline)
        }
        runCleanup(env: env, tmp: tmp)
        if canceled {
            result.status = "canceled"; result.failureReason = result.failureReason ?? "canceled"
            log("ERROR: Job failed: canceled")
        } else if failed {
            result.status = "failed"
            if result.failureReason == "script_failure" {
                log("ERROR: Job failed: exit code \(result.jobExitCode ?? 1)")
            } else {
                log("ERROR: Job failed (\(result.failureReason ?? "system failure"))")
            }
        } else {
            log("Job succeeded")
        }
        try? FileManager.default.removeItem(atPath: tmp)
        return finish()
    }

    /// CI_PROJECT_DIR as the runner builds it from config_exec's answer: `<builds_dir>/<path>`, or
    /// with `builds_dir_is_shared` `<builds_dir>/<runner short token>/<concurrent id>/<path>`.
    func projectDir(_ c: ConfigJSON) -> String {
        let builds = c.buildsDir ?? ""
        return c.buildsDirIsShared == true ? "\(builds)/\(job.runnerShortToken)/\(job.concurrentProjectID)/\(job.projectPath)" : "\(builds)/\(job.projectPath)"
    }

    // MARK: stages

    struct Outcome { var ok: Bool; var canceled: Bool; var jobCode: Int?; var reason: String? }

    private func record(_ o: Outcome) {
        result.failureReason = o.reason
        result.jobExitCode = o.jobCode
    }

    private func runStage(_ stage: String, body: [String], env: [String: String], tmp: String,
                          cancelAfter: Double?, deadline: Date?) -> Outcome {
        let dir = "\(tmp)/script\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        let path = "\(dir)/script"
        FileManager.default.createFile(atPath: path, contents: Data(BashScript.script(body: body).utf8), attributes: [.posixPermissions: 0o700])
        // The runner never deletes BUILD_EXIT_CODE_FILE between stages: what one stage wrote, the
        // next failing stage reads unless it writes its own.
        let codeFile = "\(tmp)/build_exit_code"
        var killAfter: Double? = cancelAfter
        var timedOut = false
        if let deadline {
            let left = deadline.timeIntervalSinceNow
            if killAfter == nil || left < killAfter! { killAfter = max(0, left); timedOut = cancelAfter == nil || left < cancelAfter! }
        }
        let r = exec(driver.runExec + [path, stage], label: stage, env: env, cwd: tmp, captureTo: .jobLog, signalAfter: killAfter)
        result.stages.append(.init(stage: stage, exitCode: r.code, scriptPath: path))
        if r.signaled {
            let reason = timedOut ? "job_execution_timeout" : "canceled"
            if timedOut { log("ERROR: Job failed: execution took longer than \(job.timeout) seconds") }
            return Outcome(ok: false, canceled: !timedOut, jobCode: nil, reason: reason)
        }
        if r.code == 0 { return Outcome(ok: true, canceled: false, jobCode: nil, reason: nil) }
        if r.code == buildFailure {
            let text = (try? String(contentsOfFile: codeFile, encoding: .utf8)) ?? ""
            if let n = Int(text.split(separator: "\n").first?.trimmingCharacters(in: .whitespaces) ?? "") {
                return Outcome(ok: false, canceled: false, jobCode: n, reason: "script_failure")
            }
            return Outcome(ok: false, canceled: false, jobCode: 1, reason: "script_failure")
        }
        if r.code == systemFailure { return Outcome(ok: false, canceled: false, jobCode: nil, reason: "system_failure") }
        log("ERROR: unknown Custom executor executable exit code \(r.code)")
        return Outcome(ok: false, canceled: false, jobCode: nil, reason: "unknown_failure")
    }

    private func runCleanup(env: [String: String], tmp: String) {
        guard let c = driver.cleanupExec else { return }
        result.cleanupRuns += 1
        // Its own timeout on context.Background(): neither a cancel nor the job timeout stops it.
        _ = exec(c, label: "cleanup", env: env, cwd: tmp, captureTo: .runnerLog, signalAfter: options.cleanupExecTimeout)
    }

    // MARK: processes

    /// Where a driver's output goes; `.configJSON`: stdout is read as JSON, stderr goes to the job log
    /// (custom-executor.md: config_exec's stderr reaches the job log).
    enum Capture { case jobLog, runnerLog, configJSON }

    private func exec(_ argv: [String], label: String, env: [String: String], cwd: String, captureTo: Capture,
                      signalAfter: Double? = nil) -> (code: Int32, out: Data, signaled: Bool) {
        let started = DispatchTime.now().uptimeNanoseconds
        defer {
            let ms = Double(DispatchTime.now().uptimeNanoseconds - started) / 1_000_000
            result.timings.append(.init(exec: label, milliseconds: ms))
        }
        let child: ChildProcess
        do {
            child = try ChildProcess(argv: argv, environment: env, directory: cwd)
        } catch {
            log("ERROR: \(error)")
            return (systemFailure, Data(), false)
        }
        let state = SignalState()
        child.startReaper {}
        if let after = signalAfter {
            let pgid = child.pid
            let graceful = options.gracefulKillTimeout
            Thread.detachNewThread {
                if state.waitDone(timeout: after) { return }
                state.markSignaled()
                kill(-pgid, SIGTERM)
                if state.waitDone(timeout: graceful) { return }
                kill(-pgid, SIGKILL)
            }
        }
        var out = Data()
        let masks = captureTo == .runnerLog || !options.runnerMasking ? MaskPatterns(exact: []) : runnerMasks
        let table = MaskTable(masks.patterns)
        child.pump(stdout: StreamMasker(table), stderr: StreamMasker(table), sink: { fd, bytes in
            if captureTo != .configJSON || fd == 1 { out.append(contentsOf: bytes) }
            let text = String(decoding: bytes, as: UTF8.self)
            switch captureTo {
            case .jobLog:
                result.log += text
                if options.echo { ChildProcess.writeAll(1, bytes) }
            case .runnerLog:
                let level = fd == 1 ? "DEBUG" : "WARN"
                let lines = text.split(separator: "\n").map { "[runner \(level)] \($0)\n" }.joined()
                result.runnerLog += lines
                if options.echo { ChildProcess.writeAll(2, Array(lines.utf8)) }
            case .configJSON:
                if fd == 2 { result.log += text }
            }
        })
        let code = child.wait()
        state.markDone()
        return (code, out, state.signaled)
    }

    // MARK: environment and payload

    private var buildFailure: Int32 { 1 }
    private var systemFailure: Int32 { 2 }

    private func makeTempDir() -> String {
        let root = options.tempRoot.hasSuffix("/") ? String(options.tempRoot.dropLast()) : options.tempRoot
        var template = Array("\(root)/custom-executorXXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    private func baseEnvironment(tmp: String) -> [String: String] {
        var env = options.environment
        env["TMPDIR"] = tmp
        env["BUILD_FAILURE_EXIT_CODE"] = "\(buildFailure)"
        env["SYSTEM_FAILURE_EXIT_CODE"] = "\(systemFailure)"
        env["BUILD_EXIT_CODE_FILE"] = "\(tmp)/build_exit_code"
        env["JOB_RESPONSE_FILE"] = "\(tmp)/response.json"
        env = addJobVariables(env, config: nil)
        return env
    }

    /// Every job variable as the runner has it: predefined, the job's own, masked, file and ID tokens.
    func jobVariables(config: ConfigJSON?) -> [(key: String, value: String, masked: Bool, file: Bool)] {
        var v: [(String, String, Bool, Bool)] = []
        let ns = job.projectPath.split(separator: "/").dropLast().joined(separator: "/")
        let pre: [String: String] = [
            "CI": "true", "GITLAB_CI": "true", "CI_JOB_ID": "\(job.jobID)", "CI_JOB_NAME": job.name,
            "CI_JOB_STAGE": "test", "CI_PIPELINE_ID": "\(job.pipelineID)", "CI_PROJECT_ID": "\(job.projectID)",
            "CI_PROJECT_PATH": job.projectPath, "CI_PROJECT_NAMESPACE": ns,
            "CI_PROJECT_NAME": String(job.projectPath.split(separator: "/").last ?? ""),
            "CI_COMMIT_REF_NAME": job.ref, "CI_COMMIT_SHA": job.sha, "CI_RUNNER_SHORT_TOKEN": job.runnerShortToken,
            "CI_CONCURRENT_PROJECT_ID": "\(job.concurrentProjectID)", "CI_CONCURRENT_ID": "\(job.concurrentProjectID)",
            "CI_JOB_TIMEOUT": "\(job.timeout)", "CI_SERVER_URL": "https://gitlab.example.com",
            "CI_JOB_IMAGE": job.image, "CI_RUNNER_VERSION": "19.4.0",
        ]
        for (k, val) in pre.sorted(by: { $0.key < $1.key }) { v.append((k, val, false, false)) }
        if let config, let b = config.buildsDir {
            v.append(("CI_BUILDS_DIR", b, false, false))
            v.append(("CI_PROJECT_DIR", projectDir(config), false, false))
        }
        v.append(("CI_JOB_TOKEN", jobToken, true, false))
        for (k, val) in job.variables.sorted(by: { $0.key < $1.key }) { v.append((k, val, false, false)) }
        for (k, val) in job.maskedVariables.sorted(by: { $0.key < $1.key }) { v.append((k, val, true, false)) }
        for (k, val) in job.fileVariables.sorted(by: { $0.key < $1.key }) { v.append((k, val, false, true)) }
        for (k, val) in job.idTokens.sorted(by: { $0.key < $1.key }) { v.append((k, val, true, false)) }
        return v
    }

    /// `CUSTOM_ENV_<KEY>` for every variable in the runner's order (the job's own after the
    /// predefined ones), then CI_JOB_SERVICES (custom.go getCIJobServicesEnv). Go's exec keeps the last
    /// of duplicate keys: a job variable named like a predefined one wins, as it does here.
    private func addJobVariables(_ base: [String: String], config: ConfigJSON?) -> [String: String] {
        var env = base
        for v in jobVariables(config: config) { env["CUSTOM_ENV_\(v.key)"] = v.value }
        let services = job.services.map { ["name": $0, "alias": "", "entrypoint": NSNull(), "command": NSNull()] as [String: Any] }
        env["CUSTOM_ENV_CI_JOB_SERVICES"] = services.isEmpty ? "" : String(decoding: (try? JSONSerialization.data(withJSONObject: services, options: [.sortedKeys])) ?? Data(), as: UTF8.self)
        return env
    }

    private func writeResponse(tmp: String, env: [String: String]) {
        let vars: [[String: Any]] = jobVariables(config: nil).map {
            ["key": $0.key, "value": $0.value, "public": !$0.masked, "file": $0.file, "masked": $0.masked, "raw": false]
        }
        // spec.Job as gitlab-runner marshals it (common/spec/spec.go): the trusted job identity.
        var git: [String: Any] = ["ref": job.ref, "sha": job.sha, "ref_type": "branch",
                                  "repo_url": "https://gitlab-ci-token:\(jobToken)@gitlab.example.com/\(job.projectPath).git"]
        if let p = job.refProtected { git["protected"] = p }
        let payload: [String: Any] = ["id": job.jobID, "token": jobToken, "variables": vars,
                                      "job_info": ["name": job.name, "stage": "test", "project_id": job.projectID,
                                                   "project_name": String(job.projectPath.split(separator: "/").last ?? "")],
                                      "runner_info": ["timeout": job.timeout], "git_info": git]
        let data = (try? JSONSerialization.data(withJSONObject: payload, options: [.sortedKeys])) ?? Data()
        FileManager.default.createFile(atPath: "\(tmp)/response.json", contents: data, attributes: [.posixPermissions: 0o600])
    }

    /// `export` lines for every variable, as the runner puts in every stage script.
    private func variableBody(_ projectDir: String) -> [String] {
        var lines: [String] = []
        let tmpDir = projectDir + ".tmp"
        for v in jobVariables(config: currentConfig) {
            if v.file {
                lines.append("mkdir -p \(BashScript.escape(tmpDir))")
                lines.append("printf '%s' \(BashScript.escape(v.value)) > \(BashScript.escape(tmpDir + "/" + v.key))")
                lines.append(BashScript.export(v.key, tmpDir + "/" + v.key))
            } else {
                lines.append(BashScript.export(v.key, v.value))
            }
        }
        return lines
    }

    private func getSourcesBody(_ projectDir: String) -> [String] {
        ["echo \"Fetching changes...\"", "mkdir -p \(BashScript.escape(projectDir))", "cd \(BashScript.escape(projectDir))",
         "echo 'simulated checkout of \(job.sha)' > .simulated-checkout", "echo \"Checking out \(job.sha.prefix(8)) as detached HEAD (ref is \(job.ref))...\""]
    }

    private func userBody(_ lines: [String], _ projectDir: String) -> [String] {
        ["cd \(BashScript.escape(projectDir))"] + lines.flatMap { [BashScript.echoCommand($0), $0] }
    }

    enum ConfigResult { case ok(ConfigJSON), failed(Int32, String), timedOut }

    private func runConfig(env: [String: String], deadline: Date) -> ConfigResult {
        guard let c = driver.configExec else { return .ok(ConfigJSON()) }
        let limit = min(options.configExecTimeout, max(0, deadline.timeIntervalSinceNow))
        let r = exec(c, label: "config", env: env, cwd: env["TMPDIR"] ?? "/tmp", captureTo: .configJSON, signalAfter: limit)
        if r.signaled { return deadline.timeIntervalSinceNow <= 0 ? .timedOut : .failed(systemFailure, "config_exec timed out") }
        guard r.code == 0 else { return .failed(r.code, "config_exec exited with \(r.code)") }
        if r.out.isEmpty { return .ok(ConfigJSON()) }
        do {
            return .ok(try JSONDecoder().decode(ConfigJSON.self, from: r.out))
        } catch {
            return .failed(systemFailure, "config_exec printed invalid JSON")
        }
    }

    private func retryWait() { Thread.sleep(forTimeInterval: options.retryDelay) }

    private func log(_ line: String) {
        result.log += line + "\n"
        if options.echo { ChildProcess.writeAll(1, Array((line + "\n").utf8)) }
    }

    private func finish() -> SimulationResult { result }
}

/// config_exec's JSON as the runner reads it.
struct ConfigJSON: Decodable {
    struct Driver: Decodable { var name: String?; var version: String? }
    var buildsDir: String?
    var cacheDir: String?
    var driver: Driver?
    var jobEnv: [String: String]?
    var buildsDirIsShared: Bool?
    var hostname: String?
    var shell: String?
    enum CodingKeys: String, CodingKey {
        case buildsDir = "builds_dir", cacheDir = "cache_dir", driver, jobEnv = "job_env"
        case buildsDirIsShared = "builds_dir_is_shared", hostname, shell
    }
    init(buildsDir: String? = nil) { self.buildsDir = buildsDir }
}

/// Shared between a stage and its kill timer.
final class SignalState: @unchecked Sendable {
    private let cond = NSCondition()
    private var done = false
    private(set) var signaled = false
    func markDone() { cond.lock(); done = true; cond.broadcast(); cond.unlock() }
    func markSignaled() { cond.lock(); signaled = true; cond.unlock() }
    func waitDone(timeout: Double) -> Bool {
        cond.lock(); defer { cond.unlock() }
        let until = Date().addingTimeInterval(timeout)
        while !done { if !cond.wait(until: until) { return done } }
        return true
    }
}
