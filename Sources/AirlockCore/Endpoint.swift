import JobIsolation
public import AirlockConfiguration
import Delivery
import Federation
import Foundation
public import Identity
import Ledger
import Policy
import RunnerContract
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

    package init(secret: String, idToken: String, providerTokens: [String: String], verified: VerifiedJob, profiles: [String], jobTimeoutSeconds: Int) {
        self.secret = secret
        self.idToken = idToken
        self.providerTokens = providerTokens
        self.verified = verified
        self.profiles = profiles
        self.jobTimeoutSeconds = jobTimeoutSeconds
    }

    public static func load(state: String) -> EndpointSession? {
        guard let d = FileContents.read("\(state)/\(file)").map({ Data($0) }) else { return nil }
        return try? JSONDecoder().decode(EndpointSession.self, from: d)
    }

    /// 32 random bytes, hex.
    static func newSecret() -> String {
        var g = SystemRandomNumberGenerator()
        return Fingerprint.hex((0..<32).map { _ in UInt8.random(in: 0...255, using: &g) })
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
        guard let d = FileContents.read("\(state)/\(EndpointSession.serverFile)").map({ Data($0) }) else { return nil }
        return try? JSONDecoder().decode(EndpointServerInfo.self, from: d)
    }
}

/// Starting and stopping a job's credential server (`airlock-endpoint`, next to the stage executables).
public enum EndpointProcess {
    /// What the server needs to take its own port rule down when it exits because its job's state
    /// is gone (removed by hand, or a cleanup that found no record): the job's uid, read at start.
    public static func ownerUID(state: String) -> UInt32? { JobRecord.load(state: state)?.paths.uid }

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
