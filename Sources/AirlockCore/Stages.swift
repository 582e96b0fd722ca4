import JobIsolation
import Policy
public import AirlockConfiguration
import ConfigSyntax
import CSupport
import Delivery
import Federation
public import Foundation
public import Identity
import Ledger
public import RunnerContract
#if canImport(Glibc)
import Glibc
#endif

/// The four stage operations. Each takes resolved values; only `Executor` reads the environment.
public enum Stages {
    /// config_exec: the runner JSON. With bubblewrap every job sees the same paths (its own
    /// directories are mounted there), so nothing about the job is needed yet.
    /// - Throws: `AirlockFailure` when the runner's payload is unusable (isolation = "none").
    public static func config(config: AirlockConfig, env: RunnerEnvironment) throws(AirlockFailure) -> String {
        let view = config.runner.isolation == .bubblewrap
            ? JobPaths.view(runner: config.runner, job: nil)
            : JobPaths.view(runner: config.runner, job: try JobContext(env))
        let out = ConfigOutput(
            buildsDir: view.builds, cacheDir: view.cache, hostname: ProcessInfo.processInfo.hostName,
            driver: .init(name: "airlock", version: airlockVersion), jobEnv: [:])
        return out.json
    }

    /// A prepare that failed before the policy decided: without this line the audit would not show
    /// the job at all (the decision, federation and rollback write their own).
    static func auditPrepareFailure(_ job: JobContext, _ error: any Error, config: AirlockConfig) {
        try? AuditLog(path: config.runner.auditLog).append(PrepareFailedRecord(subject: Audit.identity(job), detail: "\(error)"))
    }

    /// prepare_exec: the job's directories and state; identity and federation plug in here.
    /// - Throws: `BlamedError`; the job's fault for a bad token or a denial, the system's otherwise.
    public static func prepare(config: AirlockConfig, env: RunnerEnvironment, job: JobContext, transport: any HTTPTransport) async throws {
        try prepareState(config: config, job: job)
        let auth = try await Authorizer.authorize(
            config: config, env: env, job: job, now: Date(), transport: transport,
            warn: { FileHandle.standardError.write(Data("airlock-prepare: warning: \($0)\n".utf8)) })
        let paths = try prepareDirectories(config: config, env: env, job: job, auth: auth)
        // A retried prepare (the runner retries after a system failure) starts from a clean ledger:
        // whatever an earlier attempt issued is revoked first.
        let ledger = JobLedger(stateDirectory: paths.state)
        if let old = try? ledger.entries(), old.contains(where: { $0.state != .settled }) {
            await Revoker.revokeAll(audit: AuditLog(path: config.runner.auditLog), ledger: ledger, providers: config.credentialProviders(transport: transport),
                                    identity: Audit.identity(job), reason: "prepare_retry", now: Date())
        }
        let issued = try await Federator.federate(config: config, auth: auth, job: job, ledger: ledger, transport: transport, now: Date())
        do {
            try startEndpoint(config: config, paths: paths, job: job, auth: auth)
        } catch {
            await Revoker.revokeAll(audit: AuditLog(path: config.runner.auditLog), ledger: ledger, providers: config.credentialProviders(transport: transport),
                                    identity: Audit.identity(job), reason: "rollback", now: Date())
            throw error
        }
        for c in issued {
            print("Airlock: issued \(c.profile) (\(c.provider): \(c.summary)), expires \(ISO8601.format(c.expiresAt)), fingerprint \(c.fingerprint)")
        }
    }

    /// prepare_exec for a job that presents no ID token and has nothing left to revoke (the job
    /// airlock-prepare keeps; see `needsNetwork`), on the main thread without the concurrency runtime:
    /// the same checks, state, audit record and directories as `prepare`, and nothing to federate.
    /// - Throws: `BlamedError`, as `prepare`.
    static func prepareWithoutToken(config: AirlockConfig, env: RunnerEnvironment, job: JobContext) throws {
        try prepareState(config: config, job: job)
        guard let auth = try Authorizer.authorizeWithoutToken(config: config, env: env, job: job, now: Date()) else {
            throw AirlockFailure(.system, "job \(job.jobID) presents an ID token, which airlock-prepare hands over to airlock-federate; it did not")
        }
        _ = try prepareDirectories(config: config, env: env, job: job, auth: auth)
    }

    /// The host checks (root, bubblewrap, the metadata block), the job's state directory and the
    /// configuration snapshot; a failure is audited.
    private static func prepareState(config: AirlockConfig, job: JobContext) throws {
        let r = config.runner
        let store = JobStateStore(root: r.stateDir)
        do {
            if r.isolation == .bubblewrap {
                try Sandboxing.requireRoot(r)
                try Sandboxing.requireBubblewrap(r)
                if r.blockMetadata {
                    do {
                        try NetworkGuard.install(r)
                    } catch {
                        throw AirlockFailure(.system, "cannot block the host's cloud metadata service for jobs: \(error.message). Install nftables (`apt-get install nftables`) and run Airlock as root, or set [runner] block_metadata = false (weaker: jobs then reach the host's own cloud identity)")
                    }
                }
            }
            try store.create(jobID: job.jobID)
            try config.saveSnapshot(state: store.directory(jobID: job.jobID))
        } catch {
            auditPrepareFailure(job, error, config: config)
            throw error
        }
    }

    /// After the decision: the job's uid, directories and record, and the job log's first lines.
    private static func prepareDirectories(config: AirlockConfig, env: RunnerEnvironment, job: JobContext, auth: Authorization) throws -> JobPaths {
        let r = config.runner
        // Directories are never shared between protected and unprotected refs. The runner's payload
        // says (newer GitLab); otherwise the verified token; a job that proved nothing is unprotected.
        let protected = job.refProtected ?? (auth.verified?["ref_protected"] == "true")
        let refClass: RefClass = protected ? .protected : .unprotected
        let paths: JobPaths
        if r.isolation == .bubblewrap {
            let uid = try JobSlots.acquire(runner: r, job: job, refClass: refClass)
            paths = .sandboxed(runner: r, job: job, uid: uid, refClass: refClass)
            try Ownership.give(paths.buildsDir, to: uid)
            try Ownership.give(paths.cacheDir, to: uid)
            try Files.removeTree(paths.home)
            try Ownership.give(paths.home, to: uid)
        } else {
            paths = .unsandboxed(runner: r, job: job)
            for dir in [paths.buildsDir, paths.cacheDir] { try Files.makeDirectories(dir, mode: 0o755) }
            try Files.makeDirectories(r.homesRoot, mode: 0o755)
            try Files.makeDirectory(paths.home, mode: 0o700)
        }
        try JobRecord.save(JobRecord(job: job, paths: paths, preparedAt: Date()), paths: paths)
        let granted = auth.grants.map(\.profile)
        print("Airlock \(airlockVersion): job \(job.jobID) prepared (isolation: \(config.runner.isolation.rawValue)); "
              + (auth.verified == nil ? "no verified ID token, no credentials" : granted.isEmpty ? "identity verified, no profile granted" : "granted: \(granted.joined(separator: ", "))"))
        if let note = Self.containerNote(env.jobVariables) { print(note) }
        // Before federation, so that the job log keeps the order even when an error follows on stderr.
        fflush(nil)
        return paths
    }

    /// Whether prepare or cleanup has anything to say to GitLab or a provider for this job: an ID token
    /// to verify (prepare; then federation may follow), or credentials in the ledger not yet settled
    /// (an earlier prepare attempt's, or the job's own at cleanup; an unreadable ledger counts, so that
    /// the networked stage reports it). Without either, neither stage sends a request.
    static func needsNetwork(_ kind: Executor.Kind, config: AirlockConfig, env: RunnerEnvironment, job: JobContext) -> Bool {
        if hasUnsettled(config.runner, job: job) { return true }
        return kind == .prepare && Authorizer.presentedToken(config: config, env: env) != nil
    }

    /// Whether the job's ledger holds credentials not yet settled (or cannot be read): what makes a
    /// cleanup need the network.
    static func hasUnsettled(_ runner: RunnerSettings, job: JobContext) -> Bool {
        JobLedger(stateDirectory: JobPaths.state(runner, jobID: job.jobID)).needsSettling
    }

    /// run_exec: one stage script in the sandbox, output masked.
    /// Returns 0, or the build-failure exit code after writing the script's code to BUILD_EXIT_CODE_FILE.
    /// - Throws: `BlamedError` (system) when the stage cannot be started.
    public static func run(view: JobView, env: RunnerEnvironment, job: JobContext, script: String, stage: String) throws -> Int32 {
        let state = JobPaths.state(view.runner, jobID: job.jobID)
        guard let record = JobRecord.load(state: state) else {
            throw AirlockFailure(.system, "no state for job \(job.jobID) at \(state): prepare_exec did not run or cleanup already removed it; check that prepare_exec and run_exec use the same --config")
        }
        let paths = record.paths
        guard let body = FileContents.read(script), let text = String(validating: body, as: UTF8.self) else {
            throw AirlockFailure(.system, "cannot read the stage script \(script)")
        }
        // No token Airlock trusts reaches the job: the configured variables, and any JWT from the
        // configured issuer with an audience Airlock accepts, whatever variable holds it (a job can
        // ask GitLab for such a token under any name). Scrubbed from the script, masked in output.
        let configured = view.tokenVariables.compactMap { env.jobVariables[$0] }.filter { !$0.isEmpty }
        let secrets = Array(Set(configured + TrustedTokens.find(in: text, issuer: view.tokenIssuer, audiences: view.tokenAudiences)))
        let scrubbed = ScriptScrubber.scrub(text, removing: secrets).script
        let stageName = Stage.isValidName(stage) ? stage : "stage"
        let sandboxed = view.runner.isolation == .bubblewrap

        let credentials = try JobLedger(stateDirectory: paths.state).entries().filter { $0.state == .issued }.map(\.credential)
        let secretsHost = "\(view.runner.secretsRoot)/\(job.jobID)/\(stageName)"
        let secretsInside = sandboxed ? Sandboxing.secretsInside : secretsHost
        let rules = Dictionary(uniqueKeysWithValues: view.deliveries.map { name, d in
            (name, DeliveryRule(profile: name, asFile: d.mode == .file, stages: d.stages, viaEndpoint: d.mode == .endpoint))
        })
        let session = EndpointSession.load(state: paths.state)
        let endpoint = session.flatMap { s in EndpointServerInfo.load(state: paths.state).map {
            // A sandboxed job has a uid of its own: the server serves GCE metadata to it at the root.
            EndpointAccess(port: $0.port, secret: s.secret, ownerOnly: sandboxed && paths.uid != nil)
        } }
        let plan = try InjectionPlan.make(stage: stage, credentials: credentials, rules: rules, secretsDir: secretsInside, endpoint: endpoint)

        // Sandboxed, the script and the secret files reach the sandbox as descriptors of unlinked
        // root-only files: the job's uid needs no access to any host path of Airlock's.
        var descriptors: [Int32] = []
        defer { descriptors.forEach { close($0) } }
        var scriptPath = ""
        var dataFiles: [(fd: Int32, inside: String)] = []
        if sandboxed {
            try Files.makeDirectory("\(paths.state)/scripts", mode: 0o700)
            let fd = try Files.unlinkedCopy(scrubbed, in: "\(paths.state)/scripts")
            descriptors.append(fd)
            for (name, content) in plan.files.sorted(by: { $0.key < $1.key }) {
                let f = try Files.unlinkedCopy(content, in: "\(paths.state)/scripts")
                descriptors.append(f)
                dataFiles.append((fd: f, inside: "\(secretsInside)/\(name)"))
            }
        } else {
            try Files.makeDirectory("\(paths.state)/scripts", mode: 0o700)
            scriptPath = "\(paths.state)/scripts/\(stageName).sh"
            try Files.writeAtomically(Data(scrubbed.utf8), to: scriptPath, mode: 0o600, durable: false)
            if !plan.files.isEmpty {
                try Files.makeDirectories(view.runner.secretsRoot, mode: 0o711)
                try Files.makeDirectory("\(view.runner.secretsRoot)/\(job.jobID)", mode: 0o700)
                try Files.makeDirectory(secretsHost, mode: 0o700)
                for (name, content) in plan.files {
                    try Files.writeAtomically(Data(content.utf8), to: "\(secretsHost)/\(name)", mode: 0o600, durable: false)
                }
            }
        }
        defer {
            if !scriptPath.isEmpty { unlink(scriptPath) }
            if !sandboxed && !plan.files.isEmpty { try? Files.removeTree(secretsHost) }
        }
        let spec = Sandboxing.spec(view: view, env: env, paths: paths, scriptPath: scriptPath, scriptFD: descriptors.first,
                                   dataFiles: dataFiles, extraEnvironment: plan.environment)
        // A fresh session keyring for the stage: it would otherwise inherit the runner's, which every
        // job could read, add to and revoke keys in (bubblewrap leaves keyrings alone).
        if airlock_join_new_session_keyring() < 0 {
            throw AirlockFailure(.system, "cannot give the \(stage) stage its own session keyring: \(String(cString: strerror(errno)))")
        }
        let child: ChildProcess
        do {
            if let uid = spec.uid {
                child = try ChildProcess(tenant: uid, argv: spec.argv(), environment: spec.environment, mergedOutput: true)
            } else {
                child = try ChildProcess(argv: spec.argv(), environment: spec.environment, directory: spec.useBubblewrap ? nil : spec.directory,
                                         newSession: true, mergedOutput: true)
            }
        } catch {
            throw AirlockFailure(.system, "cannot start the \(stage) stage: \(error)")
        }
        descriptors.forEach { close($0) }
        descriptors = []
        let watcher = StageWatcher(child: child, bubblewrap: spec.useBubblewrap, graceful: view.runner.gracefulKill)
        watcher.start()
        child.startReaper { watcher.finish() }
        var known = Set(secrets + credentials.flatMap { $0.secrets.values } + (session.map { [$0.secret] } ?? []))
        let masks = MaskTable(MaskPatterns(secrets: Array(known)).patterns)
        // stdout and stderr are one pipe (the order the script wrote in) through one masker: a secret
        // split across them is caught.
        let masker = StreamMasker(masks)
        // With a credential server, values issued while the stage runs are masked from the moment
        // they are in the ledger (the server records them there before serving them).
        let ledger = JobLedger(stateDirectory: paths.state)
        var ledgerStamp = session == nil ? nil : Files.modificationTime(ledger.path)
        child.pump(stdout: masker, stderr: masker, tick: {
            guard session != nil else { return }
            let stamp = Files.modificationTime(ledger.path)
            guard stamp != ledgerStamp else { return }
            ledgerStamp = stamp
            let fresh = Set(((try? ledger.entries()) ?? []).flatMap { $0.credential.secrets.values }).subtracting(known)
            guard !fresh.isEmpty else { return }
            known.formUnion(fresh)
            masker.add(MaskPatterns(secrets: Array(fresh)))
        })
        let code = child.wait()
        if code == 0 { return 0 }
        if let file = env.buildExitCodeFile {
            try Files.writeAtomically(Data("\(code)\n".utf8), to: file, mode: 0o644)
        }
        return env.buildFailureExitCode
    }

    /// cleanup_exec: removes everything the job left; safe to run any number of times.
    /// - Throws: `AirlockFailure` (system) when something could not be removed.
    /// Its output goes to the runner's log unmasked: it names profiles and fingerprints, never values.
    public static func cleanup(config: AirlockConfig, env: RunnerEnvironment, job: JobContext, transport: any HTTPTransport) async throws {
        let state = JobPaths.state(config.runner, jobID: job.jobID)
        let existed = FileManager.default.fileExists(atPath: state)
        let record = JobRecord.load(state: state)
        let failed = await Revoker.settleJob(config: config, job: record?.job ?? job, paths: record?.paths, state: state,
                                             reason: "cleanup", transport: transport) {
            print("airlock-cleanup: job \(job.jobID): \($0)")
        }
        try finishCleanup(runner: config.runner, job: job, record: record, existed: existed, failed: failed)
    }

    /// cleanup_exec for a job with nothing to revoke (the job airlock-cleanup keeps; see
    /// `needsNetwork`), on the main thread without the concurrency runtime: the same removal, audit
    /// record and output as `cleanup`. Returns false, having only stopped the job's credential server,
    /// when the ledger holds something to settle after all: `cleanup` does that, and audits it.
    /// - Throws: `AirlockFailure` (system), as `cleanup`.
    static func cleanupWithoutRevoking(runner: RunnerSettings, job: JobContext) throws -> Bool {
        let state = JobPaths.state(runner, jobID: job.jobID)
        let existed = FileManager.default.fileExists(atPath: state)
        let record = JobRecord.load(state: state)
        guard let failed = Revoker.settleJobWithoutRevoking(runner: runner, job: record?.job ?? job, paths: record?.paths, state: state) else {
            return false
        }
        try finishCleanup(runner: runner, job: job, record: record, existed: existed, failed: failed)
        return true
    }

    private static func finishCleanup(runner: RunnerSettings, job: JobContext, record: JobRecord?, existed: Bool, failed: Int) throws {
        try AuditLog(path: runner.auditLog).append(CleanupRecord(subject: Audit.identity(record?.job ?? job),
                                                                      state: existed ? (failed == 0 ? "removed" : "kept_for_sweep") : "already-clean"))
        if failed > 0 {
            throw AirlockFailure(.system, "job \(job.jobID): \(failed) credential(s) could not be revoked; the ledger is kept for `airlock sweep`")
        }
        print("airlock-cleanup: job \(job.jobID): \(existed ? "state removed" : "nothing left to clean")")
    }
}

/// Forwards a cancel (SIGTERM from the runner) to the sandboxed process tree, then SIGKILLs it after
/// the grace period; after the stage ends, kills whatever the script left in the background.
final class StageWatcher: @unchecked Sendable {
    let child: ChildProcess
    let bubblewrap: Bool
    let graceful: Double
    private let lock = NSLock()
    private var done = false

    init(child: ChildProcess, bubblewrap: Bool, graceful: Double) {
        self.child = child
        self.bubblewrap = bubblewrap
        self.graceful = graceful
    }

    func start() {
        let pgid = child.pid
        let spare: pid_t? = bubblewrap ? child.pid : nil
        SignalRelay.install { [self] sig in
            guard !self.isDone else { return }
            // TERM to the script and everything it started; bubblewrap's own process is spared so
            // the script gets its grace period instead of dying with the sandbox at once.
            ProcessGroup.signal(pgid, SIGTERM, sparing: spare)
            let grace = self.graceful
            Thread.detachNewThread {
                Thread.sleep(forTimeInterval: grace)
                if !self.isDone { ProcessGroup.signal(pgid, SIGKILL) }
            }
        }
    }

    var isDone: Bool { lock.withLock { done } }

    func finish() {
        lock.withLock { done = true }
        // Nothing survives the stage: with bubblewrap the PID namespace is already gone; without it
        // the script's process group is killed.
        ProcessGroup.signal(child.pid, SIGKILL)
    }
}

extension Stages {
    /// A custom executor gets `image:` and `services:` only as CUSTOM_ENV_CI_JOB_IMAGE and
    /// CUSTOM_ENV_CI_JOB_SERVICES; Airlock runs no container. A job that names them is told, once, in
    /// its log (the values are the job's own: they are not echoed).
    static func containerNote(_ variables: [String: String]) -> String? {
        // Trimmed as trimmingCharacters(in: .whitespaces) would, without NSString's first use in
        // every prepare.
        let image = !TOMLLineIndex.trimmed(Substring(variables["CI_JOB_IMAGE"] ?? "")).isEmpty
        let services = variables["CI_JOB_SERVICES"].map { s in
            let t = TOMLLineIndex.trimmed(Substring(s))
            return !t.isEmpty && t != "[]" && t != "null"
        } ?? false
        guard image || services else { return nil }
        let what = image && services ? "image: and services: are" : image ? "image: is" : "services: is"
        return "Airlock: this job's \(what) ignored: this runner runs no containers; the script runs on the runner host's tools in Airlock's sandbox"
    }
}

extension Stages {
    /// Prepare's part for `deliver = "endpoint"`: the session file and the server.
    static func startEndpoint(config: AirlockConfig, paths: JobPaths, job: JobContext, auth: Authorization) throws(AirlockFailure) {
        let served = auth.grants.map(\.profile).filter { config.profiles[$0]?.deliver == .endpoint }.sorted()
        guard !served.isEmpty, let verified = auth.verified, let token = auth.token else { return }
        // GitLab's ID token is kept only for a served profile whose provider is shown it; with
        // identity = "airlock" every refresh mints Airlock's own, and GitLab's is not written down.
        let needing = Set(served.compactMap { name -> String? in
            guard let p = config.profiles[name], let spec = config.providers[p.provider], spec.needsGitLabToken(p.settings) else { return nil }
            return spec.name
        })
        let session = EndpointSession(secret: EndpointSession.newSecret(), idToken: needing.isEmpty ? "" : token.value,
                                      providerTokens: auth.providerTokens.filter { needing.contains($0.key) }.mapValues(\.value), verified: verified,
                                      profiles: served, jobTimeoutSeconds: job.jobTimeoutSeconds)
        guard let data = try? JSONEncoder().encode(session) else { throw AirlockFailure(.system, "cannot encode the endpoint session") }
        try Files.writeAtomically(data, to: "\(paths.state)/\(EndpointSession.file)", mode: 0o600)
        let info = try EndpointProcess.start(config: config, state: paths.state)
        // Only the job's own uid may connect: another job cannot flood it or hold its connections.
        if let uid = paths.uid, config.runner.blockMetadata {
            do {
                try NetworkGuard.allowEndpoint(config.runner, port: info.port, uid: uid)
            } catch {
                NetworkGuard.removeEndpoint(config.runner, port: info.port, uid: uid)
                EndpointProcess.stop(state: paths.state)
                throw error
            }
        }
        print("Airlock: credential endpoint for \(served.joined(separator: ", ")) on 127.0.0.1:\(info.port)")
    }
}
