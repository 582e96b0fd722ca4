import CSupport
import Delivery
import Foundation

/// A private world for one end-to-end test: directory tree, config, and the built executables.
/// Rooted under /var/tmp rather than /tmp so that the sandbox's hiding is exercised explicitly
/// (everything under the host's /tmp is hidden by the sandbox's private /tmp anyway).
public final class TestWorld: @unchecked Sendable {
    public let root: String
    public let configPath: String
    public let auditLog: String
    public let stateDir: String
    public let runnerTemp: String
    public let binDir: String
    /// This world's `[runner] secrets_root` (its own, so that no two worlds share secret files).
    public let secretsRoot: String
    /// This world's job uids: distinct per world, so that worlds running in parallel never hand the
    /// same uid to two running jobs.
    public let jobUIDs: ClosedRange<UInt32>

    /// Creates the tree and writes a config; `extra` is appended to it (more TOML sections).
    public init(isolation: String = "bubblewrap", runnerExtra: String = "", extra: String = "") throws {
        root = "/var/tmp/airlock-test-\(UUID().uuidString.prefix(8))"
        // In a directory named like Airlock's own (/etc/airlock), which the sandbox hides whole.
        configPath = "\(root)/etc/airlock/airlock.toml"
        auditLog = "\(root)/log/audit.jsonl"
        stateDir = "\(root)/state"
        runnerTemp = "\(root)/runner-tmp"
        binDir = TestWorld.executablesDirectory()
        secretsRoot = FileManager.default.fileExists(atPath: "/dev/shm")
            ? "/dev/shm/airlock-test-\(root.suffix(8))" : "\(root)/secrets"
        let base = 2_100_000_000 + UInt32.random(in: 0..<1_000_000) * 32
        jobUIDs = base...(base + 31)
        for d in ["etc/airlock", "log", "runner-tmp"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(d)", withIntermediateDirectories: true)
        }
        try writeConfig(isolation: isolation, runnerExtra: runnerExtra, extra: extra)
    }

    /// The PATH test jobs get: the SDKs and the aws CLI from a world-readable venv (scripts/install-deps
    /// makes it), because a job's uid cannot run an interpreter under /root.
    public static let jobPath = "/opt/airlock-venv/bin:/usr/local/bin:/usr/bin:/bin"

    /// Rewrites the config.
    public func writeConfig(isolation: String = "bubblewrap", runnerExtra: String = "", extra: String = "") throws {
        let text = """
        [runner]
        builds_root = "\(root)/builds"
        cache_root = "\(root)/cache"
        state_dir = "\(stateDir)"
        audit_log = "\(auditLog)"
        \(runnerExtra.contains("secrets_root") ? "" : "secrets_root = \"\(secretsRoot)\"")
        isolation = "\(isolation)"
        graceful_kill = "3s"
        \(runnerExtra)
        \(runnerExtra.contains("job_uids") ? "" : "job_uids = \"\(jobUIDs.lowerBound)-\(jobUIDs.upperBound)\"")
        \(runnerExtra.contains("job_path") ? "" : "job_path = \"\(TestWorld.jobPath)\"")

        \(extra)
        """
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
        chmod(configPath, 0o600)
    }

    /// Where `swift build` put the executables: beside the test bundle.
    public static func executablesDirectory() -> String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = (exe as NSString).deletingLastPathComponent
        while !dir.isEmpty && dir != "/" && !FileManager.default.isExecutableFile(atPath: "\(dir)/airlock-run") {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir
    }

    /// Runs a job through Airlock's executables as the runner would.
    /// The audit log's records, parsed.
    public func auditRecords() -> [[String: Any]] {
        ((try? String(contentsOfFile: auditLog, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    /// The audit log as text (to assert what it does not contain).
    public var auditText: String { (try? String(contentsOfFile: auditLog, encoding: .utf8)) ?? "" }

    public func simulate(_ job: SimulatedJob, driver: DriverSpec? = nil, configure: (inout SimulatorOptions) -> Void = { _ in }) -> SimulationResult {
        var o = SimulatorOptions()
        o.retryDelay = 0.1
        o.gracefulKillTimeout = 10
        o.tempRoot = runnerTemp
        configure(&o)
        return RunnerSimulator(job: job, driver: driver ?? .airlock(binDir: binDir, config: configPath), options: o).run()
    }

    /// Runs one executable directly with an environment, returning its exit code and output.
    public func execute(_ name: String, args: [String] = [], environment: [String: String]) -> (code: Int32, stdout: String, stderr: String) {
        Self.launch("\(binDir)/\(name)", ["--config", configPath] + args, environment: environment)
    }

    /// The environment a runner gives an executable for one job: this process's environment, a
    /// runner temp dir with the job's payload (`JOB_RESPONSE_FILE`), and `CUSTOM_ENV_` variables.
    public func runnerEnvironment(jobID: Int, projectID: Int = 42, timeout: Int = 3600,
                                  variables: [String: String] = [:]) throws -> [String: String] {
        let tmp = "\(runnerTemp)/custom-executor-\(jobID)"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let payload = #"{"id": \#(jobID), "job_info": {"project_id": \#(projectID), "name": "build"}, "runner_info": {"timeout": \#(timeout)}, "variables": []}"#
        FileManager.default.createFile(atPath: "\(tmp)/response.json", contents: Data(payload.utf8), attributes: [.posixPermissions: 0o600])
        var env = ProcessInfo.processInfo.environment
        env["TMPDIR"] = tmp
        env["JOB_RESPONSE_FILE"] = "\(tmp)/response.json"
        env["CUSTOM_ENV_CI_JOB_ID"] = "\(jobID)"
        env["CUSTOM_ENV_CI_PROJECT_ID"] = "\(projectID)"
        for (k, v) in variables { env["CUSTOM_ENV_\(k)"] = v }
        return env
    }

    /// The host directory that held a project's builds dir (`<builds_root>/project-<id>/<class>/<uid>`):
    /// the job saw it at `builds_root`. The most recently modified one when several exist.
    public func hostBuildsDir(projectID: Int = 42) -> String? {
        let fm = FileManager.default
        let top = "\(root)/builds/project-\(projectID)"
        var found: [(String, Date)] = []
        for cls in (try? fm.contentsOfDirectory(atPath: top)) ?? [] {
            for uid in (try? fm.contentsOfDirectory(atPath: "\(top)/\(cls)")) ?? [] {
                let d = "\(top)/\(cls)/\(uid)"
                found.append((d, (try? fm.attributesOfItem(atPath: d))?[.modificationDate] as? Date ?? .distantPast))
            }
        }
        return found.max { $0.1 < $1.1 }?.0
    }

    /// A path a test creates to tell its jobs to go on (`signal`), which they wait for with `waitFor`:
    /// an event instead of a sleep. The directory is readable by job uids; the file does not exist yet.
    public func signalPath(_ name: String) -> String {
        let dir = "\(root)/signals"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        return "\(dir)/\(name)-\(UUID().uuidString.prefix(8))"
    }

    public func signal(_ path: String) {
        FileManager.default.createFile(atPath: path, contents: Data(), attributes: [.posixPermissions: 0o644])
    }

    /// A job script line that waits (up to `limit` seconds) for a `signal`, and prints how it ended.
    public static func waitFor(_ path: String, limit: Int = 120) -> String {
        "for i in $(seq 1 \(limit * 10)); do [ -e \(path) ] && break; sleep 0.1; done; [ -e \(path) ] && echo \"signal=recei\"\"ved\" || echo \"signal=timed-out\""
    }

    /// `text` fit for a failure message: every run of 16 or more token-like characters is replaced by
    /// its length, so that a failing masking test never prints the secret it caught.
    public static func redacted(_ text: String) -> String {
        text.replacing(/[A-Za-z0-9+\/=_.~%-]{16,}/) { "‹\($0.output.count) chars›" }
    }

    /// Kills what is left of processes whose command line holds `marker` (a failed test's survivors).
    public static func killAll(containing marker: String) {
        for pid in processes(containing: marker) { kill(pid, SIGKILL) }
    }

    /// Runs the `airlock` admin CLI.
    public func run(_ args: [String]) -> (code: Int32, stdout: String, stderr: String) {
        Self.launch("\(binDir)/airlock", args, environment: nil)
    }

    /// Runs `path` to its end and returns its exit code and output. Uses Delivery's ChildProcess
    /// (posix_spawn, own reaper thread) rather than Foundation's Process, whose waitUntilExit was
    /// seen to hang for good in an async test after the child had exited (the zombie never reaped).
    public static func launch(_ path: String, _ args: [String], environment: [String: String]?) -> (code: Int32, stdout: String, stderr: String) {
        let child: ChildProcess
        do {
            child = try ChildProcess(argv: [path] + args, environment: environment ?? ProcessInfo.processInfo.environment, directory: nil)
        } catch {
            return (127, "", "\(error)")
        }
        child.startReaper {}
        let err = ChildProcess.Drain(child.stderrFD)
        let out = ChildProcess.readAll(child.stdoutFD)
        let code = child.wait()
        return (code, String(decoding: out, as: UTF8.self), String(decoding: err.finish(), as: UTF8.self))
    }

    /// Pids of live processes whose command line contains `marker`.
    public static func processes(containing marker: String) -> [Int32] {
        let me = getpid()
        return ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { e -> Int32? in
            guard let pid = Int32(e), pid != me, let d = FileManager.default.contents(atPath: "/proc/\(e)/cmdline") else { return nil }
            let cmd = String(decoding: d.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            return cmd.contains(marker) ? pid : nil
        }
    }

    deinit {
        try? FileManager.default.removeItem(atPath: root)
        try? FileManager.default.removeItem(atPath: secretsRoot)
        TestWorld.removeNetworkRules(marker: "airlock uids \(jobUIDs.lowerBound)-\(jobUIDs.upperBound)")
    }

    /// Makes this test process join a new session keyring holding nothing, as gitlab-runner under
    /// systemd has one of its own, and returns its id (or nil when the kernel refuses).
    public static func joinSessionKeyring() -> Int? {
        let id = airlock_join_new_session_keyring()
        return id > 0 ? id : nil
    }

    /// Deletes the nftables rules prepare installed for one uid range (tests leave the host as they found it).
    public static func removeNetworkRules(marker: String) {
        let list = launch("/usr/sbin/nft", ["-a", "list", "chain", "inet", "airlock", "output"], environment: nil)
        guard list.code == 0 else { return }
        for line in list.stdout.split(separator: "\n") where line.contains("comment \"\(marker):") {
            guard let h = line.components(separatedBy: "# handle ").last?.trimmingCharacters(in: .whitespaces), Int(h) != nil else { continue }
            _ = launch("/usr/sbin/nft", ["delete", "rule", "inet", "airlock", "output", "handle", h], environment: nil)
        }
        // And the `ranges` element that tells prepare the rules are in ("airlock uids A-B" → "A . B").
        let range = marker.replacingOccurrences(of: "airlock uids ", with: "").split(separator: "-")
        if range.count == 2 {
            _ = launch("/usr/sbin/nft", ["delete", "element", "inet", "airlock", "ranges", "{ \(range[0]) . \(range[1]) }"], environment: nil)
        }
        // And endpoint elements of this range's uids that a test left (a server stopped another way
        // than by cleanup or sweep).
        if range.count == 2, let lo = UInt32(range[0]), let hi = UInt32(range[1]) {
            let owners = launch("/usr/sbin/nft", ["list", "set", "inet", "airlock", "endpoint_owner"], environment: nil).stdout
            for m in owners.matches(of: /(\d+) \. (\d+)/) {
                guard let port = Int(m.1), let uid = UInt32(m.2), uid >= lo && uid <= hi else { continue }
                _ = launch("/usr/sbin/nft", ["delete", "element", "inet", "airlock", "endpoint_owner", "{ \(port) . \(uid) }"], environment: nil)
                _ = launch("/usr/sbin/nft", ["delete", "element", "inet", "airlock", "endpoint_ports", "{ \(port) }"], environment: nil)
            }
        }
    }
}
