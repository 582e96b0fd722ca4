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
        subcommands: [Simulate.self, Demo.self, BenchConcurrent.self, BenchEndpoint.self, BenchPrepare.self])
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

struct BenchConcurrent: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-concurrent",
        abstract: "Benchmark: N jobs at once through Airlock against an STS (moto), with a local issuer: all succeed, every credential is settled, no uid, port or directory is shared by two jobs at once, and the memory they take.")

    @Option var jobs: Int = 100
    @Option var sts: String
    @Option var binDir: String?
    @Option var workdir: String
    @Option(help: "Seconds each job holds its uid, port and directories after fetching its credentials, so that the jobs overlap.")
    var hold: Int = 30

    func run() throws {
        let issuer = try TestIssuer()
        defer { issuer.server.stop() }
        try FileManager.default.createDirectory(atPath: workdir, withIntermediateDirectories: true)
        // Project 42 gets its credentials as environment variables, project 43 from a credential
        // server of its own (a port per job): every other job is of each.
        let (config, audit) = try benchConfig(workdir: workdir, issuer: issuer, sts: sts, endpointProject: 43)
        let bin = binDir ?? binDirectory()
        let driver = DriverSpec.airlock(binDir: bin, config: config)
        // Each job: its credentials through botocore (from the environment or its endpoint), then a
        // marker in its builds dir and HOME held for `hold` s and counted (another job sharing either
        // would add its own), then removed so that the uid's next job starts without it.
        let script = [
            #"arn=$(python3 -c 'import botocore.session as s; print(s.get_session().create_client("sts", region_name="eu-west-1").get_caller_identity()["Arn"])')"#,
            #"start=$(date +%s.%N); touch "$CI_BUILDS_DIR/owner-$CI_JOB_ID" "$HOME/owner-$CI_JOB_ID"; sleep \#(hold)"#,
            #"echo "bench-job id=$CI_JOB_ID uid=$(id -u) endpoint=${AWS_CONTAINER_CREDENTIALS_FULL_URI:-none} builds=$(ls -a "$CI_BUILDS_DIR" | grep -c '^owner-') home=$(ls -a "$HOME" | grep -c '^owner-') start=$start end=$(date +%s.%N) arn=$arn""#,
            #"rm -f "$CI_BUILDS_DIR/owner-$CI_JOB_ID" "$HOME/owner-$CI_JOB_ID""#,
        ]
        let sampler = MemorySampler(binDir: bin)
        sampler.start()
        let results = ResultBox()
        let group = DispatchGroup()
        let started = Date()
        // One thread per job, as the runner runs concurrent jobs (a task group on this 2-core machine
        // would have run two at a time: RunnerSimulator blocks while its job runs).
        for i in 0..<jobs {
            var job = SimulatedJob(script: script)
            job.jobID = 900_000 + i
            job.projectID = i % 2 == 0 ? 42 : 43
            job.projectPath = i % 2 == 0 ? "platform/api" : "platform/web"
            job.concurrentProjectID = i / 2
            job.variables = ["AWS_ENDPOINT_URL_STS": sts]
            job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: "https://airlock.bench"))]
            group.enter()
            let ready = job
            Thread.detachNewThread {
                var o = SimulatorOptions()
                o.tempRoot = workdir
                let r = RunnerSimulator(job: ready, driver: driver, options: o).run()
                results.add(r.status, log: r.output)
                group.leave()
            }
        }
        group.wait()
        let wall = Date().timeIntervalSince(started)
        let memory = sampler.stop()
        let records = (try? String(contentsOfFile: audit, encoding: .utf8))?.split(separator: "\n") ?? []
        let issued = records.filter { $0.contains("\"event\":\"issued\"") }.count
        let settled = records.filter { $0.contains("\"event\":\"revoked\"") }.count
        let ok = results.statuses.filter { $0 == "success" }.count
        let lines = results.logs.flatMap { $0.split(separator: "\n") }.filter { $0.hasPrefix("bench-job ") }.map { line in
            Dictionary(line.split(separator: " ").dropFirst().compactMap { kv -> (String, String)? in
                let p = kv.split(separator: "=", maxSplits: 1)
                return p.count == 2 ? (String(p[0]), String(p[1])) : nil
            }, uniquingKeysWith: { a, _ in a })
        }
        // Two jobs that ran at the same time must not have had the same uid or endpoint port; a
        // builds dir or HOME holding another job's marker was shared.
        var uidClashes = 0, portClashes = 0
        let spans = lines.map { (Double($0["start"] ?? "") ?? 0, Double($0["end"] ?? "") ?? 0, $0["uid"] ?? "?", $0["endpoint"] ?? "none") }
        for x in 0..<spans.count {
            for y in (x + 1)..<max(x + 1, spans.count) where spans[x].0 < spans[y].1 && spans[y].0 < spans[x].1 {
                if spans[x].2 == spans[y].2 { uidClashes += 1 }
                if spans[x].3 != "none" && spans[x].3 == spans[y].3 { portClashes += 1 }
            }
        }
        let sharedDirs = lines.filter { $0["builds"] != "1" || $0["home"] != "1" }.count
        // The most jobs holding their uid, port and directories at one moment.
        var events: [(time: Double, change: Int)] = []
        for span in spans { events.append((span.0, 1)); events.append((span.1, -1)) }
        // An end before a start at the same instant: touching jobs did not overlap.
        events.sort { a, b in a.time != b.time ? a.time < b.time : a.change < b.change }
        var running = 0, mostAtOnce = 0
        for e in events { running += e.change; mostAtOnce = max(mostAtOnce, running) }
        let endpoints = lines.filter { $0["endpoint"] != "none" }.count
        say("concurrent: \(jobs) jobs at once (\(endpoints) through their own credential endpoint): \(ok) succeeded, \(issued) credentials issued, \(settled) settled at cleanup, wall \(String(format: "%.1f", wall)) s")
        say("  \(lines.count) jobs reported, at most \(mostAtOnce) holding their uid, port and directories at the same moment; uid clashes \(uidClashes), port clashes \(portClashes), builds dir or HOME shared \(sharedDirs) (among jobs that overlapped)")
        say("  memory: peak of all Airlock processes and jobs together \(memory.peakTotalPSS / 1024) MiB PSS (\(memory.peakTotalRSS / 1024) MiB RSS), \(String(format: "%.1f", Double(memory.peakTotalPSS) / 1024 / Double(jobs))) MiB PSS per job")
        say("  largest single process, by executable: " + memory.peakByExecutable.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value / 1024) MiB" }.joined(separator: ", "))
        if ok != jobs || issued != jobs || settled != jobs || lines.count != jobs || uidClashes + portClashes + sharedDirs > 0 { throw ExitCode(1) }
    }
}

/// Samples, every second, the memory of this process's descendants and of every process running one of
/// Airlock's executables (airlock-endpoint leaves the process tree): PSS (shared pages split between
/// their users, so the sum is what the host gives) and RSS.
final class MemorySampler: @unchecked Sendable {
    struct Peaks { var peakTotalPSS = 0; var peakTotalRSS = 0; var peakByExecutable: [String: Int] = [:] }
    private let binDir: String
    private let lock = NSLock()
    private var peaks = Peaks()
    private var running = true
    private let done = DispatchSemaphore(value: 0)

    init(binDir: String) { self.binDir = binDir }

    func start() {
        Thread.detachNewThread { [self] in
            while lock.withLock({ running }) {
                sample()
                Thread.sleep(forTimeInterval: 1)
            }
            done.signal()
        }
    }

    func stop() -> Peaks {
        lock.withLock { running = false }
        done.wait()
        return lock.withLock { peaks }
    }

    private func sample() {
        let me = getpid()
        var parent: [Int32: Int32] = [:]
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
        for pid in pids {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, let pp = Int32(fields[1]) { parent[pid] = pp }
        }
        func descends(_ pid: Int32) -> Bool {
            var p = pid
            for _ in 0..<64 { guard let pp = parent[p] else { return false }; if pp == me { return true }; p = pp }
            return false
        }
        var pss = 0, rss = 0
        var byExe: [String: Int] = [:]
        for pid in pids where pid != me {
            let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? ""
            let ours = exe.hasPrefix(binDir + "/")
            guard ours || descends(pid),
                  let rollup = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8) else { continue }
            func kib(_ key: String) -> Int {
                guard let line = rollup.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }) else { return 0 }
                return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
            }
            let r = kib("Rss")
            pss += kib("Pss")
            rss += r
            if ours { let name = (exe as NSString).lastPathComponent; byExe[name] = max(byExe[name] ?? 0, r) }
        }
        lock.withLock {
            peaks.peakTotalPSS = max(peaks.peakTotalPSS, pss)
            peaks.peakTotalRSS = max(peaks.peakTotalRSS, rss)
            for (k, v) in byExe { peaks.peakByExecutable[k] = max(peaks.peakByExecutable[k] ?? 0, v) }
        }
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
        // botocore's own ContainerProvider, N fetches from Airlock's server and N from a minimal
        // http.server thread answering the same JSON (the baseline), interleaved fetch by fetch in the
        // same job (ABBA order), so that a slow moment of the machine falls on both alike.
        let py = """
        import os, time, json, threading, http.server
        from botocore.credentials import ContainerProvider
        N = \(requests)
        body = json.dumps({'AccessKeyId': 'ASIABASELINE', 'SecretAccessKey': 'x' * 40, 'Token': 't' * 300, 'Expiration': '2099-01-01T00:00:00Z'}).encode()
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            def do_GET(self):
                self.send_response(200); self.send_header('Content-Type', 'application/json'); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
            def log_message(self, *a): pass
        srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        airlock_env = dict(os.environ)
        # The same client work for both: the baseline gets the same Authorization header too.
        base_env = dict(os.environ, AWS_CONTAINER_CREDENTIALS_FULL_URI='http://127.0.0.1:%d/creds' % srv.server_address[1])
        def fetch(env):
            t = time.perf_counter(); ContainerProvider(environ=env).load().get_frozen_credentials(); return (time.perf_counter() - t) * 1000
        a, b = [], []
        for i in range(N):
            if i % 2 == 0: a.append(fetch(airlock_env)); b.append(fetch(base_env))
            else: b.append(fetch(base_env)); a.append(fetch(airlock_env))
        def pct(xs):
            xs = sorted(xs); return xs[len(xs) // 2], xs[int(len(xs) * 0.99) - 1]
        airlock, base = pct(a), pct(b)
        print('endpoint: %d fetches each from boto3, interleaved: airlock p50 %.2f ms p99 %.2f ms | minimal python server p50 %.2f ms p99 %.2f ms | ratio p50 %.2f p99 %.2f' % (N, airlock[0], airlock[1], base[0], base[1], airlock[0] / base[0], airlock[1] / base[1]))
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

struct BenchPrepare: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-prepare",
        abstract: "Benchmark: prepare with five grants on five providers (moto, the Entra, Google and OAuth fakes, OpenBao), each behind a proxy that holds every answer for --delay s, against prepare with each grant alone.")

    @Option var rounds: Int = 5
    @Option(help: "Seconds each provider takes to answer each request.") var delay: Double = 0.2

    func run() throws {
        let p = try PreparePeers(delay: delay)
        let profiles = PreparePeers.profiles
        var single: [String: [Double]] = [:], all: [Double] = []
        var jobID = 970_000
        // One prepare (and its cleanup, untimed) at a time, interleaved: each profile alone, then all five.
        for _ in 0..<rounds {
            for (i, profile) in profiles.enumerated() {
                jobID += 1
                single[profile, default: []].append(try p.prepare(jobID: jobID, projectID: 101 + i, expect: 1))
            }
            jobID += 1
            all.append(try p.prepare(jobID: jobID, projectID: 42, expect: profiles.count))
        }
        let med = { (xs: [Double]) in xs.sorted()[xs.count / 2] }
        let slowest = single.max { med($0.value) < med($1.value) }!
        say("prepare: \(rounds) rounds, every provider answering each request in \(Int(delay * 1000)) ms (medians; prepare_exec's wall time)")
        for profile in profiles { say("  \(profile) alone: \(String(format: "%.0f", med(single[profile]!) * 1000)) ms") }
        say("  all five: \(String(format: "%.0f", med(all) * 1000)) ms, \(String(format: "%.2f", med(all) / med(slowest.value)))x the slowest alone (\(slowest.key); goal <= 1.2x)")
    }
}

/// The five peers of bench-prepare, as AirlockIssuerEndToEndTests sets them up (Airlock's own
/// identity, so that no second ID token is needed), each behind a `DelayingProxy`.
final class PreparePeers {
    static let profiles = PeerTables.fiveProfiles
    static let audience = "https://airlock.bench"
    static let client = "8a3b1c2d-0000-4e5f-9a8b-7c6d5e4f3a2b"
    static let wip = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/airlock/providers/runners"
    static let sa = "ci@platform-prod.iam.gserviceaccount.com"
    static let subject = "project_path:platform/api:ref_type:branch:ref:main"
    static let vaultAudience = "https://vault.airlock.bench"
    let gitlab: TestIssuer
    let world: TestWorld
    let site: StaticSite
    let moto: MotoServer
    let azure: FakeAzure
    let google: FakeGoogle
    let oauth: FakeOAuthServer
    let bao: OpenBaoServer
    let proxies: [DelayingProxy]

    init(delay: Double) throws {
        gitlab = try TestIssuer()
        world = try TestWorld()
        site = try StaticSite(root: world.root + "/site")
        let key = world.root + "/etc/issuer.pem"
        let gen = TestWorld.launch("/usr/bin/openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key], environment: nil)
        guard gen.code == 0, chmod(key, 0o600) == 0 else { throw SimulatorError("openssl genpkey: \(gen.stderr)") }
        moto = try MotoServer()
        azure = try FakeAzure(issuer: PublishedIssuer(issuer: site.url))
        azure.addApp(Self.client, [.init(issuer: site.url, subject: Self.subject)])
        google = try FakeGoogle(issuer: PublishedIssuer(issuer: site.url))
        google.addProvider(Self.wip, .init(issuer: site.url))
        google.addServiceAccount(Self.sa, impersonators: [Self.subject])
        oauth = try FakeOAuthServer(issuer: PublishedIssuer(issuer: site.url), subjectAudience: "")
        oauth.revocationEnabled = false
        oauth.register(clientID: "public-client", .init())
        bao = try OpenBaoServer()
        let px = try [moto.url, azure.authorityHost, google.baseURL, oauth.baseURL, bao.address].map { try DelayingProxy(peer: $0, delay: delay) }
        proxies = px
        oauth.subjectAudience = px[3].baseURL  // the token endpoint's origin, as the job's side sees it
        func airlock(_ table: String, _ more: String = "") -> String { String(table.dropLast()) + "identity = \"airlock\"\n" + more + "\n" }
        var rules = ""
        for (i, profile) in Self.profiles.enumerated() {
            rules += "[[rules]]\nname = \"\(profile) alone\"\nproject_id = \(101 + i)\ngrant = [\"\(profile)\"]\n\n"
        }
        try world.writeConfig(extra: """
        [gitlab]
        issuer = "\(gitlab.issuer)"
        audience = "\(Self.audience)"

        [issuer]
        url = "\(site.url)"
        signing_key_file = "\(key)"

        \(airlock(PeerTables.aws(sts: px[0].baseURL)))\(airlock("[providers.azure]\ntype = \"azure\"\nauthority_host = \"\(px[1].baseURL)\"\ntenant_id = \"\(azure.tenant)\"\n\n"))\(airlock("[providers.gcp]\ntype = \"gcp\"\nsts_endpoint = \"\(px[2].url(for: google.stsEndpoint))\"\niam_credentials_endpoint = \"\(px[2].baseURL)\"\n\n"))\(airlock("[providers.plain]\ntype = \"oauth2\"\ntoken_endpoint = \"\(px[3].url(for: oauth.tokenEndpoint))\"\nclient_id = \"public-client\"\n\n"))\(airlock(PeerTables.vault(address: px[4].baseURL), "audience = \"\(Self.vaultAudience)\"\n"))
        \(PeerTables.fiveProfiles(azureClient: Self.client, workloadIdentityProvider: Self.wip, serviceAccount: Self.sa, vaultRole: "ci"))
        [[rules]]
        name = "all five"
        project_id = 42
        grant = ["deploy", "arm", "gcs", "plain", "vault-token"]

        \(rules)
        """)
        let published = world.run(["issuer", "publish", "--config", world.configPath, "--out", site.root])
        guard published.code == 0 else { throw SimulatorError("airlock issuer publish: \(published.stderr)") }
        try bao.enableJWT(issuer: site.url)
        try bao.writePolicy("ci", OpenBaoServer.readmePolicy)
        try bao.writeRole("ci", audience: Self.vaultAudience, boundClaims: ["airlock_profile": "vault-token"], policies: ["ci"])
    }

    /// Runs prepare_exec for a job of `projectID` and returns its wall time in seconds, after checking
    /// that it issued `expect` credentials; then cleans the job up (untimed).
    func prepare(jobID: Int, projectID: Int, expect: Int) throws -> Double {
        var job = SimulatedJob(script: [])
        job.jobID = jobID
        job.projectID = projectID
        let env = try world.runnerEnvironment(jobID: jobID, projectID: projectID, variables: [
            "AIRLOCK_ID_TOKEN": gitlab.mint(gitlab.claims(for: job, audience: Self.audience))])
        let t = Date()
        let r = world.execute("airlock-prepare", environment: env)
        let took = Date().timeIntervalSince(t)
        let issued = r.stdout.split(separator: "\n").filter { $0.hasPrefix("Airlock: issued ") }.count
        _ = world.execute("airlock-cleanup", environment: env)
        guard r.code == 0, issued == expect else {
            throw SimulatorError("prepare for project \(projectID) issued \(issued) of \(expect) (exit \(r.code)): \(r.stdout)\(r.stderr)")
        }
        return took
    }
}

/// The benchmarks' configuration: a local issuer, one AWS profile against `sts`, granted to project 42.
/// Returns the config and audit log paths.
func benchConfig(workdir: String, issuer: TestIssuer, sts: String, runnerExtra: String = "", deliver: String = "env",
                 endpointProject: Int? = nil) throws -> (String, String) {
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
    \(endpointProject.map { """
    [profiles.ep]
    provider = "aws"
    role_arn = "arn:aws:iam::123456789012:role/gitlab-{project_id}"
    deliver = "endpoint"
    [[rules]]
    name = "all of project \($0)"
    project_id = \($0)
    grant = ["ep"]
    """ } ?? "")
    """.write(toFile: config, atomically: true, encoding: .utf8)
    return (config, audit)
}

final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var s: [String] = []
    private var l: [String] = []
    func add(_ x: String, log: String = "") { lock.withLock { s.append(x); l.append(log) } }
    var statuses: [String] { lock.withLock { s } }
    var logs: [String] { lock.withLock { l } }
}
