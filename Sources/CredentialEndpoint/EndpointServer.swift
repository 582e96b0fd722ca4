public import AirlockConfiguration
public import AirlockCore
import Delivery
public import Federation
import Foundation
import Synchronization
import Ledger
import Logging
import HTTPTypes
public import Hummingbird
import HummingbirdCore
public import NIOCore
import RunnerContract
#if canImport(Glibc)
import Glibc
#endif

/// What the credential server serves: the job's credentials and secret. `CredentialBroker` is the
/// real one; tests give their own.
public protocol CredentialSource: Sendable {
    /// The job's secret, which every request must carry (or come from the job's own uid).
    var secret: String { get }
    var servedProfiles: [String] { get }
    /// The profile's configuration (scopes, service account, resource...).
    func spec(_ profile: String) -> ProfileSpec?
    /// The profile's credential, fresh.
    func credential(_ profile: String) async throws -> IssuedCredential
    /// The profile's credential if it is at hand and fresh, without waiting (nil: ask `credential`).
    func credentialAtHand(_ profile: String) -> IssuedCredential?
    /// Counts a refused request for the audit log (per reason and minute).
    func refused(_ reason: String, _ detail: String)
    func countRequest()
}

/// One job's credential server (Hummingbird 2), on 127.0.0.1 outside the sandbox, speaking the
/// endpoints the official SDKs already use (federation.md B1-B3):
/// - AWS container credentials: `GET /aws/<profile>`, `Authorization: <job secret>`.
/// - Azure App Service managed identity: `GET /azure?api-version=2019-08-01&resource=…`,
///   `X-IDENTITY-HEADER: <job secret>`; the resource must be one of the job's Azure profiles'.
/// - GCE metadata: `/computeMetadata/v1/…` with `Metadata-Flavor: Google` and the detection ping at
///   `/`, to a connection whose socket belongs to the job's own uid (the server looks the peer up
///   itself, whatever the firewall says); from anyone else, or for a job without a uid of its own,
///   only under `/<job secret>/` (google-auth cannot send a custom header, so the secret is then
///   part of GCE_METADATA_HOST).
/// The router sends each route through its own gate (`SecretGate`: the secret where that route's
/// SDK carries it, or the job's own uid for metadata at the root; then the rate limit). Anything
/// without the job's secret gets 401 before it touches the rate limit, counted in the audit log per
/// reason and minute. The server logs request kinds and statuses, never a credential.
public struct EndpointServer: Sendable {
    let source: any CredentialSource
    let limiter: RateLimiter
    /// The last AWS answer per profile, kept with the id of the credential it carries: the same
    /// credential is served as the same bytes until the broker replaces it (issue 19: encoding and
    /// the date on every request cost the answer its lead over a minimal server).
    let answers = AnswerCache()
    var secret: String { source.secret }
    /// The job's own uid (sandboxed jobs): its connections may ask GCE metadata without the secret.
    let ownerUID: UInt32?
    /// Who owns the client's socket (`LoopbackPeer` from the connection's ports by default).
    let peerUID: @Sendable (EndpointContext) -> UInt32?

    public init(source: any CredentialSource, requestsPerSecond: Double, ownerUID: UInt32? = nil,
                peerUID: (@Sendable (EndpointContext) -> UInt32?)? = nil) {
        self.source = source
        self.ownerUID = ownerUID
        self.peerUID = peerUID ?? { context in
            guard let client = context.remoteAddress?.port, let local = context.localPort else { return nil }
            return LoopbackPeer.uid(clientPort: client, serverPort: local)
        }
        limiter = RateLimiter(rate: requestsPerSecond, burst: requestsPerSecond * 2)
    }

    /// The routes, each behind the gate its SDK's way of carrying the secret needs.
    public func router() -> Router<EndpointContext> {
        let router = Router(context: EndpointContext.self)
        router.add(middleware: Intake(source: source))
        // AWS: the secret in Authorization (botocore: AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]).
        router.group("aws").add(middleware: SecretGate(server: self, kind: "aws") { request, _ in request.headers[.authorization] })
            .get(":profile") { request, context in try await self.aws(request, profile: context.parameters.require("profile")) }
        // Azure: the secret in X-IDENTITY-HEADER (azure-identity: IDENTITY_HEADER).
        router.group("azure").add(middleware: SecretGate(server: self, kind: "azure") { request, _ in request.headers[Self.identityHeader] })
            .get { request, _ in try await self.azure(request) }
        // GCE metadata under /<secret>/ (GCE_METADATA_HOST = 127.0.0.1:PORT/<secret>).
        let prefixed = router.group(":prefix").add(middleware: SecretGate(server: self, kind: "metadata") { _, context in context.parameters.get("prefix") })
        prefixed.get { request, context in try await self.google(request, rest: "") }
        prefixed.get("computeMetadata/**") { request, context in
            try await self.google(request, rest: String(request.uri.path.dropFirst(1 + (context.parameters.get("prefix")?.count ?? 0))))
        }
        // GCE metadata at the root, to the job's own uid only.
        let root = router.group().add(middleware: SecretGate(server: self, kind: "metadata", ownerMayAsk: true) { _, _ in nil })
        root.get { request, _ in try await self.google(request, rest: "") }
        root.get("computeMetadata/**") { request, _ in try await self.google(request, rest: request.uri.path) }
        return router
    }

    static func json(_ obj: Any, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])) ?? Data()
        return Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func json(_ obj: [String: JSONValue], status: HTTPResponse.Status = .ok) -> Response {
        let data = Data(JSONValue.compactJSON(obj).utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func text(_ s: String, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var h = headers
        h[.contentType] = "text/plain"
        return Response(status: status, headers: h, body: ResponseBody(byteBuffer: ByteBuffer(string: s)))
    }

    /// Constant-time comparison of the presented secret.
    static func same(_ a: String?, _ b: String) -> Bool {
        guard let a else { return false }
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var d: UInt8 = 0
        for i in 0..<x.count { d |= x[i] ^ y[i] }
        return d == 0
    }

    static let identityHeader = HTTPField.Name("X-IDENTITY-HEADER")!
    static let metadataFlavor = HTTPField.Name("Metadata-Flavor")!

    // MARK: AWS (federation.md B1)

    func aws(_ request: Request, profile: String) async throws -> Response {
        guard source.servedProfiles.contains(profile), source.spec(profile)?.settings(as: AWSRoleProfile.self) != nil else {
            source.refused("not_granted", "aws profile \(profile)")
            return Self.json(["message": "profile \(profile) is not an AWS profile served to this job"], status: .notFound)
        }
        let credential = try await source.fresh(profile)
        let body = answers.body(for: "aws/\(profile)", credential: credential.id) {
            (try? JSONSerialization.data(withJSONObject: AWSContainerCredentials.body(credential), options: [.sortedKeys])) ?? Data()
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }

    // MARK: Azure (federation.md B2)

    func azure(_ request: Request) async throws -> Response {
        let q = request.uri.queryParameters
        guard q["api-version"].map(String.init) == AzureManagedIdentity.apiVersion else {
            return Self.json(["statusCode": 400, "message": "api-version must be \(AzureManagedIdentity.apiVersion)"], status: .badRequest)
        }
        guard let resource = q["resource"].map({ String($0).removingPercentEncoding ?? String($0) }), !resource.isEmpty else {
            return Self.json(["statusCode": 400, "message": "resource is required"], status: .badRequest)
        }
        let wanted = AzureManagedIdentity.wanted(resource)
        let azureProfiles = source.servedProfiles.compactMap { p in source.spec(p)?.settings(as: AzureProfile.self).map { (name: p, profile: $0) } }
        guard let profile = AzureManagedIdentity.profile(serving: wanted, among: azureProfiles),
              let spec = source.spec(profile)?.settings(as: AzureProfile.self) else {
            source.refused("resource_not_granted", "azure resource \(wanted)")
            let granted = AzureManagedIdentity.granted(azureProfiles.map(\.profile))
            return Self.json(["statusCode": 400, "message": "resource \(wanted) is not granted to this job; granted: \(granted.joined(separator: ", "))"], status: .badRequest)
        }
        let client = q["client_id"].map(String.init)
        guard AzureManagedIdentity.clientAllowed(client, spec) else {
            source.refused("client_not_granted", "azure client_id \(client ?? "")")
            return Self.json(["statusCode": 400, "message": "client_id \(client ?? "") is not the identity granted to this job"], status: .badRequest)
        }
        return Self.json(AzureManagedIdentity.body(try await source.fresh(profile), resource: wanted, profile: spec))
    }

    // MARK: Google (federation.md B3)

    /// `rest`: the path below the secret prefix (or the whole path at the root).
    func google(_ request: Request, rest: String) async throws -> Response {
        let flavor: HTTPFields = [Self.metadataFlavor: "Google"]
        guard request.headers[Self.metadataFlavor] == "Google" else {
            return Self.text("Missing required header \"Metadata-Flavor\": \"Google\"", status: .forbidden, headers: flavor)
        }
        if rest == "" || rest == "/" { return Self.text("", headers: flavor) }
        guard let profile = source.servedProfiles.first(where: { source.spec($0)?.settings(as: GCPProfile.self) != nil }),
              let spec = source.spec(profile)?.settings(as: GCPProfile.self) else {
            return Self.text("not found", status: .notFound, headers: flavor)
        }
        let base = "/computeMetadata/v1/"
        guard rest.hasPrefix(base) else { return Self.text("not found", status: .notFound, headers: flavor) }
        func json(_ o: [String: JSONValue]) -> Response {
            var r = Self.json(o)
            r.headers[Self.metadataFlavor] = "Google"
            return r
        }
        switch GCEMetadata.answer(String(rest.dropFirst(base.count)), profile: spec) {
        case .text(let t): return Self.text(t, headers: flavor)
        case .json(let o): return json(o)
        case .token: return json(GCEMetadata.tokenBody(try await source.fresh(profile)))
        case .notFound: return Self.text("not found", status: .notFound, headers: flavor)
        }
    }
}

extension CredentialSource {
    public func credentialAtHand(_ profile: String) -> IssuedCredential? { nil }

    /// The credential at hand, or the one `credential` gets.
    func fresh(_ profile: String) async throws -> IssuedCredential {
        if let c = credentialAtHand(profile) { return c }
        return try await credential(profile)
    }
}

/// The endpoint's request context: the client's address and the server's port, for the peer check.
public struct EndpointContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    let localPort: Int?
    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        localPort = source.channel.localAddress?.port
    }
}

/// Every request: counted, its body bounded, and a failure to federate turned into the JSON answer
/// the SDKs read (the job's fault 400, the system's 503).
struct Intake: RouterMiddleware {
    typealias Context = EndpointContext
    let source: any CredentialSource

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        source.countRequest()
        if let length = request.headers[.contentLength].flatMap(Int.init), length > 1024 {
            return EndpointServer.json(["message": "request body too large"], status: .contentTooLarge)
        }
        do {
            return try await next(request, context)
        } catch let e as HTTPError {
            // The router's own: no such route (404, counted as a refusal so that probing shows in the
            // audit log), a path it cannot read (400).
            if e.status == .notFound { source.refused("no_route", "\(request.method)") }
            throw e
        } catch let e as any BlamedError {
            return EndpointServer.json(["message": "\(e)"], status: e.fault == .job ? .badRequest : .serviceUnavailable)
        } catch {
            return EndpointServer.json(["message": "\(error)"], status: .serviceUnavailable)
        }
    }
}

/// One route's gate: the job's secret where that route's SDK carries it (`presented`) or, for
/// metadata at the root (`ownerMayAsk`), a connection from the job's own uid; then the job's rate
/// limit. A request without the secret costs the job nothing: no token of its rate limit, no audit
/// line of its own (refusals are counted per minute).
struct SecretGate: RouterMiddleware {
    typealias Context = EndpointContext
    let server: EndpointServer
    /// The route, for the audit log (never a path that may hold a secret).
    let kind: String
    var ownerMayAsk = false
    let presented: @Sendable (Request, Context) -> String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let owner = ownerMayAsk && server.ownerUID != nil && server.peerUID(context) == server.ownerUID
        guard owner || EndpointServer.same(presented(request, context), server.secret) else {
            server.source.refused("bad_secret", kind)
            return EndpointServer.json(["message": "this endpoint serves one job; the request does not carry its secret"], status: .unauthorized)
        }
        guard server.limiter.allow() else {
            server.source.refused("rate_limited", kind)
            return EndpointServer.json(["message": "too many requests for this job's credential server"], status: .tooManyRequests)
        }
        return try await next(request, context)
    }
}

/// Who is on the other end of a loopback TCP connection: the uid that owns the client's socket, from
/// the kernel's socket table (`/proc/net/tcp`: the client's entry has local = 127.0.0.1:client port,
/// remote = 127.0.0.1:server port, and its owner's uid). The job shares the host's network namespace,
/// so its sockets are in this table.
enum LoopbackPeer {
    static func uid(clientPort: Int, serverPort: Int, table: String = "/proc/net/tcp") -> UInt32? {
        let fd = open(table, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let data = ChildProcess.readAll(fd)  // reads to the end (a /proc file has no size) and closes
        let local = "0100007F:" + hex(clientPort), remote = "0100007F:" + hex(serverPort)
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n").dropFirst() {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count > 7, f[1] == local, f[2] == remote else { continue }
            return UInt32(f[7])
        }
        return nil
    }

    static func hex(_ port: Int) -> String {
        let h = String(port, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - h.count)) + h
    }
}

/// Encoded answers per route, each valid for one credential id.
final class AnswerCache: @unchecked Sendable {
    private let lock = NSLock()
    private var answers: [String: (credential: String, body: Data)] = [:]

    func body(for route: String, credential: String, make: () -> Data) -> Data {
        if let a = lock.withLock({ answers[route] }), a.credential == credential { return a.body }
        let body = make()
        lock.withLock { answers[route] = (credential, body) }
        return body
    }
}

/// A token bucket: `rate` requests per second, `burst` at once. A lock, not an actor: the check is
/// a few instructions, and an actor made every request hop threads and back (issue 19, goal 3).
final class RateLimiter: Sendable {
    let rate: Double
    let burst: Double
    private let state: Mutex<(tokens: Double, last: Date)>

    init(rate: Double, burst: Double) {
        self.rate = rate
        self.burst = burst
        state = Mutex((burst, Date()))
    }

    func allow() -> Bool {
        let now = Date()
        return state.withLock { s in
            s.tokens = min(burst, s.tokens + now.timeIntervalSince(s.last) * rate)
            s.last = now
            guard s.tokens >= 1 else { return false }
            s.tokens -= 1
            return true
        }
    }
}

/// `airlock-endpoint --config FILE --state DIR`: serves one job until SIGTERM or its state is gone.
public enum EndpointMain {
    /// One audit line when the server stops: what it served and its peak memory.
    static func stopped(config: AirlockConfig, broker: CredentialBroker, job: JobContext) {
        broker.flushRefusals()
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let hwm = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }?.split(separator: " ").dropFirst().first.map(String.init) ?? "0"
        try? AuditLog(path: config.runner.auditLog).append(EndpointStoppedRecord(jobID: job.jobID, projectID: job.projectID,
                                                                                 requests: broker.requestCount, peakRSSKiB: hwm))
    }

    public static func run(transport: @escaping TransportFactory) async -> Int32 {
        let args = CommandLine.arguments
        func value(_ flag: String) -> String? { args.firstIndex(of: flag).flatMap { $0 + 1 < args.count ? args[$0 + 1] : nil } }
        guard let configPath = value("--config"), let state = value("--state") else {
            FileHandle.standardError.write(Data("usage: airlock-endpoint --config FILE --state JOB_STATE_DIR\n".utf8))
            return 2
        }
        do {
            // The job's own configuration, as it was when prepare started this server's job.
            let config = try AirlockConfig.snapshot(state: state, path: configPath) ?? AirlockConfig.load(path: configPath)
            try Executor.useHostFingerprintKey(config)
            guard let session = EndpointSession.load(state: state) else { throw AirlockFailure(.system, "no endpoint session in \(state)") }
            let job = try JobRecord.jobContext(state: state)
            let broker = try CredentialBroker(config: config, state: state, session: session, job: job, transport: transport())
            let ownerUID = EndpointProcess.ownerUID(state: state)
            let server = EndpointServer(source: broker, requestsPerSecond: config.runner.endpointRequestsPerSecond,
                                        ownerUID: config.runner.isolation == .bubblewrap ? ownerUID : nil)
            let listening = ListeningPort()
            let app = Application(
                router: server.router(),
                // A connection idle for 5 s is closed: a half-open or stalled client cannot hold one of
                // the 32 connections for long.
                server: .http1(configuration: .init(idleTimeout: .seconds(5))),
                configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "airlock-endpoint",
                                     availableConnectionsDelegate: MaximumAvailableConnections(32)),
                onServerRunning: { channel in
                    let port = channel.localAddress?.port ?? 0
                    listening.set(port)
                    let info = EndpointServerInfo(pid: getpid(), port: port)
                    if let data = try? JSONEncoder().encode(info) {
                        try? Files.writeAtomically(data, to: "\(state)/\(EndpointSession.serverFile)", mode: 0o600, durable: false)
                    }
                    print("airlock-endpoint: job \(job.jobID): listening on 127.0.0.1:\(port) for \(session.profiles.joined(separator: ", "))")
                    fflush(nil)
                },
                logger: { var l = Logger(label: "airlock-endpoint"); l.logLevel = .warning; return l }())
            // The job's state gone (cleanup, sweep): nothing left to serve.
            Thread.detachNewThread {
                while FileManager.default.fileExists(atPath: "\(state)/\(EndpointSession.file)") { Thread.sleep(forTimeInterval: 1) }
                print("airlock-endpoint: job \(job.jobID): state removed, exiting")
                // Cleanup and sweep remove the port's rule themselves; when the state went another way,
                // the server does, or the port's elements would stay in the table for good.
                EndpointProcess.removeRule(config: config, port: listening.value, uid: ownerUID)
                stopped(config: config, broker: broker, job: job)
                fflush(nil)
                exit(0)
            }
            try await app.runService()
            stopped(config: config, broker: broker, job: job)
            return 0
        } catch {
            FileHandle.standardError.write(Data("airlock-endpoint: \(error)\n".utf8))
            return 1
        }
    }
}

/// The port the server listens on, once it does (set from the server's callback, read at exit).
final class ListeningPort: Sendable {
    private let port = Mutex<Int>(0)
    func set(_ p: Int) { port.withLock { $0 = p } }
    var value: Int { port.withLock { $0 } }
}
