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

    /// Creates the tree and writes a config; `extra` is appended to it (more TOML sections).
    public init(isolation: String = "bubblewrap", runnerExtra: String = "", extra: String = "") throws {
        root = "/var/tmp/airlock-test-\(UUID().uuidString.prefix(8))"
        configPath = "\(root)/etc/airlock.toml"
        auditLog = "\(root)/log/audit.jsonl"
        stateDir = "\(root)/state"
        runnerTemp = "\(root)/runner-tmp"
        binDir = TestWorld.executablesDirectory()
        for d in ["etc", "log", "runner-tmp"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(d)", withIntermediateDirectories: true)
        }
        try writeConfig(isolation: isolation, runnerExtra: runnerExtra, extra: extra)
    }

    /// Rewrites the config.
    public func writeConfig(isolation: String = "bubblewrap", runnerExtra: String = "", extra: String = "") throws {
        let text = """
        [runner]
        builds_root = "\(root)/builds"
        cache_root = "\(root)/cache"
        state_dir = "\(stateDir)"
        audit_log = "\(auditLog)"
        isolation = "\(isolation)"
        graceful_kill = "3s"
        \(runnerExtra)

        \(extra)
        """
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
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

    public func simulate(_ job: SimulatedJob, configure: (inout SimulatorOptions) -> Void = { _ in }) -> SimulationResult {
        var o = SimulatorOptions()
        o.retryDelay = 0.1
        o.gracefulKillTimeout = 10
        o.tempRoot = runnerTemp
        configure(&o)
        return RunnerSimulator(job: job, driver: .airlock(binDir: binDir, config: configPath), options: o).run()
    }

    /// Runs one executable directly with an environment, returning its exit code and output.
    public func execute(_ name: String, args: [String] = [], environment: [String: String]) -> (code: Int32, stdout: String, stderr: String) {
        Self.launch("\(binDir)/\(name)", ["--config", configPath] + args, environment: environment)
    }

    /// Runs the `airlock` admin CLI.
    public func run(_ args: [String]) -> (code: Int32, stdout: String, stderr: String) {
        Self.launch("\(binDir)/airlock", args, environment: nil)
    }

    static func launch(_ path: String, _ args: [String], environment: [String: String]?) -> (code: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        if let environment { p.environment = environment }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        do { try p.run() } catch { return (127, "", "\(error)") }
        let errData = ErrReader(err.fileHandleForReading)
        let o = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: errData.finish(), as: UTF8.self))
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
    }
}

/// Drains a pipe on its own thread, so that a child filling stderr cannot block on it while the
/// reader waits on stdout.
final class ErrReader: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)
    init(_ h: FileHandle) {
        Thread.detachNewThread { [self] in
            data = h.readDataToEndOfFile()
            done.signal()
        }
    }
    func finish() -> Data {
        done.wait()
        return data
    }
}
