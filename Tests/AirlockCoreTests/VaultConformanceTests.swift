import AirlockTesting
import Federation
import Foundation
import HTTPClient
import Identity
import RunnerContract
import Testing

/// Vault against FakeVault, which follows federation.md A4.
struct VaultConformanceTests {
    static let audience = "https://airlock.test"

    static func setup() throws -> (TestIssuer, FakeVault, VaultProvider, IssueRequest) {
        let issuer = try TestIssuer()
        let vault = try FakeVault(issuer: issuer, namespace: "platform")
        vault.addRole("ci-42", .init(boundAudience: audience, boundClaims: ["project_id": "42"]))
        vault.putKV("kv/ci/42", ["api_key": "kv-secret-value-0123456789"])
        let provider = VaultProvider(name: "vault", address: URL(string: vault.address)!, authMount: "jwt", namespace: "platform", profiles: [
            "db": VaultProfile(role: "ci-{project_id}", secret: "database/creds/readonly", kv: "kv/ci/{project_id}",
                               env: ["DB_USER": "username", "DB_PASSWORD": "password", "API_KEY": "api_key"], token: true),
            "wrong-role": VaultProfile(role: "ci-nope", secret: "database/creds/readonly", kv: nil, env: ["U": "username"], token: false),
            "missing-field": VaultProfile(role: "ci-{project_id}", secret: "database/creds/readonly", kv: nil, env: ["U": "nope"], token: false),
        ], transport: URLSessionTransport())
        var job = SimulatedJob(script: [])
        job.jobID = 1001
        let token = issuer.mint(issuer.claims(for: job, audience: audience))
        let claims = VerifiedJob(claims: ["project_id": "42", "job_id": "1001"])
        let req = IssueRequest(profile: "db", job: claims, idToken: token, jobTimeoutSeconds: 1800, now: Date(), deadline: Date().addingTimeInterval(60))
        return (issuer, vault, provider, req)
    }

    @Test func lifecycle() async throws {
        let (issuer, vault, provider, req) = try Self.setup()
        defer { withExtendedLifetime(issuer) {} }
        let c = try await provider.issue(req)
        #expect(c.secrets["username"]?.hasPrefix("v-jwt-ci-") == true)
        #expect(c.secrets["api_key"] == "kv-secret-value-0123456789")
        #expect(c.secrets["token"]?.hasPrefix("hvs.") == true)
        let accessor = try #require(c.details["accessor"])
        #expect(!c.details.values.contains { $0.hasPrefix("hvs.") })  // the audit gets the accessor, never a token
        #expect(vault.isLive(accessor: accessor))
        #expect(try await provider.revoke(c, now: Date()) == .revoked)
        #expect(!vault.isLive(accessor: accessor))
        #expect(vault.revokedLeases.count == 1 && vault.revokedLeases == vault.allLeases)
        #expect(!vault.isLive(accessor: c.details["child_accessor"] ?? ""))
        #expect(try await provider.revoke(c, now: Date()) == .alreadyGone)
        #expect(try await provider.revoke(c, now: c.expiresAt.addingTimeInterval(1)) == .expired(at: c.expiresAt))
    }

    @Test func rejectedRoleIsTheJobsFault() async throws {
        let (issuer, vault, provider, req) = try Self.setup()
        defer { withExtendedLifetime((issuer, vault)) {} }
        var r = req
        r.profile = "wrong-role"
        do {
            _ = try await provider.issue(r)
            Issue.record("issued")
        } catch let e as FederationError {
            #expect(e.fault == .job)
            #expect(e.message.contains("role \"ci-nope\" could not be found"))
            #expect(!e.description.contains(req.idToken))
        }
    }

    @Test func aMissingFieldRevokesTheHalfIssuedLogin() async throws {
        let (issuer, vault, provider, req) = try Self.setup()
        defer { withExtendedLifetime(issuer) {} }
        var r = req
        r.profile = "missing-field"
        await #expect(throws: FederationError.self) { _ = try await provider.issue(r) }
        #expect(vault.revokedLeases.count == 1)  // the lease read before the failure is gone with the login token
        #expect(vault.revokedAccessors.count == 1)
    }

    @Test func vaultDownIsTheSystemsFault() async throws {
        let (_, _, _, req) = try Self.setup()
        let p = VaultProvider(name: "vault", address: URL(string: "http://127.0.0.1:9")!, authMount: "jwt", namespace: nil,
                              profiles: ["db": VaultProfile(role: "r", secret: nil, kv: nil, env: [:], token: true)], transport: URLSessionTransport())
        var r = req
        r.deadline = Date().addingTimeInterval(1)
        do {
            _ = try await p.issue(r)
            Issue.record("issued")
        } catch let e as FederationError {
            #expect(e.fault == .system)
            #expect(e.code == "ConnectionFailed")
        }
    }
}
