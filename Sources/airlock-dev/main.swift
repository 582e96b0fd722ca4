import AirlockConfiguration
import AirlockCore
import AirlockTesting
import ArgumentParser
import Delivery
import Foundation
import HTTPClient

/// `airlock-dev`: the runner simulator, the demo and the benchmarks. It links the test peers
/// (AirlockTesting) and is never installed: `scripts/package` ships `airlock` and the stage executables.
@main
struct AirlockDev: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "airlock-dev",
        abstract: "Airlock's development tool: the runner simulator, the demo and the benchmarks (not installed).",
        version: airlockVersion,
        subcommands: [Simulate.self, Demo.self, BenchConcurrent.self, BenchEndpoint.self])
}

/// Writes to stdout unbuffered, so that it interleaves correctly with the job log the simulator streams.
func say(_ text: String, terminator: String = "\n") {
    FileHandle.standardOutput.write(Data((text + terminator).utf8))
}

/// The directory the four executables are in: beside this binary.
func binDirectory() -> String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return (exe as NSString).deletingLastPathComponent
}

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a job file through the executor exactly as GitLab Runner 19.x drives it, and print the job log.")

    @Argument(help: "The job file (JSON: script, after_script, variables, id_tokens, timeout, project_id, ...).")
    var jobFile: String

    @Option(help: "The Airlock configuration passed to every executable.")
    var config: String = AirlockConfig.defaultPath

    @Option(help: "Directory of airlock-config/prepare/run/cleanup (default: beside this binary).")
    var binDir: String?

    @Option(help: "Instead of Airlock, drive this run_exec alone (a baseline driver, e.g. for benchmarks).")
    var bareRunExec: String?

    @Option(help: "Cancel the job this many seconds into build_script (SIGTERM to the process group).")
    var cancelAfter: Double?

    @Option(help: "graceful_kill_timeout in seconds.")
    var gracefulKillTimeout: Double = 600

    @Option(help: "Seconds between prepare retries (the runner waits 3).")
    var retryDelay: Double = 3

    @Option(help: "Write a JSON summary (status, exit codes, stages, runner log) here.")
    var summary: String?

    @Flag(help: "Do not print the job log.")
    var quiet = false

    func run() throws {
        let job = try SimulatedJob.load(jobFile)
        let driver = bareRunExec.map { DriverSpec(configExec: nil, prepareExec: nil, runExec: [$0], cleanupExec: nil) }
            ?? DriverSpec.airlock(binDir: binDir ?? binDirectory(), config: config)
        var options = SimulatorOptions()
        options.cancelAfter = cancelAfter
        options.gracefulKillTimeout = gracefulKillTimeout
        options.retryDelay = retryDelay
        options.echo = !quiet
        let result = RunnerSimulator(job: job, driver: driver, options: options).run()
        if let summary {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try enc.encode(result).write(to: URL(fileURLWithPath: summary))
        }
        if result.status != "success" { throw ExitCode(1) }
    }
}

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a real job through all four executables on an embedded default configuration, and print its log.")

    @Option(help: "Working directory for the demo (builds, state, audit log).")
    var workdir: String?

    @Option(help: "Isolation: bubblewrap or none.")
    var isolation: String = "bubblewrap"

    func run() async throws {
        let dir = workdir ?? NSTemporaryDirectory() + "airlock-demo-\(getpid())"
        let demo = try await DemoEnvironment.start(directory: dir, isolation: isolation)
        defer { demo.stop() }
        say("== Airlock demo in \(dir): a local GitLab issuer and moto (as AWS STS) on loopback, bubblewrap sandbox")
        say("== config: \(demo.configPath)")
        say("== job log (the runner simulator masks only the job's own masked variables; Airlock masks what it issued):\n")
        var options = SimulatorOptions()
        options.echo = true
        options.runnerMasking = false  // show Airlock's own scrubbing and masking, not the runner's
        let result = RunnerSimulator(job: demo.job, driver: .airlock(binDir: binDirectory(), config: demo.configPath), options: options).run()
        say("\n== runner log (cleanup output, not masked by the runner):")
        say(result.runnerLog, terminator: "")
        say("\n== audit log \(demo.auditLog):")
        say((try? String(contentsOfFile: demo.auditLog, encoding: .utf8)) ?? "(empty)", terminator: "")
        if result.status != "success" { throw ExitCode(1) }
    }
}

struct BenchConcurrent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-concurrent",
        abstract: "Benchmark: N jobs at once through Airlock against an STS (moto), with a local issuer.")

    @Option var jobs: Int = 20
    @Option var sts: String
    @Option var binDir: String?
    @Option var workdir: String

    func run() async throws {
        let issuer = try TestIssuer()
        defer { issuer.server.stop() }
        try FileManager.default.createDirectory(atPath: workdir, withIntermediateDirectories: true)
        let (config, audit) = try benchConfig(workdir: workdir, issuer: issuer, sts: sts)
        let driver = DriverSpec.airlock(binDir: binDir ?? binDirectory(), config: config)
        let results = ResultBox()
        let started = Date()
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<jobs {
                var job = SimulatedJob(script: ["aws sts get-caller-identity --query Arn --output text"])
                job.jobID = 900_000 + i
                job.concurrentProjectID = i
                job.variables = ["AWS_ENDPOINT_URL_STS": sts]
                job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: "https://airlock.bench"))]
                group.addTask {
                    var o = SimulatorOptions()
                    o.tempRoot = workdir
                    let r = RunnerSimulator(job: job, driver: driver, options: o).run()
                    results.add(r.status)
                }
            }
        }
        let wall = Date().timeIntervalSince(started)
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_CHILDREN.rawValue), &usage)
        let records = (try? String(contentsOfFile: audit, encoding: .utf8))?.split(separator: "\n") ?? []
        let issued = records.filter { $0.contains("\"event\":\"issued\"") }.count
        let settled = records.filter { $0.contains("\"event\":\"revoked\"") }.count
        let ok = results.statuses.filter { $0 == "success" }.count
        say("concurrent: \(jobs) jobs at once: \(ok) succeeded, \(issued) credentials issued, \(settled) settled at cleanup, wall \(String(format: "%.1f", wall)) s")
        say("  peak RSS of any Airlock executable or job process: \(usage.ru_maxrss / 1024) MiB")
        if ok != jobs || issued != jobs || settled != jobs { throw ExitCode(1) }
    }
}

struct BenchEndpoint: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-endpoint",
        abstract: "Benchmark: credential-endpoint latency from boto3 (N fetches) against a minimal Python server with the same answer, and the server's peak memory.")

    @Option var requests: Int = 1000
    @Option var sts: String
    @Option var binDir: String?
    @Option var workdir: String

    func run() throws {
        let issuer = try TestIssuer()
        defer { issuer.server.stop() }
        try FileManager.default.createDirectory(atPath: workdir, withIntermediateDirectories: true)
        let (config, audit) = try benchConfig(workdir: workdir, issuer: issuer, sts: sts,
                                              runnerExtra: "endpoint_requests_per_second = 100000", deliver: "endpoint")
        // botocore's own ContainerProvider, N fetches from Airlock's server, then N from a minimal
        // http.server thread answering the same JSON (the baseline), side by side in the same job.
        let py = """
        import os, time, json, threading, http.server, statistics
        from botocore.credentials import ContainerProvider
        N = \(requests)
        def run():
            out = []
            for _ in range(N):
                t = time.perf_counter(); ContainerProvider().load().get_frozen_credentials(); out.append((time.perf_counter() - t) * 1000)
            out.sort(); return out[len(out) // 2], out[int(len(out) * 0.99) - 1]
        airlock = run()
        body = json.dumps({'AccessKeyId': 'ASIABASELINE', 'SecretAccessKey': 'x' * 40, 'Token': 't' * 300, 'Expiration': '2099-01-01T00:00:00Z'}).encode()
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            def do_GET(self):
                self.send_response(200); self.send_header('Content-Type', 'application/json'); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
            def log_message(self, *a): pass
        srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        os.environ['AWS_CONTAINER_CREDENTIALS_FULL_URI'] = 'http://127.0.0.1:%d/creds' % srv.server_address[1]
        base = run()
        print('endpoint: %d fetches from boto3: airlock p50 %.2f ms p99 %.2f ms | minimal python server p50 %.2f ms p99 %.2f ms | ratio p50 %.2f p99 %.2f' % (N, airlock[0], airlock[1], base[0], base[1], airlock[0] / base[0], airlock[1] / base[1]))
        """
        var job = SimulatedJob(script: ["cat > /tmp/bench.py <<'PY'\n\(py)\nPY", "python3 /tmp/bench.py"])
        job.jobID = 990_001
        job.variables = ["AWS_ENDPOINT_URL_STS": sts]
        job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: "https://airlock.bench"))]
        var o = SimulatorOptions()
        o.tempRoot = workdir
        let r = RunnerSimulator(job: job, driver: DriverSpec.airlock(binDir: binDir ?? binDirectory(), config: config), options: o).run()
        guard r.status == "success", let line = r.log.split(separator: "\n").first(where: { $0.hasPrefix("endpoint: ") }) else {
            say(r.log)
            throw ExitCode(1)
        }
        say(String(line))
        let stopped = ((try? String(contentsOfFile: audit, encoding: .utf8)) ?? "").split(separator: "\n").last { $0.contains("\"event\":\"endpoint_stopped\"") }
        let rec = stopped.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] } ?? [:]
        say("  server: \(rec["requests"] as? String ?? "?") requests served, peak RSS \((Int(rec["peak_rss_kib"] as? String ?? "0") ?? 0) / 1024) MiB")
    }
}

/// The benchmarks' configuration: a local issuer, one AWS profile against `sts`, granted to project 42.
/// Returns the config and audit log paths.
func benchConfig(workdir: String, issuer: TestIssuer, sts: String, runnerExtra: String = "", deliver: String = "env") throws -> (String, String) {
    let config = "\(workdir)/airlock.toml"
    let audit = "\(workdir)/audit.jsonl"
    try """
    [runner]
    builds_root = "\(workdir)/builds"
    cache_root = "\(workdir)/cache"
    state_dir = "\(workdir)/state"
    audit_log = "\(audit)"
    \(runnerExtra)
    job_path = "/opt/airlock-venv/bin:/usr/local/bin:/usr/bin:/bin"
    [gitlab]
    issuer = "\(issuer.issuer)"
    audience = "https://airlock.bench"
    [providers.aws]
    type = "aws"
    sts_endpoint = "\(sts)"
    [profiles.p]
    provider = "aws"
    role_arn = "arn:aws:iam::123456789012:role/gitlab-{project_id}"
    deliver = "\(deliver)"
    [[rules]]
    name = "all of project 42"
    project_id = 42
    grant = ["p"]
    """.write(toFile: config, atomically: true, encoding: .utf8)
    return (config, audit)
}

final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var s: [String] = []
    func add(_ x: String) { lock.withLock { s.append(x) } }
    var statuses: [String] { lock.withLock { s } }
}
