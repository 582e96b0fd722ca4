import AirlockTesting
import Federation
import Foundation
import HTTPClient
import Identity
import RunnerContract
import Testing

/// The provider conformance suite for Azure (against FakeAzure, federation.md A2) and Google Cloud
/// (against FakeGoogle, federation.md A3), plus their error mapping.
@Suite(.serialized)
struct AzureConformanceTests {
    static let client = "11111111-2222-4333-8444-555555555555"

    final class Setup: @unchecked Sendable {
        let issuer: TestIssuer
        let azure: FakeAzure
        let job = SimulatedJob(script: [])
        init() throws {
            issuer = try TestIssuer()
            azure = try FakeAzure(issuer: issuer)
            azure.addApp(AzureConformanceTests.client, [.init(issuer: issuer.issuer, subject: "project_path:platform/api:ref_type:branch:ref:main")])
        }
        func provider(_ profiles: [String: AzureProfile], authority: String? = nil) -> AzureProvider {
            AzureProvider(name: "azure", authorityHost: URL(string: authority ?? azure.authorityHost)!, profiles: profiles, transport: URLSessionTransport())
        }
        func request(_ profile: String, deadline: Double = 60, claims: [String: String] = [:]) -> IssueRequest {
            var c = ProviderConformance.job().claims
            c.merge(claims) { $1 }
            return IssueRequest(profile: profile, job: VerifiedJob(claims: c), idToken: issuer.mint(issuer.claims(for: job, audience: "api://AzureADTokenExchange")),
                                jobTimeoutSeconds: 1800, now: Date(), deadline: Date().addingTimeInterval(deadline))
        }
        var tenant: String { azure.tenant }
    }

    @Test func lifecycleForAnARMToken() async throws {
        let s = try Setup()
        let p = s.provider(["arm": AzureProfile(tenantID: "{tenant}", clientID: Self.client, resource: .arm)])
        try await ProviderConformance.lifecycle(p, profile: "arm", request: s.request("arm", claims: ["tenant": s.tenant]))
        #expect(s.azure.requestedScopes.first == "https://management.azure.com/.default")
    }

    /// A claim rendered into tenant_id or client_id that is not a GUID or domain is refused before
    /// any request: Entra gets nothing (without the check the fake would at least be asked).
    struct Smuggle: Sendable, CustomTestStringConvertible {
        let field: String
        let value: String
        var testDescription: String { "\(field) = \(value.debugDescription)" }
    }

    static let smuggles: [Smuggle] = [
        .init(field: "tenant_id", value: "../common/oauth2"),
        .init(field: "tenant_id", value: "common/oauth2"),
        .init(field: "tenant_id", value: "organizations?x="),
        .init(field: "tenant_id", value: "tenant#frag"),
        .init(field: "tenant_id", value: "%2e%2e"),
        .init(field: "tenant_id", value: ""),
        .init(field: "client_id", value: "../other-app"),
        .init(field: "client_id", value: "app&scope=x"),
    ]

    @Test(arguments: smuggles)
    func aClaimCannotSmuggleAPathIntoTheTenantOrClient(_ c: Smuggle) async throws {
        let s = try Setup()
        let profile = c.field == "tenant_id"
            ? AzureProfile(tenantID: "{ref}", clientID: Self.client, resource: .arm)
            : AzureProfile(tenantID: s.tenant, clientID: "{ref}", resource: .arm)
        let p = s.provider(["arm": profile])
        let e = await #expect(throws: FederationError.self) { _ = try await p.issue(s.request("arm", claims: ["ref": c.value])) }
        #expect(e?.code == "InvalidIdentifier")
        #expect(e?.fault == .job)
        #expect(e?.message.contains("\(c.field) \(c.value.debugDescription)") == true, "\(e?.message ?? "issued")")
        #expect(s.azure.entra.requestCount == 0)
    }

    /// The check lets real identifiers through: a domain tenant reaches Entra (which does not know it).
    @Test func aDomainTenantPassesTheIdentifierCheck() async throws {
        let s = try Setup()
        let p = s.provider(["arm": AzureProfile(tenantID: "{ref}", clientID: Self.client, resource: .arm)])
        let e = await #expect(throws: FederationError.self) { _ = try await p.issue(s.request("arm", claims: ["ref": "contoso.onmicrosoft.com"])) }
        #expect(e?.code == "AADSTS90002")
        #expect(s.azure.entra.requestCount == 1)
    }

    @Test func keyVaultSecretsAreReadAndTheTokenIsNotKept() async throws {
        let s = try Setup()
        s.azure.putSecret("db-password", "kv-value-0123456789abcdef", readers: [Self.client])
        s.azure.putSecret("other", "nope-0123456789abcdef", readers: [])
        let ok = s.provider(["kv": AzureProfile(tenantID: s.tenant, clientID: Self.client, resource: .keyVault, keyVaultURL: s.azure.keyVaultURL,
                                                keyVaultSecrets: ["DB_PASSWORD": "db-password"])])
        let c = try await ok.issue(s.request("kv"))
        #expect(c.secrets == ["DB_PASSWORD": "kv-value-0123456789abcdef"])
        #expect(try await ok.revoke(c, now: Date()) == .copiesDeleted)
        let denied = s.provider(["kv": AzureProfile(tenantID: s.tenant, clientID: Self.client, resource: .keyVault, keyVaultURL: s.azure.keyVaultURL,
                                                    keyVaultSecrets: ["X": "other"])])
        do { _ = try await denied.issue(s.request("kv")); Issue.record("issued") } catch let e as FederationError {
            #expect(e.code == "Forbidden" && e.fault == .job)
            #expect(e.message.contains("Key Vault Secrets User"))
        }
        let missing = s.provider(["kv": AzureProfile(tenantID: s.tenant, clientID: Self.client, resource: .keyVault, keyVaultURL: s.azure.keyVaultURL,
                                                     keyVaultSecrets: ["X": "absent"])])
        do { _ = try await missing.issue(s.request("kv")); Issue.record("issued") } catch let e as FederationError {
            #expect(e.code == "SecretNotFound" && e.fault == .system)
        }
    }

    @Test func unknownAppAndUnknownResourceAreTheJobsFailure() async throws {
        let s = try Setup()
        let p = s.provider(["a": AzureProfile(tenantID: s.tenant, clientID: "99999999-0000-4000-8000-000000000000", resource: .arm),
                            "b": AzureProfile(tenantID: s.tenant, clientID: Self.client, resource: .scope("https://unknown.example.com/.default"))])
        for (profile, code) in [("a", "AADSTS700016"), ("b", "AADSTS500011")] {
            do { _ = try await p.issue(s.request(profile)); Issue.record("issued") } catch let e as FederationError {
                #expect(e.code == code)
                #expect(e.fault == .job)
                #expect(!e.description.contains(s.request(profile).idToken))
            }
        }
    }

    @Test func entraOutageIsRetriedThenASystemFailure() async throws {
        let s = try Setup()
        let down = try LoopbackHTTPServer { _ in .json(["error": "temporarily_unavailable", "error_description": "AADSTS90033: A transient error has occurred.", "error_codes": [90033]], status: 503) }
        let p = s.provider(["arm": AzureProfile(tenantID: s.tenant, clientID: Self.client, resource: .arm)], authority: down.baseURL)
        do { _ = try await p.issue(s.request("arm", deadline: 8)); Issue.record("issued") } catch let e as FederationError {
            #expect(e.fault == .system && e.transient)
            #expect(e.message.contains("gave up after"))
        }
        #expect(down.requestCount >= 2)
    }
}

@Suite(.serialized)
struct GCPConformanceTests {
    static let wip = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/gitlab/providers/gitlab-example"
    static let sa = "ci-42@platform-prod.iam.gserviceaccount.com"
    static let subject = "project_path:platform/api:ref_type:branch:ref:main"

    final class Setup: @unchecked Sendable {
        let issuer: TestIssuer
        let google: FakeGoogle
        let job = SimulatedJob(script: [])
        init(allowedAudiences: [String] = [], condition: @escaping @Sendable ([String: String]) -> Bool = { _ in true }) throws {
            issuer = try TestIssuer()
            google = try FakeGoogle(issuer: issuer)
            google.addProvider(GCPConformanceTests.wip, .init(issuer: issuer.issuer, allowedAudiences: allowedAudiences, condition: condition))
            google.addServiceAccount(GCPConformanceTests.sa, impersonators: [GCPConformanceTests.subject])
        }
        func provider(_ profiles: [String: GCPProfile], sts: String? = nil) -> GCPProvider {
            GCPProvider(name: "gcp", stsEndpoint: URL(string: sts ?? google.stsEndpoint)!, iamCredentialsEndpoint: URL(string: google.baseURL)!,
                        profiles: profiles, transport: URLSessionTransport())
        }
        func request(_ profile: String, audience: String = "https:" + GCPConformanceTests.wip, jobTimeout: Int = 1800, deadline: Double = 60) -> IssueRequest {
            IssueRequest(profile: profile, job: ProviderConformance.job(), idToken: issuer.mint(issuer.claims(for: job, audience: audience)),
                         jobTimeoutSeconds: jobTimeout, now: Date(), deadline: Date().addingTimeInterval(deadline))
        }
    }

    @Test func lifecycleWithImpersonation() async throws {
        let s = try Setup()
        let p = s.provider(["sa": GCPProfile(workloadIdentityProvider: Self.wip, serviceAccount: "ci-{project_id}@platform-prod.iam.gserviceaccount.com")])
        try await ProviderConformance.lifecycle(p, profile: "sa", request: s.request("sa"))
        // Google does not revoke service-account tokens: cleanup says when it expires and asks nothing.
        let t = try await p.issue(s.request("sa"))
        #expect(try await p.revoke(t, now: Date()) == .notRevocable(expiresAt: t.expiresAt))
        #expect(s.google.revokeRequests == 0)
        let c = try await p.issue(s.request("sa"))
        #expect(c.details["service_account"] == Self.sa)
        #expect(c.details["pool"] == "gitlab" && c.details["pool_provider"] == "gitlab-example" && c.details["project_number"] == "123456789")
    }

    @Test func theLifetimeIsBoundedByTheJobTimeout() async throws {
        let s = try Setup()
        let p = s.provider(["sa": GCPProfile(workloadIdentityProvider: Self.wip, serviceAccount: Self.sa)])
        let short = try await p.issue(s.request("sa", jobTimeout: 900))
        #expect(short.details["lifetime_seconds"] == "900")
        #expect(short.expiresAt.timeIntervalSinceNow < 905)
        let long = try await p.issue(s.request("sa", jobTimeout: 7200))
        #expect(long.details["lifetime_seconds"] == "3600")
    }

    @Test func aFederatedTokenWithoutImpersonationRunsToItsExpiry() async throws {
        let s = try Setup()
        let p = s.provider(["direct": GCPProfile(workloadIdentityProvider: Self.wip, serviceAccount: nil)])
        let c = try await p.issue(s.request("direct"))
        #expect(c.details["token"] == "federated")
        #expect(try await p.revoke(c, now: Date()) == .notRevocable(expiresAt: c.expiresAt))
    }

    struct Rejection: Sendable, CustomTestStringConvertible {
        let kind: String
        let code: String
        let fault: Fault
        let hint: String
        init(_ kind: String, _ code: String, _ fault: Fault, _ hint: String) {
            self.kind = kind
            self.code = code
            self.fault = fault
            self.hint = hint
        }
        var testDescription: String { "\(kind) → \(code)" }
    }

    static let rejections: [Rejection] = [
        .init("audience", "invalid_grant", .job, "allowed audiences must include that audience"),
        .init("condition", "unauthorized_client", .job, "attribute condition"),
        .init("pool", "invalid_target", .job, "pool or provider is disabled or deleted"),
        .init("impersonation", "PERMISSION_DENIED", .job, "grant roles/iam.workloadIdentityUser on the service account to principal://iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/gitlab/subject/\(subject)"),
        .init("service account", "NOT_FOUND", .system, "generateAccessToken for nobody@"),
    ]

    @Test(arguments: rejections)
    func rejectionsSayWhatToFix(_ r: Rejection) async throws {
        let (kind, code, fault, hint) = (r.kind, r.code, r.fault, r.hint)
        let s = try Setup(condition: { _ in kind != "condition" })
        var profile = GCPProfile(workloadIdentityProvider: Self.wip, serviceAccount: Self.sa)
        var audience = "https:" + Self.wip
        switch kind {
        case "audience": audience = "https://gitlab.example.com"
        case "pool": profile.workloadIdentityProvider = Self.wip.replacingOccurrences(of: "gitlab-example", with: "deleted")
        case "impersonation": s.google.addServiceAccount(Self.sa, impersonators: ["someone-else"])
        case "service account": profile.serviceAccount = "nobody@platform-prod.iam.gserviceaccount.com"
        default: break
        }
        let req = s.request("p", audience: audience)
        do { _ = try await s.provider(["p": profile]).issue(req); Issue.record("issued") } catch let e as FederationError {
            #expect(e.code == code)
            #expect(e.fault == fault)
            #expect(e.message.contains(hint), "\(e.message)")
            #expect(!e.description.contains(req.idToken))
        }
    }

    @Test func stsOutageIsRetriedThenASystemFailure() async throws {
        let s = try Setup()
        let down = try LoopbackHTTPServer { _ in .json(["error": "internal_failure"], status: 500) }
        let p = s.provider(["sa": GCPProfile(workloadIdentityProvider: Self.wip, serviceAccount: Self.sa)], sts: down.baseURL + "/v1/token")
        do { _ = try await p.issue(s.request("sa", deadline: 8)); Issue.record("issued") } catch let e as FederationError {
            #expect(e.fault == .system && e.transient)
        }
        #expect(down.requestCount >= 2)
    }
}
