import Foundation
import Identity
import Policy
import RunnerContract

/// How the run stage isolates a job.
public enum Isolation: String, Sendable, CaseIterable {
    /// bubblewrap: new PID/IPC/UTS namespaces, read-only system, Airlock's files invisible.
    case bubblewrap
    /// No sandbox: the script runs as the runner's user with the host's view. Weaker: the job can
    /// read Airlock's config, state and the runner's temp dir if file permissions allow.
    case none
}

/// `[runner]`: where jobs live and how they are isolated.
public struct RunnerSettings: Sendable {
    public static let defaultBuildsRoot = "/var/lib/airlock/builds"
    public static let defaultCacheRoot = "/var/lib/airlock/cache"
    public static let defaultStateDir = "/var/lib/airlock/state"
    public static let defaultAuditLog = "/var/log/airlock/audit.jsonl"
    public static let defaultGracefulKill = 10.0

    public var buildsRoot: String
    public var cacheRoot: String
    /// Per-job state (ledger, scrubbed scripts); 0700, never visible to jobs.
    public var stateDir: String
    /// Where each job's HOME is made; defaults to `<builds_root>/.homes`.
    public var homesRoot: String
    public var auditLog: String
    public var isolation: Isolation
    /// Seconds between SIGTERM and SIGKILL when a stage is cancelled.
    public var gracefulKill: Double
    /// The PATH jobs get; nil means the runner's own PATH.
    public var jobPath: String?
    /// The bubblewrap binary.
    public var bwrap: String
    /// One deadline for all of a job's federation, retries included.
    public var federationTimeout: Double
    /// sweep revokes a job's ledger once it is older than its job timeout plus this.
    public var sweepGrace: Double
    /// Where per-job secret files live (tmpfs where available); never under the builds dir.
    public var secretsRoot: String
    /// The credential server serves no credential with less validity left than this (botocore
    /// refreshes below 15 minutes); it federates again instead.
    public var endpointMinValidity: Double = RunnerSettings.defaultEndpointMinValidity
    /// Requests per second one job's credential server answers (the burst is twice that).
    public var endpointRequestsPerSecond: Double = 50

    public static let defaultEndpointMinValidity = 16.0 * 60
    public static let defaultFederationTimeout = 30.0
    public static let defaultSweepGrace = 3600.0
    /// /dev/shm is a tmpfs on Debian: secret files then never touch a disk.
    public static func defaultSecretsRoot(stateDir: String) -> String {
        let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
        let shmIsTmpfs = mounts.split(separator: "\n").contains { $0.split(separator: " ").dropFirst().prefix(2) == ["/dev/shm", "tmpfs"] }
        return shmIsTmpfs && access("/dev/shm", W_OK) == 0 ? "/dev/shm/airlock-secrets" : stateDir + "/secrets"
    }
}

/// The resolved configuration: plain values with defaults applied.
public struct AirlockConfig: Sendable {
    /// The file it came from, for messages.
    public var path: String
    public var runner: RunnerSettings
    /// `[gitlab]`; nil when absent (then jobs run with no grants).
    public var gitlab: IssuerSettings?
    public var providers: [String: ProviderSpec]
    public var profiles: [String: ProfileSpec]
    public var policy: Policy
    /// Findings that are not errors (for `airlock check`).
    public var warnings: [String]

    /// Where the runner's `*_args` point by default.
    public static let defaultPath = "/etc/airlock/airlock.toml"

    /// Loads and validates a configuration file.
    /// - Throws: `ConfigError` naming the file, line and key, and what is allowed.
    public static func load(path: String) throws(ConfigError) -> AirlockConfig {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigError(message: "\(path): cannot read the Airlock configuration (\(Self.reason(error))); pass --config FILE or create it from runner-config/airlock.toml.example")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(message: "\(path): not UTF-8 text")
        }
        return try parse(text, path: path)
    }

    /// Parses configuration text.
    /// - Throws: `ConfigError` naming the line and key.
    public static func parse(_ text: String, path: String = "airlock.toml") throws(ConfigError) -> AirlockConfig {
        var top = try TOMLCursor.parse(source: text, file: path)
        guard var r = try top.table("runner") else {
            throw top.error("runner", "the [runner] table is required (builds_root, cache_root, state_dir, audit_log)")
        }
        func absolute(_ key: String, _ def: String, _ r: inout TOMLCursor) throws(ConfigError) -> String {
            let v = try r.string(key) ?? def
            guard v.hasPrefix("/") else { throw r.error(key, "must be an absolute path, got \(v.quoted)") }
            guard !v.split(separator: "/").contains("..") else { throw r.error(key, "must not contain '..'") }
            return v.count > 1 && v.hasSuffix("/") ? String(v.dropLast()) : v
        }
        let buildsRoot = try absolute("builds_root", RunnerSettings.defaultBuildsRoot, &r)
        let cacheRoot = try absolute("cache_root", RunnerSettings.defaultCacheRoot, &r)
        let stateDir = try absolute("state_dir", RunnerSettings.defaultStateDir, &r)
        let homesRoot = try absolute("homes_root", buildsRoot + "/.homes", &r)
        let auditLog = try absolute("audit_log", RunnerSettings.defaultAuditLog, &r)
        let isoText = try r.string("isolation") ?? Isolation.bubblewrap.rawValue
        guard let isolation = Isolation(rawValue: isoText) else {
            throw r.error("isolation", "expected one of \"bubblewrap\", \"none\", got \(isoText.quoted)")
        }
        let grace = try r.duration("graceful_kill") ?? RunnerSettings.defaultGracefulKill
        let jobPath = try r.string("job_path")
        let bwrap = try r.string("bwrap") ?? "bwrap"
        let fedTimeout = try r.duration("federation_timeout") ?? RunnerSettings.defaultFederationTimeout
        let sweepGrace = try r.duration("sweep_grace") ?? RunnerSettings.defaultSweepGrace
        let secretsRoot = try absolute("secrets_root", RunnerSettings.defaultSecretsRoot(stateDir: stateDir), &r)
        for (key, dir) in [("builds_root", buildsRoot), ("cache_root", cacheRoot), ("homes_root", homesRoot)] {
            if secretsRoot.hasPrefix(dir + "/") {
                throw r.error("secrets_root", "must not be inside \(key) (\(dir)): secret files would land in artifacts or caches")
            }
            if dir == stateDir || dir.hasPrefix(stateDir + "/") || stateDir.hasPrefix(dir + "/") {
                throw r.error(key, "must not overlap state_dir (\(stateDir)): jobs can write to \(key) and must never see the state")
            }
        }
        let minValidity = try r.duration("endpoint_min_validity") ?? RunnerSettings.defaultEndpointMinValidity
        let rps = Double(try r.int("endpoint_requests_per_second") ?? 50)
        guard rps >= 1 else { throw r.error("endpoint_requests_per_second", "must be at least 1") }
        try r.finish()
        var warnings: [String] = []
        if isolation == .none {
            warnings.append("[runner] isolation = \"none\": jobs see the host, including files Airlock cannot hide")
        }
        var gitlab: IssuerSettings?
        if var g = try top.table("gitlab") {
            gitlab = try parseGitLab(&g)
        }
        let providers = try top.table("providers").map { c throws(ConfigError) in try parseProviders(c) } ?? [:]
        let profiles = try top.table("profiles").map { c throws(ConfigError) in try parseProfiles(c, providers: providers) } ?? [:]
        let rules = try parseRules(try top.tableArray("rules"), profiles: profiles, warnings: &warnings)
        if !rules.isEmpty && gitlab == nil {
            throw top.error("rules", "rules need a [gitlab] section (issuer, audience) to verify the tokens they match")
        }
        try top.finish(allowed: ["runner", "gitlab", "providers", "profiles", "rules"])
        return AirlockConfig(
            path: path,
            runner: RunnerSettings(
                buildsRoot: buildsRoot, cacheRoot: cacheRoot, stateDir: stateDir, homesRoot: homesRoot,
                auditLog: auditLog, isolation: isolation, gracefulKill: grace, jobPath: jobPath, bwrap: bwrap,
                federationTimeout: fedTimeout, sweepGrace: sweepGrace, secretsRoot: secretsRoot,
                endpointMinValidity: minValidity, endpointRequestsPerSecond: rps),
            gitlab: gitlab, providers: providers, profiles: profiles,
            policy: Policy(rules: rules), warnings: warnings)
    }

    static func reason(_ error: any Error) -> String {
        let ns = error as NSError
        if let u = ns.userInfo[NSUnderlyingErrorKey] as? NSError, u.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(u.code)))
        }
        return ns.localizedDescription
    }
}
