public import AirlockConfiguration
import Delivery
public import Federation
import Foundation
public import Identity
import Ledger
import Policy
public import RunnerContract
#if canImport(Glibc)
import Glibc
#endif

/// What the credential server of one job needs, written by prepare into the job's 0700 state as a
/// 0600 file: the job's own random secret (every request must carry it), the ID tokens to federate
/// again with, and the verified claims for templates. Never in a job's reach.
public struct EndpointSession: Codable, Sendable {
    public static let file = JobStateStore.File.endpointSession
    public static let serverFile = JobStateStore.File.endpointServer

    public var secret: String
    public var idToken: String
    public var providerTokens: [String: String]
    public var verified: VerifiedJob
    public var profiles: [String]
    public var jobTimeoutSeconds: Int

    public static func load(state: String) -> EndpointSession? {
        guard let d = FileManager.default.contents(atPath: "\(state)/\(file)") else { return nil }
        return try? JSONDecoder().decode(EndpointSession.self, from: d)
    }

    /// 32 random bytes, hex.
    static func newSecret() -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &g)) }.joined()
    }
}

/// Where a job's credential server listens.
public struct EndpointServerInfo: Codable, Sendable {
    public var pid: Int32
    public var port: Int
    public init(pid: Int32, port: Int) {
        self.pid = pid
        self.port = port
    }
    public static func load(state: String) -> EndpointServerInfo? {
        guard let d = FileManager.default.contents(atPath: "\(state)/\(EndpointSession.serverFile)") else { return nil }
        return try? JSONDecoder().decode(EndpointServerInfo.self, from: d)
    }
}

/// Starting and stopping a job's credential server (`airlock-endpoint`, next to the stage executables).
public enum EndpointProcess {
    /// What the server needs to take its own port rule down when it exits because its job's state
    /// is gone (removed by hand, or a cleanup that found no record): the job's uid, read at start.
    public static func ownerUID(state: String) -> UInt32? { Stages.loadRecord(state: state)?.paths.uid }

    /// Removes the job's endpoint elements from the nftables table (absent ones are fine).
    public static func removeRule(config: AirlockConfig, port: Int, uid: UInt32?) {
        guard let uid, config.runner.blockMetadata else { return }
        NetworkGuard.removeEndpoint(config.runner, port: port, uid: uid)
    }

    /// Starts the server, detached in its own session, and waits until it reports its port.
    /// - Throws: `AirlockFailure` (system) when it cannot be started or does not come up.
    static func start(config: AirlockConfig, state: String, timeout: Double = 15) throws(AirlockFailure) -> EndpointServerInfo {
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("airlock-endpoint").path
        let binary = FileManager.default.isExecutableFile(atPath: exe) ? exe
            : ProcessInfo.processInfo.environment["AIRLOCK_ENDPOINT_BINARY"] ?? exe
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw AirlockFailure(.system, "deliver = \"endpoint\" needs \(binary): install airlock-endpoint next to airlock-prepare")
        }
        unlink("\(state)/\(EndpointSession.serverFile)")
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, 0x80)  // POSIX_SPAWN_SETSID (glibc): its own session, out of the runner's process group
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "\(state)/endpoint.log", O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = [binary, "--config", config.path, "--state", state]
        let cargv = argv.map { strdup($0) } + [nil]
        defer { cargv.forEach { free($0) } }
        let env: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), nil]
        defer { env.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, binary, &actions, &attr, cargv, env)
        guard rc == 0 else { throw AirlockFailure(.system, "cannot start \(binary): \(String(cString: strerror(rc)))") }
        let until = Date().addingTimeInterval(timeout)
        while Date() < until {
            if let info = EndpointServerInfo.load(state: state), info.pid == pid { return info }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                let log = (try? String(contentsOfFile: "\(state)/endpoint.log", encoding: .utf8)) ?? ""
                throw AirlockFailure(.system, "the credential server exited at start: \(log.suffix(400))")
            }
            usleep(20_000)
        }
        kill(pid, SIGKILL)
        throw AirlockFailure(.system, "the credential server did not come up within \(Int(timeout)) s")
    }

    /// Stops the job's server if it runs (checked by its command line, so a reused pid is spared).
    public static func stop(state: String) {
        guard let info = EndpointServerInfo.load(state: state) else { return }
        let cmdline = (FileManager.default.contents(atPath: "/proc/\(info.pid)/cmdline")).map { String(decoding: $0, as: UTF8.self) } ?? ""
        guard cmdline.contains("airlock-endpoint"), cmdline.contains(state) else { return }
        kill(info.pid, SIGTERM)
        for _ in 0..<100 {
            if kill(info.pid, 0) != 0 { break }
            var status: Int32 = 0
            _ = waitpid(info.pid, &status, WNOHANG)
            usleep(20_000)
        }
        if kill(info.pid, 0) == 0 { kill(info.pid, SIGKILL) }
        unlink("\(state)/\(EndpointSession.serverFile)")
    }
}

/// The credentials a job's server hands out, kept fresh: a credential with less than
/// `minValidity` left is replaced by federating again with the job's ID token. Concurrent requests
/// share one exchange. Each new credential is in the ledger (and so masked in the job log) before it
/// is served; the one it replaces is then revoked where the provider can.
public actor CredentialBroker {
    let config: AirlockConfig
    let session: EndpointSession
    let ledger: JobLedger
    let providers: [String: any CredentialProvider]
    let identity: [String: JSONValue]
    let minValidity: Double
    private var current: [String: IssuedCredential] = [:]
    private var inflight: [String: Task<IssuedCredential, any Error>] = [:]
    public private(set) var federations = 0

    public init(config: AirlockConfig, state: String, session: EndpointSession, job: JobContext, transport: any HTTPTransport) throws {
        self.config = config
        self.session = session
        ledger = JobLedger(stateDirectory: state)
        providers = Federator.providers(config: config, transport: transport)
        identity = Authorizer.identity(session.verified, job: job)
        minValidity = config.runner.endpointMinValidity
        for e in try ledger.entries() where e.state == .issued && session.profiles.contains(e.credential.profile) {
            current[e.credential.profile] = e.credential
        }
    }

    /// Whether a credential should be replaced: too little validity left, unless just issued (so that
    /// a lifetime shorter than `minValidity` does not federate on every request).
    nonisolated func stale(_ c: IssuedCredential, issuedAt: Date?, now: Date) -> Bool {
        let left = c.expiresAt.timeIntervalSince(now)
        if left <= 1 { return true }
        guard left < minValidity else { return false }
        let age = issuedAt.map { now.timeIntervalSince($0) } ?? .infinity
        return age > min(60, minValidity / 4)
    }

    private var issuedAt: [String: Date] = [:]

    /// The profile's credential, fresh.
    public func credential(_ profile: String) async throws -> IssuedCredential {
        guard session.profiles.contains(profile) else {
            throw AirlockFailure(.job, "profile \(profile) is not served to this job")
        }
        if let c = current[profile], !stale(c, issuedAt: issuedAt[profile], now: Date()) { return c }
        if let t = inflight[profile] { return try await t.value }
        let old = current[profile]
        let task = Task { try await self.refresh(profile, replacing: old) }
        inflight[profile] = task
        defer { inflight[profile] = nil }
        let c = try await task.value
        current[profile] = c
        issuedAt[profile] = Date()
        return c
    }

    private func refresh(_ profile: String, replacing old: IssuedCredential?) async throws -> IssuedCredential {
        guard let spec = config.profiles[profile], let provider = providers[spec.provider] else {
            throw AirlockFailure(.system, "profile \(profile) has no provider")
        }
        federations += 1
        let now = Date()
        let request = IssueRequest(profile: profile, job: session.verified, idToken: session.providerTokens[spec.provider] ?? session.idToken,
                                   jobTimeoutSeconds: session.jobTimeoutSeconds, now: now, deadline: now.addingTimeInterval(config.runner.federationTimeout))
        let audit = AuditLog(path: config.runner.auditLog)
        let c: IssuedCredential
        do {
            c = try await provider.issue(request)
        } catch {
            var f = identity
            f["profile"] = .string(profile)
            f["reason"] = .string("refresh")
            f["provider"] = .string(spec.provider)
            if let fe = error as? FederationError { f["code"] = .string(fe.code) }
            f["detail"] = .string("\(error)")
            try? audit.append(event: "federation_failed", f)
            throw error
        }
        // Ledger first: the run stage masks it from there before the job can print it.
        do {
            try ledger.record(c, at: Date())
        } catch {
            _ = try? await provider.revoke(c, now: Date())
            throw error
        }
        var f = identity
        f.merge(Federator.issuedFields(c)) { $1 }
        f["reason"] = .string("refresh")
        f["duration_ms"] = .string(String(Int((Date().timeIntervalSince(now) * 1000).rounded())))
        try? audit.append(event: "issued", f)
        if let old {
            _ = await Revoker.revoke(old, provider: provider, ledger: ledger, audit: audit, identity: identity, reason: "refreshed", now: Date())
        }
        return c
    }

    /// Counts a refused request (wrong secret, ungranted resource, rate limit). The audit log gets
    /// one `endpoint_refused` line per reason and minute with the count, never a line per request:
    /// a flood cannot fill the disk or drown the log. `detail` names a route or resource, never a secret.
    public nonisolated func refused(_ reason: String, _ detail: String) {
        for (minute, counts) in refusals.add(reason, detail, now: Date()) { writeRefusals(minute, counts) }
    }

    /// Writes the counts not yet in the audit log (the server stops, or a minute passed).
    public nonisolated func flushRefusals() {
        for (minute, counts) in refusals.drain() { writeRefusals(minute, counts) }
    }

    private nonisolated func writeRefusals(_ minute: Date, _ counts: [String: (count: Int, detail: String)]) {
        let audit = AuditLog(path: config.runner.auditLog)
        for (reason, c) in counts.sorted(by: { $0.key < $1.key }) {
            var f = identity
            f["reason"] = .string(reason)
            f["count"] = .int(c.count)
            f["minute"] = .string(ISO8601.format(minute))
            f["detail"] = .string(c.detail)
            try? audit.append(event: "endpoint_refused", f)
        }
    }

    /// The profile spec (for scopes, service account...).
    public nonisolated func spec(_ profile: String) -> ProfileSpec? { config.profiles[profile] }
    public nonisolated var servedProfiles: [String] { session.profiles }
    public nonisolated var secret: String { session.secret }
    private let counter = RequestCounter()
    private let refusals = RefusalCounter()
    public nonisolated func countRequest() { counter.add() }
    public nonisolated var requestCount: Int { counter.value }
}

extension Stages {
    /// Prepare's part for `deliver = "endpoint"`: the session file and the server.
    static func startEndpoint(config: AirlockConfig, paths: JobPaths, job: JobContext, auth: Authorization) throws(AirlockFailure) {
        let served = auth.grants.map(\.profile).filter { config.profiles[$0]?.deliver == .endpoint }.sorted()
        guard !served.isEmpty, let verified = auth.verified, let token = auth.token else { return }
        let session = EndpointSession(secret: EndpointSession.newSecret(), idToken: token.value,
                                      providerTokens: auth.providerTokens.mapValues(\.value), verified: verified,
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

/// Refusals counted per reason within the current minute; a new minute hands back the last one's.
final class RefusalCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var minute: Date?
    private var counts: [String: (count: Int, detail: String)] = [:]

    func add(_ reason: String, _ detail: String, now: Date) -> [(Date, [String: (count: Int, detail: String)])] {
        let m = Date(timeIntervalSince1970: (now.timeIntervalSince1970 / 60).rounded(.down) * 60)
        return lock.withLock {
            var out: [(Date, [String: (count: Int, detail: String)])] = []
            if let cur = minute, cur != m, !counts.isEmpty { out.append((cur, counts)); counts = [:] }
            minute = m
            counts[reason] = ((counts[reason]?.count ?? 0) + 1, counts[reason]?.detail ?? detail)
            return out
        }
    }

    func drain() -> [(Date, [String: (count: Int, detail: String)])] {
        lock.withLock {
            defer { counts = [:] }
            guard let m = minute, !counts.isEmpty else { return [] }
            return [(m, counts)]
        }
    }
}

final class RequestCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add() { lock.withLock { n += 1 } }
    var value: Int { lock.withLock { n } }
}
