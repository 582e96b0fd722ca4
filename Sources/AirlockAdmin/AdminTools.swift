import JobIsolation
public import AirlockCore
import ConfigSyntax
public import AirlockConfiguration
import Federation
public import Foundation
public import Identity
import Ledger
import Policy
import RunnerContract

/// `airlock explain`: a dry run of verification and policy, with no federation and no audit record.
public struct ExplainReport: Sendable, Codable {
    public struct RuleLine: Sendable, Codable {
        public var rule: String
        public var matched: Bool
        public var firstFailure: String?
        public var grants: [String]
        /// Where the rule is written: "team payments, /etc/airlock/policy.d/payments.toml:4", or the main file's line.
        public var origin: String?
    }
    /// "verified", "claims given (not verified)", or the rejection.
    public var verification: String
    /// True only for a token verified against GitLab's keys (never for `--claims`).
    public var verified: Bool
    /// Whether the rules were evaluated (a verified token, or claims given); false for a rejection.
    public var evaluated: Bool
    public var rules: [RuleLine]
    public var profiles: [String]
    /// The configuration's warnings (rules on claims GitLab may never send, and others).
    public var warnings: [String] = []
    /// Team files left out, and why (their rules were not evaluated).
    public var policyProblems: [String] = []

    /// Human-readable lines.
    public var text: String {
        var out = warnings.map { "warning: \($0)" } + policyProblems.map { "left out: \($0)" } + ["verification: \(verification)"]
        for r in rules {
            let from = r.origin.map { " (\($0))" } ?? ""
            out.append(r.matched
                ? "rule \(r.rule.quoted)\(from): matched → \(r.grants.joined(separator: ", "))"
                : "rule \(r.rule.quoted)\(from): not matched: \(r.firstFailure ?? "")")
        }
        out.append("granted profiles: \(profiles.isEmpty ? "(none)" : profiles.joined(separator: ", "))")
        return out.joined(separator: "\n")
    }
}

/// A claim in an `explain --claims` file, as GitLab's token carries it: booleans and numbers become
/// GitLab's strings ("true", "42"), not Foundation's ("1").
enum ClaimValue: Decodable {
    case text(String)
    case list([String])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) { self = .text(s) }
        else if let b = try? c.decode(Bool.self) { self = .text(b ? "true" : "false") }
        else if let i = try? c.decode(Int.self) { self = .text(String(i)) }
        else if let l = try? c.decode([String].self) { self = .list(l) }
        else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "a claim must be a string, number, boolean or list of strings") }
    }
}

/// The admin tools' logic; the `airlock` CLI only parses arguments and prints.
public enum AdminTools {
    /// Explains what the policy decides for a token (verified against the live JWKS) or a claims file.
    /// - Throws: `ConfigError` or an unreadable claims file.
    public static func explain(config: AirlockConfig, token: String?, claimsJSON: Data?, transport: any HTTPTransport, now: Date = Date()) async throws -> ExplainReport {
        var verification: String
        var job: VerifiedJob?
        if let claimsJSON {
            guard let obj = try? JSONDecoder().decode([String: ClaimValue].self, from: claimsJSON) else {
                throw AirlockFailure(.system, "the claims file must hold a JSON object of claims (strings, numbers, booleans or lists of strings)")
            }
            var strings: [String: String] = [:]
            var lists: [String: [String]] = [:]
            for (k, v) in obj {
                switch v {
                case .text(let s): strings[k] = s
                case .list(let l): lists[k] = l
                }
            }
            job = VerifiedJob(claims: strings, listClaims: lists)
            verification = "claims given (not verified)"
        } else if let token {
            guard let gitlab = config.gitlab else { throw AirlockFailure(.system, "\(config.path) has no [gitlab] section to verify tokens with") }
            let store = config.jwksStore(gitlab, transport: transport)
            do {
                job = try await TokenVerifier(settings: gitlab, keys: store).verify(token, now: now)
                verification = "verified (issuer \(gitlab.issuer), audience \(gitlab.audience))"
            } catch {
                verification = "REJECTED: \(error)"
            }
        } else {
            throw AirlockFailure(.system, "give --token-file FILE (or - for stdin) or --claims FILE.json")
        }
        let problems = config.policyProblems.map(\.description)
        guard let job else {
            return ExplainReport(verification: verification, verified: false, evaluated: false, rules: [], profiles: [], warnings: config.warnings, policyProblems: problems)
        }
        let d = config.policy.evaluate(job)
        return ExplainReport(
            verification: verification, verified: claimsJSON == nil, evaluated: true,
            rules: d.evaluations.map { .init(rule: $0.rule, matched: $0.matched, firstFailure: $0.failure, grants: $0.grants, origin: $0.origin?.description) },
            profiles: d.grants.map(\.profile), warnings: config.warnings, policyProblems: problems)
    }

    /// `airlock check`: every problem a platform engineer should fix before rollout.
    /// Returns (problems, notes); a non-empty problems list means exit non-zero.
    public static func check(configPath: String, binDir: String? = nil, transport makeTransport: TransportFactory, now: Date = Date()) async -> (problems: [String], notes: [String]) {
        let config: AirlockConfig
        do {
            config = try AirlockConfig.load(path: configPath)
        } catch {
            // Every problem the parser can find, not only the first.
            guard let text = try? String(contentsOfFile: configPath, encoding: .utf8) else { return (["\(error)"], []) }
            let all = AirlockConfig.allProblems(text, path: configPath)
            return (all.isEmpty ? ["\(error)"] : all, [])
        }
        var early: [String] = []
        var notes0: [String] = []
        early += directoryProblems(config.runner, notes: &notes0)
        early += executableProblems(config, binDir: binDir ?? Self.ownDirectory)
        var problems: [String] = early
        var notes: [String] = config.warnings.map { "warning: \($0)" } + notes0
        if config.runner.isolation == .bubblewrap {
            do { try Sandboxing.requireBubblewrap(config.runner) } catch { problems.append(error.message) }
            problems += tenantProblems(config.runner, notes: &notes)
        }
        problems += await referencedFileProblems(config, notes: &notes)
        for (what, dir) in [("state_dir", config.runner.stateDir), ("builds_root", config.runner.buildsRoot),
                            ("audit_log's directory", (config.runner.auditLog as NSString).deletingLastPathComponent)] {
            var d = dir
            while !FileManager.default.fileExists(atPath: d) { d = (d as NSString).deletingLastPathComponent }
            if !FileManager.default.isWritableFile(atPath: d) { problems.append("[runner] \(what) \(dir) is not writable by this user (nearest existing: \(d))") }
        }
        if let gitlab = config.gitlab {
            let store = config.jwksStore(gitlab, transport: makeTransport())
            do {
                let set = gitlab.jwksFile == nil ? try await store.fetchNow(now: now) : try await store.current(now: now)
                notes.append("GitLab keys: \(set.keys.count) from \(set.source)")
                if set.keys.isEmpty { problems.append("the JWKS at \(set.source) has no keys") }
            } catch {
                problems.append("cannot fetch GitLab's keys for \(gitlab.issuer): \(error)")
            }
        } else {
            notes.append("no [gitlab] section: jobs run sandboxed with no credentials")
        }
        if let issuer = config.issuer {
            problems += await IssuerTools.problems(issuer, transport: makeTransport(), notes: &notes)
            if let key = try? IssuerKey.load(path: issuer.signingKeyFile) {
                problems += config.providers.values.sorted { $0.name < $1.name }.compactMap { $0.refusesSignatures(key.algorithm.rawValue) }
            }
            for spec in config.providers.values.sorted(by: { $0.name < $1.name }) where spec.identity.isAirlock {
                let audiences = Set(config.profiles.values.filter { $0.provider == spec.name }.compactMap { spec.airlockAudience(for: $0.settings) }).sorted()
                notes.append("[providers.\(spec.name)] is shown Airlock's identity, not GitLab's (aud \(audiences.isEmpty ? "none: no profile" : audiences.joined(separator: ", ")))")
            }
        }
        problems += config.policyProblems.map { "[policy] \($0)" }
        if !config.delegations.isEmpty {
            notes.append("\(config.delegations.count) delegation(s): " + config.delegations.map { d in
                "\(d.team) (\(d.scope); \(config.policy.rules.filter { $0.origin?.team == d.team }.count) rule(s) in effect)"
            }.joined(separator: ", "))
        }
        notes.append("\(config.policy.rules.count) rule(s), \(config.profiles.count) profile(s), \(config.providers.count) provider(s)")
        return (problems, notes)
    }
}

extension AdminTools {
    /// The directory this executable is in: where the executor's other executables must be too.
    static var ownDirectory: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (exe as NSString).deletingLastPathComponent
    }

    /// Issue 14: the directories Airlock keeps state, secrets, jobs' files and the audit in. One that
    /// exists must belong to this user and let no one else write (state_dir and secrets_root: no one
    /// else read either); one that does not is made by the first job, if its parent allows.
    static func directoryProblems(_ r: RunnerSettings, notes: inout [String]) -> [String] {
        var problems: [String] = []
        // With bubblewrap Airlock runs as root (prepare refuses otherwise): expect root's, even when an
        // admin runs check without sudo (advising a chown to their own uid would open the ledgers).
        let me: uid_t = r.isolation == .bubblewrap ? 0 : geteuid()
        let group: gid_t = r.isolation == .bubblewrap ? 0 : getegid()
        let dirs: [(key: String, path: String, secret: Bool)] = [
            ("state_dir", r.stateDir, true), ("secrets_root", r.secretsRoot, false), ("builds_root", r.buildsRoot, false),
            ("cache_root", r.cacheRoot, false), ("homes_root", r.homesRoot, false),
            ("audit_log's directory", (r.auditLog as NSString).deletingLastPathComponent, false),
        ]
        var missing: [String] = []
        for d in dirs {
            guard let st = Files.status(d.path) else { missing.append(d.key); continue }
            let mode = st.permissions
            if !st.isDirectory {
                problems.append("[runner] \(d.key) \(d.path) is not a directory (a symlink or a file): remove it, and Airlock makes the directory")
                continue
            }
            if st.uid != me {
                problems.append("[runner] \(d.key) \(d.path) belongs to uid \(st.uid), not to Airlock's user (\(me)): chown \(me):\(group) \(d.path)")
            }
            if d.secret && mode & 0o077 != 0 {
                problems.append("[runner] \(d.key) \(d.path) is open to group or others (mode \(String(mode, radix: 8))): jobs' ledgers and credentials are there; chmod 700 \(d.path)")
            } else if mode & 0o002 != 0 || (mode & 0o020 != 0 && d.key != "audit_log's directory") {
                // (The audit log's directory may be a shared one like Debian's /var/log, root:syslog
                // 0775; only others' write access matters there, its file is checked below.)
                problems.append("[runner] \(d.key) \(d.path) is writable by group or others (mode \(String(mode, radix: 8))): chmod go-w \(d.path)")
            }
        }
        if !missing.isEmpty { notes.append("not there yet, made by the first job: \(missing.joined(separator: ", "))") }
        if let audit = Files.status(r.auditLog), audit.mode & 0o022 != 0 {
            problems.append("[runner] audit_log \(r.auditLog) is writable by group or others (mode \(String(audit.mode & 0o777, radix: 8))): chmod 600 \(r.auditLog)")
        }
        return problems
    }

    /// The executables the runner's config.toml names, airlock-federate (prepare and cleanup hand a
    /// job with an ID token or credentials to it), and airlock-endpoint when a profile delivers
    /// through it: each must be installed beside this one (prepare starts the endpoint from there).
    static func executableProblems(_ config: AirlockConfig, binDir: String) -> [String] {
        var needed = ["airlock-config", "airlock-prepare", "airlock-run", "airlock-cleanup", "airlock-federate"]
        let endpointProfiles = config.profiles.values.filter { $0.deliver == .endpoint }.map(\.name).sorted()
        if !endpointProfiles.isEmpty { needed.append("airlock-endpoint") }
        return needed.filter { !FileManager.default.isExecutableFile(atPath: "\(binDir)/\($0)") }.map { name in
            let why = name == "airlock-endpoint" ? "profiles \(endpointProfiles.joined(separator: ", ")) deliver through it"
                : name == "airlock-federate" ? "airlock-prepare and airlock-cleanup hand every job with an ID token or credentials to it"
                : "the runner's config.toml runs it"
            return "\(name) is not installed in \(binDir) (\(why)): install it beside airlock, e.g. install -m 0755 \(name) \(binDir)/"
        }
    }

    /// What makes a job a tenant (issue 11): root to hand out uids, a uid range nobody else
    /// uses, and the nftables rules (installed here as prepare would, then verified).
    static func tenantProblems(_ r: RunnerSettings, notes: inout [String]) -> [String] {
        var problems: [String] = []
        do { try Sandboxing.requireRoot(r) } catch { problems.append(error.message) }
        problems += uidRangeProblems(r.jobUIDs)
        notes.append("job uids \(r.jobUIDs.lowerBound)-\(r.jobUIDs.upperBound): up to \(r.jobUIDs.count) concurrent jobs")
        if r.blockMetadata {
            do {
                try NetworkGuard.install(r)
                let missing = NetworkGuard.verify(r)
                problems += missing
                if missing.isEmpty { notes.append("nftables: table inet \(NetworkGuard.table) blocks the metadata services for job uids and guards endpoint ports") }
            } catch {
                problems.append("cannot enforce the metadata block: \(error.message); install nftables and run as root, or set [runner] block_metadata = false (weaker)")
            }
        }
        return problems
    }

    /// A job uid that is also a login user's, a group's, or inside a subordinate-uid range would let a
    /// job share files or processes with it.
    static func uidRangeProblems(_ range: ClosedRange<UInt32>) -> [String] {
        var problems: [String] = []
        for (file, kind) in [("/etc/passwd", "user"), ("/etc/group", "group")] {
            let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") {
                let f = line.split(separator: ":", omittingEmptySubsequences: false)
                if f.count > 2, let id = UInt32(f[2]), range.contains(id) {
                    problems.append("[runner] job_uids \(range.lowerBound)-\(range.upperBound) contains \(kind) \(f[0]) (\(id)) from \(file): pick a range nobody uses")
                }
            }
        }
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") {
                let f = line.split(separator: ":")
                guard f.count == 3, let start = UInt32(f[1]), let count = UInt32(f[2]), count > 0 else { continue }
                let end = start &+ (count - 1)
                if start <= range.upperBound && range.lowerBound <= end {
                    problems.append("[runner] job_uids \(range.lowerBound)-\(range.upperBound) overlaps \(f[0])'s subordinate range \(start)-\(end) in \(file): pick a range nobody uses")
                }
            }
        }
        return problems
    }

    /// Each file the config names: present, readable by Airlock, not readable by others, a valid key
    /// where it is one, and outside every directory a job can see or write.
    static func referencedFileProblems(_ config: AirlockConfig, notes: inout [String]) async -> [String] {
        var problems: [String] = []
        let r = config.runner
        let jobVisible = [r.buildsRoot, r.cacheRoot, r.homesRoot, "/tmp", "/dev/shm"]
        for (key, path) in config.referencedFiles {
            if let root = jobVisible.first(where: { path.hasPrefix($0 + "/") }) {
                problems.append("\(key) \(path) is inside \(root), where jobs can see or write: move it (e.g. to /etc/airlock, 0600)")
            }
            guard let st = Files.status(path, follow: true) else {
                if key != "the configuration" { problems.append("\(key) \(path) does not exist: jobs granted a profile that needs it would fail") }
                continue
            }
            guard access(path, R_OK) == 0 else { problems.append("\(key) \(path) is not readable by this user"); continue }
            let exposed = st.mode & 0o077 != 0
            if key == "the configuration" {
                // The sandbox covers the file with /dev/null, but an editor's save (write a copy, rename
                // it over) replaces the file under a running job's mount: only its mode keeps it root's.
                if exposed { problems.append("the configuration \(path) is readable or writable by group or others (mode \(String(st.mode & 0o777, radix: 8))): chmod 600 it") }
                continue
            }
            // A provider's own secret file (a client key): not exposed, and usable as the provider says.
            if let settings = config.providers.values.map(\.settings).first(where: { $0.secretFiles.contains { $0.path == path } }) {
                if exposed { problems.append("\(key) \(path) is readable by group or others (mode \(String(st.mode & 0o777, radix: 8))): chmod 600 it") }
                switch await settings.checkSecretFile(path) {
                case .success(let what): notes.append("\(key): \(what)")
                case .failure(let p): problems.append("\(key) \(path) \(p.message)")
                }
            }
        }
        return problems
    }

    /// `airlock sweep`: revokes the ledgers of jobs that never got their cleanup (runner crash,
    /// host reboot) once they are older than their job timeout plus `[runner] sweep_grace`, and
    /// removes their state. Returns one line per job looked at.
    public static func sweep(config: AirlockConfig, transport: any HTTPTransport, now: Date = Date(), force: Bool = false) async -> [String] {
        let store = JobStateStore(root: config.runner.stateDir)
        var lines: [String] = []
        for id in store.jobIDs() {
            let dir = store.directory(jobID: id)
            guard let record = JobRecord.load(state: dir) else {
                // prepare died before writing its record: nothing was issued (the ledger comes after).
                let age = ((try? FileManager.default.attributesOfItem(atPath: dir))?[.modificationDate] as? Date).map { now.timeIntervalSince($0) } ?? 0
                if force || age > config.runner.sweepGrace {
                    try? store.remove(jobID: id)
                    lines.append("job \(id): no job record, removed")
                }
                continue
            }
            let due = record.preparedAt.addingTimeInterval(Double(record.job.jobTimeoutSeconds) + config.runner.sweepGrace)
            guard force || now >= due else {
                lines.append("job \(id): still within its timeout + grace (until \(ISO8601DateFormatter().string(from: due))), left alone")
                continue
            }
            // Revoked with the providers the job was prepared with (one since removed is still there).
            let jobConfig = ((try? AirlockConfig.snapshot(state: dir, path: config.path)) ?? nil) ?? config
            let failed = await Revoker.settleJob(config: jobConfig, job: record.job, paths: record.paths, state: dir, reason: "sweep", transport: transport)
            try? AuditLog(path: config.runner.auditLog).append(SweptRecord(subject: Audit.identity(record.job), outcome: failed == 0 ? "settled" : "revoke_failed"))
            lines.append("job \(id): " + (failed == 0 ? "ledger settled, state removed" : "\(failed) credential(s) could not be revoked, kept"))
        }
        return lines
    }
}

/// Issue 14: `airlock explain --replay AUDIT_LOG`: the policy of a (new) configuration applied to the
/// jobs the audit log recorded a decision for, before it goes live: which would gain or lose what.
public struct ReplayLine: Sendable, Encodable {
    public var jobID: String
    public var project: String
    public var ref: String
    /// The profiles the job got when it ran, and what this configuration would give it.
    public var before: [String]
    public var after: [String]
    public var gained: [String] { after.filter { !before.contains($0) } }
    public var lost: [String] { before.filter { !after.contains($0) } }

    enum CodingKeys: String, CodingKey { case jobID = "job_id", project, ref, before, after, gained, lost }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(jobID, forKey: .jobID)
        try c.encode(project, forKey: .project)
        try c.encode(ref, forKey: .ref)
        try c.encode(before, forKey: .before)
        try c.encode(after, forKey: .after)
        try c.encode(gained, forKey: .gained)
        try c.encode(lost, forKey: .lost)
    }
}

extension AdminTools {
    /// The claims a decision record carries (Authorizer.identity); `token_jti` is the token's `jti`.
    static let recordedClaims: Set<String> = ["job_id", "pipeline_id", "project_id", "project_path", "namespace_id", "ref", "ref_type",
                                              "ref_protected", "environment", "environment_protected", "pipeline_source", "user_login",
                                              "sha", "runner_id", "jti", "sub"]

    /// Claims the policy's rules test that decision records do not carry: a replay cannot tell for those.
    public static func unreplayableClaims(_ config: AirlockConfig) -> [String] {
        Array(Set(config.policy.rules.flatMap { $0.conditions.map(\.claim) }).subtracting(recordedClaims)).sorted()
    }

    /// Each job with a policy decision in `auditLog` (its last one, for a retried prepare), with the
    /// profiles it got and the ones `config` would give it (narrowed to AIRLOCK_PROFILES as it was).
    public static func replay(config: AirlockConfig, auditLog: String) -> [ReplayLine] {
        let text = (try? String(contentsOfFile: auditLog, encoding: .utf8)) ?? ""
        var last: [String: [String: Any]] = [:]
        var order: [String] = []
        for line in text.split(separator: "\n") {
            guard let r = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  r["event"] as? String == "decision", let job = r["job_id"] as? String else { continue }
            // Only decisions the policy made (a verified token): not rejected tokens, no token, errors.
            let decision = r["decision"] as? String ?? ""
            guard decision == "granted" || decision == "no_grant" || r["reason"] as? String == "profile_not_granted" else { continue }
            if last[job] == nil { order.append(job) }
            last[job] = r
        }
        return order.compactMap { id -> ReplayLine? in
            guard let r = last[id] else { return nil }
            var claims: [String: String] = [:]
            for (k, v) in r {
                let claim = k == "token_jti" ? "jti" : k
                if recordedClaims.contains(claim), let s = v as? String { claims[claim] = s }
            }
            let d = config.policy.evaluate(VerifiedJob(claims: claims))
            var after = d.grants.map(\.profile)
            if let requested = r["requested_profiles"] as? [String], !requested.isEmpty {
                after = ((try? config.policy.narrow(d, to: requested)) ?? []).map(\.profile)
            }
            return ReplayLine(jobID: id, project: claims["project_path"] ?? "?", ref: claims["ref"] ?? "?",
                              before: (r["profiles"] as? [String] ?? []).sorted(), after: after.sorted())
        }
    }
}
