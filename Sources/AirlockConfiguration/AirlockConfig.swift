public import ConfigSyntax
public import Federation
import CSupport
import Foundation
public import Identity
import Ledger
public import Policy
public import RunnerContract

/// How the run stage isolates a job.
public enum Isolation: String, Sendable, CaseIterable {
    /// bubblewrap as a per-job unprivileged uid: no capabilities, no_new_privs, its own namespaces,
    /// an allow-listed view (system read-only, its own builds/cache/HOME, a private /tmp).
    case bubblewrap
    /// UNSAFE: no sandbox. The script runs as the runner's user (root, usually) with the host's view:
    /// it can read Airlock's config, state and keys, other jobs' credentials and the runner's token.
    /// Only for a runner whose every job is trusted; `airlock check` warns about it.
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
    /// Where each job's HOME is seen (and made, per job, on the host); defaults to `homes` beside
    /// builds_root, so that a job's own builds view holds no mount point of Airlock's.
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
    /// The uids (and gids, the same numbers) Airlock hands to running jobs, one per job.
    public var jobUIDs: ClosedRange<UInt32> = RunnerSettings.defaultJobUIDs
    /// Block jobs from the host's cloud metadata services with nftables (prepare fails when it cannot).
    public var blockMetadata: Bool = true
    /// nft (nftables), for the metadata block and the credential endpoint's owner rule.
    public var nft: String = "nft"
    /// More host paths a job must not see (the runner's config and home by default).
    public var hiddenPaths: [String] = RunnerSettings.defaultHiddenPaths

    /// Far above login users, subordinate-uid ranges and systemd's container range (0x80000–0x6FFFFFFF).
    public static let defaultJobUIDs: ClosedRange<UInt32> = 2_000_000_000...2_000_000_999
    /// The runner's own config (its authentication token) and homes a job has no business reading.
    public static let defaultHiddenPaths = ["/etc/gitlab-runner", "/home/gitlab-runner", "/root"]

    public static let defaultEndpointMinValidity = 16.0 * 60
    public static let defaultFederationTimeout = 30.0
    public static let defaultSweepGrace = 3600.0
    /// /dev/shm is a tmpfs on Debian: secret files then never touch a disk. statfs(2) tells, where
    /// reading /proc/mounts cost every stage a third of a millisecond.
    public static func defaultSecretsRoot(stateDir: String) -> String {
        let shmIsTmpfs = airlock_is_tmpfs("/dev/shm") == 1
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
    /// `[issuer]`: Airlock as its own OIDC issuer (issue 17); nil when absent.
    public var issuer: AirlockIssuerSettings? = nil
    /// `[[delegations]]`: the teams that write part of the policy (issue 18).
    public var delegations: [Delegation] = []
    /// The team files `[policy] include` found.
    public var teamFiles: [String] = []
    /// Team files that could not be used (their teams' rules are left out).
    public var policyProblems: [PolicyProblem] = []
    public var providers: [String: ProviderSpec]
    public var profiles: [String: ProfileSpec]
    public var policy: Policy
    /// Findings that are not errors (for `airlock check`).
    public var warnings: [String]
    /// The text it was parsed from: prepare keeps it in the job's state (`config.toml`), and the
    /// job's later stages, its endpoint, cleanup and sweep use that, not the file as it is then.
    public var source: String = ""

    /// Where the runner's `*_args` point by default.
    public static let defaultPath = "/etc/airlock/airlock.toml"

    /// Loads and validates a configuration file.
    /// - Throws: `ConfigError` naming the file, line and key, and what is allowed.
    public static func load(path: String) throws(ConfigError) -> AirlockConfig {
        let data: [UInt8]
        switch FileContents.reading(path) {
        case .success(let d): data = d
        case .failure(let error):
            throw ConfigError(message: "\(path): cannot read the Airlock configuration (\(error)); pass --config FILE or create it from runner-config/airlock.toml.example")
        }
        guard let text = String(validating: data, as: UTF8.self) else {
            throw ConfigError(message: "\(path): not UTF-8 text")
        }
        return try parse(text, path: path)
    }

    /// Every problem in `text` that parsing can find, not only the first (for `airlock check`): after
    /// an error in a `[providers.*]`, `[profiles.*]` or `[[rules]]` table, that table is blanked out
    /// (lines keep their numbers) and the text parsed again; errors that only follow from a blanked
    /// table ("not defined") are left out. An error in `[runner]` or `[gitlab]`, at the top level or
    /// in the TOML syntax ends the search.
    public static func allProblems(_ text: String, path: String) -> [String] {
        let original = text.components(separatedBy: "\n")
        var lines = original
        var problems: [String] = []
        var removed: [String] = []
        for _ in 0..<100 {
            do {
                _ = try parse(lines.joined(separator: "\n"), path: path)
                return problems
            } catch {
                var message = error.message
                // With rules set aside, "[rules #N]" counts what is left: count the file's own.
                if let number = Int(message.dropFirst(path.count + 1).prefix { $0.isNumber }), number <= original.count,
                   let r = message.range(of: #"\[rules #[0-9]+\]"#, options: .regularExpression) {
                    let n = original[..<number].filter { $0.trimmingCharacters(in: .whitespaces).hasPrefix("[[rules]]") }.count
                    message.replaceSubrange(r, with: "[rules #\(n)]")
                }
                if !removed.contains(where: { message.contains("\($0.quoted) is not defined") }) { problems.append(message) }
                // The table the error is in: from the last header at or above its line to the next.
                guard !message.contains("TOML syntax error"),
                      let number = Int(message.dropFirst(path.count + 1).prefix { $0.isNumber }), number >= 1, number <= lines.count,
                      let start = (0..<number).reversed().first(where: { lines[$0].trimmingCharacters(in: .whitespaces).hasPrefix("[") }) else { return problems }
                let header = lines[start].trimmingCharacters(in: .whitespaces)
                guard header.hasPrefix("[providers.") || header.hasPrefix("[profiles.") || header.hasPrefix("[[rules]]") else { return problems }
                if let close = header.firstIndex(of: "]"), !header.hasPrefix("[[") {
                    removed.append(String(header[header.index(header.startIndex, offsetBy: header.hasPrefix("[providers.") ? 11 : 10)..<close]))
                }
                var i = start
                repeat { lines[i] = ""; i += 1 } while i < lines.count && !lines[i].trimmingCharacters(in: .whitespaces).hasPrefix("[")
            }
        }
        return problems
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
        let homesRoot = try absolute("homes_root", ((buildsRoot as NSString).deletingLastPathComponent as NSString).appendingPathComponent("homes"), &r)
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
        var jobUIDs = RunnerSettings.defaultJobUIDs
        if let text = try r.string("job_uids") {
            let parts = text.split(separator: "-", omittingEmptySubsequences: false).map { UInt32($0.trimmingCharacters(in: .whitespaces)) }
            // bubblewrap writes the uid into a user namespace's uid_map, which refuses ids of 2^31 and up.
            guard parts.count == 2, let lo = parts[0], let hi = parts[1], lo >= 1000, lo <= hi, hi <= 2_147_483_647 else {
                throw r.error("job_uids", "expected \"FIRST-LAST\" with 1000 <= FIRST <= LAST <= 2147483647 (uids nobody else uses, e.g. \"2000000000-2000000999\"), got \(text.quoted)")
            }
            jobUIDs = lo...hi
        }
        let blockMetadata = try r.bool("block_metadata") ?? true
        let nft = try r.string("nft") ?? "nft"
        var hidden = RunnerSettings.defaultHiddenPaths
        if let extra = try r.stringArray("hide") {
            for p in extra where !p.hasPrefix("/") || p.split(separator: "/").contains("..") {
                throw r.error("hide", "must list absolute paths without '..', got \(p.quoted)")
            }
            hidden += extra
        }
        try r.finish()
        var warnings: [String] = []
        if isolation == .none {
            warnings.append("[runner] isolation = \"none\" is UNSAFE: jobs run as the runner's user with the host's view and can read Airlock's config, keys and state, other jobs' credentials and the runner's token; use it only where every job is trusted")
        }
        if !blockMetadata {
            warnings.append("[runner] block_metadata = false: jobs can reach the host's cloud metadata service (169.254.169.254...), and through it the host's own cloud identity")
        }
        var gitlab: IssuerSettings?
        if var g = try top.table("gitlab") {
            gitlab = try parseGitLab(&g)
        }
        var issuer: AirlockIssuerSettings?
        if var i = try top.table("issuer") {
            issuer = try parseIssuer(&i)
        }
        let providers = try top.table("providers").map { c throws(ConfigError) in try parseProviders(c, issuer: issuer != nil, warnings: &warnings) } ?? [:]
        let profiles = try top.table("profiles").map { c throws(ConfigError) in try parseProfiles(c, providers: providers) } ?? [:]
        var rules = try parseRules(try top.tableArray("rules"), profiles: profiles, warnings: &warnings)
        // Issue 18: teams' files, within what the platform team delegated to each.
        var include: [String] = []
        if var p = try top.table("policy") { include = try parsePolicy(&p, mainFile: path) }
        let delegations = try parseDelegations(try top.tableArray("delegations"), profiles: profiles)
        let matches = include.map { includedFiles([$0]) }
        let teamFiles = Array(Set(matches.joined())).sorted()
        let team = loadTeamRules(teamFiles, delegations: delegations, profiles: profiles, mainRules: rules, warnings: &warnings)
        rules += team.rules
        if !rules.isEmpty && gitlab == nil {
            throw top.error("rules", "rules need a [gitlab] section (issuer, audience) to verify the tokens they match")
        }
        try top.finish(allowed: ["runner", "gitlab", "issuer", "policy", "delegations", "providers", "profiles", "rules"])
        var config = AirlockConfig(
            path: path,
            runner: RunnerSettings(
                buildsRoot: buildsRoot, cacheRoot: cacheRoot, stateDir: stateDir, homesRoot: homesRoot,
                auditLog: auditLog, isolation: isolation, gracefulKill: grace, jobPath: jobPath, bwrap: bwrap,
                federationTimeout: fedTimeout, sweepGrace: sweepGrace, secretsRoot: secretsRoot,
                endpointMinValidity: minValidity, endpointRequestsPerSecond: rps, jobUIDs: jobUIDs,
                blockMetadata: blockMetadata, nft: nft, hiddenPaths: hidden),
            gitlab: gitlab, providers: providers, profiles: profiles,
            policy: Policy(rules: rules), warnings: warnings, source: text)
        config.issuer = issuer
        config.delegations = delegations
        config.teamFiles = teamFiles
        config.policyProblems = zip(include, matches).filter { $0.1.isEmpty }.map {
            PolicyProblem(team: nil, file: $0.0, message: "[policy] include \($0.0.quoted) matches no file: no team's rules are read from it")
        } + team.problems
        return config
    }

    /// Every file the configuration names that a job must never read: the config itself, keys,
    /// JWKS files. Each is hidden from the sandbox and checked by `airlock check`.
    public var referencedFiles: [(key: String, path: String)] {
        var out: [(String, String)] = [("the configuration", path)] + teamFiles.map { ("[policy] include", $0) }
        if let j = gitlab?.jwksFile { out.append(("[gitlab] jwks_file", j)) }
        if let issuer {
            out.append(("[issuer] signing_key_file", issuer.signingKeyFile))
            for p in issuer.previousKeyFiles { out.append(("[issuer] previous_key_files", p)) }
        }
        for (name, p) in providers.sorted(by: { $0.key < $1.key }) {
            for f in p.settings.secretFiles { out.append(("[providers.\(name)] \(f.key)", f.path)) }
        }
        return out
    }
}

/// Issue 14: a job keeps the configuration it was prepared with. An edit (or a typo) while it runs
/// affects only jobs prepared after it; the job's remaining stages and its cleanup carry on.
extension AirlockConfig {
    /// The snapshot's name in the job's state directory (0600, hidden from jobs with the rest of it).
    public static let snapshotFile = JobStateStore.File.configSnapshot

    /// Keeps this configuration in the job's state directory, with its compiled view (`JobView`).
    /// - Throws: `AirlockFailure` (system) when it cannot be written.
    public func saveSnapshot(state: String) throws(AirlockFailure) {
        // A repeated prepare of the job: an earlier attempt's view must not outlive a snapshot it was
        // not made from, should writing the new one fail.
        unlink("\(state)/\(JobView.file)")
        try Files.writeAtomically(Data(source.utf8), to: "\(state)/\(Self.snapshotFile)")
        // Derived from the snapshot: a view lost in a crash is read from the snapshot again.
        try Files.writeAtomically(Data(JobView(self).json.utf8), to: "\(state)/\(JobView.file)", durable: false)
    }

    /// The configuration the job with state directory `state` was prepared with, parsed as if it
    /// were still at `path`; nil when prepare kept none (an Airlock before this one prepared it).
    /// - Throws: `ConfigError` when the snapshot does not parse (it did when prepare saved it).
    public static func snapshot(state: String, path: String) throws(ConfigError) -> AirlockConfig? {
        guard let data = FileContents.read("\(state)/\(snapshotFile)") else { return nil }
        return try parse(String(decoding: data, as: UTF8.self), path: path)
    }

    /// What a stage after prepare runs with: the job's snapshot when there is one, else the file at
    /// `path`. The snapshot is found through the file's `[runner] state_dir`; when the file no longer
    /// parses, through a line-by-line reading of that one key (or its default).
    /// - Throws: `ConfigError` when there is no snapshot and the file does not load.
    public static func forJob(path: String, jobID: String) throws(ConfigError) -> AirlockConfig {
        // The file's state_dir alone (the whole file is parsed only when the job kept no copy): the
        // copy is what the stage runs with, and parsing the configuration twice cost every stage 1 ms.
        let stateDir = stateDirectory(path: path)
        // A copy that no longer parses (a later Airlock checks more) falls back to the file as it is.
        if let kept = (try? snapshot(state: JobStateStore.directory(stateDir: stateDir, jobID: jobID), path: path)) ?? nil { return kept }
        return try load(path: path)
    }

    /// Whether a job's state directory exists, found as `forJob` finds it.
    public static func jobStateExists(path: String, jobID: String) -> Bool {
        FileManager.default.fileExists(atPath: JobStateStore.directory(stateDir: stateDirectory(path: path), jobID: jobID))
    }

    /// `[runner] state_dir` of the file at `path`, as a full load reads it; when the file is not
    /// TOML, read line by line; else the default.
    static func stateDirectory(path: String) -> String {
        if let data = FileContents.read(path), let text = String(validating: data, as: UTF8.self),
           let found = TOMLCursor.string(in: text, table: "runner", key: "state_dir") {
            guard let v = found else { return RunnerSettings.defaultStateDir }
            if v.hasPrefix("/") && !v.split(separator: "/").contains("..") { return v.count > 1 && v.hasSuffix("/") ? String(v.dropLast()) : v }
        }
        return lenientStateDir(path: path) ?? RunnerSettings.defaultStateDir
    }

    /// `[runner] state_dir` read line by line, for a file that no longer parses as a whole.
    static func lenientStateDir(path: String) -> String? {
        guard let bytes = FileContents.read(path), let text = String(validating: bytes, as: UTF8.self) else { return nil }
        var inRunner = false
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("[") { inRunner = line.hasPrefix("[runner]"); continue }
            guard inRunner, line.hasPrefix("state_dir") else { continue }
            let parts = line.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) == "state_dir" else { continue }
            var v = parts[1].trimmingCharacters(in: .whitespaces)
            // A basic ("...") or literal ('...') TOML string.
            guard let quote = v.first, quote == "\"" || quote == "'", let end = v.dropFirst().firstIndex(of: quote) else { return nil }
            v = String(v[v.index(after: v.startIndex)..<end])
            return v.hasPrefix("/") && !v.split(separator: "/").contains("..") ? (v.count > 1 && v.hasSuffix("/") ? String(v.dropLast()) : v) : nil
        }
        return nil
    }
}

extension AirlockConfig {
    /// The providers this configuration defines, each knowing its profiles.
    public func credentialProviders(transport: any HTTPTransport) -> [String: any CredentialProvider] {
        ProviderKinds.providers(self.providers, profiles: profiles.mapValues { ($0.provider, $0.settings) }, transport: transport)
    }

    /// Job variables that hold ID tokens Airlock consumes (scrubbed and masked in every stage).
    public var consumedTokenVariables: [String] {
        guard let gitlab else { return [] }
        return [gitlab.tokenVariable] + providers.values.compactMap(\.audienceToken?.variable).sorted()
    }
}

/// `[issuer]`: Airlock as its own OIDC issuer (issue 17). Providers that trust it trust only jobs that
/// passed Airlock on these runners. Its documents are published with `airlock issuer publish`.
public struct AirlockIssuerSettings: Sendable {
    public static let defaultTokenLifetime = 300.0
    public static let maximumTokenLifetime = 900.0
    /// The issuer (`iss`), where `.well-known/openid-configuration` and `jwks.json` are served.
    public var url: String
    /// The key tokens are signed with now.
    public var signingKeyFile: String
    /// Keys still published during a rotation, so that tokens they signed stay verifiable.
    public var previousKeyFiles: [String]
    public var tokenLifetime: Double
    /// Every key the published JWKS must hold: the signing key first.
    public var keyFiles: [String] { [signingKeyFile] + previousKeyFiles }
}

extension AirlockConfig {
    static func parseIssuer(_ c: inout TOMLCursor) throws(ConfigError) -> AirlockIssuerSettings {
        let url = try c.requiredString("url", hint: "where its documents are served, e.g. \"https://airlock.example.com\"")
        guard TOMLCursor.isSecureURL(url), let u = URL(string: url), u.query == nil, u.fragment == nil else {
            throw c.error("url", "must be an https URL without query or fragment (http only on loopback, for tests), got \(url.quoted)")
        }
        let key = try c.requiredString("signing_key_file", hint: "a 0600 PEM private key, P-256 (ES256) or RSA of at least 2048 bits (RS256), e.g. \"/etc/airlock/issuer.pem\"")
        let previous = try c.stringArray("previous_key_files") ?? []
        for (k, p) in [("signing_key_file", key)] + previous.map({ ("previous_key_files", $0) }) {
            guard p.hasPrefix("/") else { throw c.error(k, "must be an absolute path, got \(p.quoted)") }
            guard let st = Files.status(p, follow: true) else {
                throw c.error(k, "\(p) does not exist: create it (openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \(p); chmod 600 \(p))")
            }
            guard st.mode & 0o077 == 0 else {
                throw c.error(k, "\(p) is readable by group or others (mode \(String(st.mode & 0o777, radix: 8))): it signs every job's identity; chmod 600 \(p)")
            }
        }
        if previous.contains(key) { throw c.error("previous_key_files", "lists the signing key itself (\(key))") }
        let lifetime = try c.duration("token_lifetime") ?? AirlockIssuerSettings.defaultTokenLifetime
        guard lifetime >= 60, lifetime <= AirlockIssuerSettings.maximumTokenLifetime else {
            throw c.error("token_lifetime", "must be between 1m and 15m: a token lives only for its exchange")
        }
        try c.finish()
        return AirlockIssuerSettings(url: url, signingKeyFile: key, previousKeyFiles: previous, tokenLifetime: lifetime)
    }
}
