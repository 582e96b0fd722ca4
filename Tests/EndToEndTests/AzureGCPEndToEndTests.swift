import AirlockTesting
import Foundation
import Testing

/// Azure and Google Cloud through the built executables and the runner simulator, against
/// FakeAzure (Entra, Cosmos DB, Key Vault; federation.md A2) and FakeGoogle (STS, IAM Credentials,
/// revoke; federation.md A3). Jobs declare a second ID token with Entra's (or the pool's) audience.
@Suite(.serialized)
struct AzureGCPEndToEndTests {
    static let audience = "https://airlock.test"
    static let client = "8a3b1c2d-0000-4e5f-9a8b-7c6d5e4f3a2b"
    static let wip = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/gitlab/providers/gitlab-example"
    static let serviceAccount = "ci-42@platform-prod.iam.gserviceaccount.com"

    final class Peers: @unchecked Sendable {
        let issuer: TestIssuer
        let azure: FakeAzure
        let google: FakeGoogle
        let world: TestWorld

        init(deliver: String = "env") throws {
            issuer = try TestIssuer()
            azure = try FakeAzure(issuer: issuer)
            google = try FakeGoogle(issuer: issuer)
            world = try TestWorld(extra: """
            [gitlab]
            issuer = "\(issuer.issuer)"
            audience = "\(AzureGCPEndToEndTests.audience)"

            \(PeerTables.azure(azure))\(PeerTables.gcp(google, audienceToken: ("GCP_ID_TOKEN", "https:\(AzureGCPEndToEndTests.wip)")))
            [profiles.orders-db]
            provider = "azure"
            client_id = "\(AzureGCPEndToEndTests.client)"
            resource = "cosmos"
            cosmos_account = "\(azure.cosmosAccount)"

            [profiles.app-secrets]
            provider = "azure"
            client_id = "\(AzureGCPEndToEndTests.client)"
            key_vault = "\(azure.keyVaultURL)"
            secrets = { DB_PASSWORD = "db-password" }
            deliver = "\(deliver)"

            [profiles.gcs-deploy]
            provider = "gcp"
            workload_identity_provider = "\(AzureGCPEndToEndTests.wip)"
            service_account = "ci-{project_id}@platform-prod.iam.gserviceaccount.com"
            project_id = "platform-prod"

            [[rules]]
            name = "main of project 42"
            project_id = 42
            ref = "main"
            grant = ["orders-db", "app-secrets", "gcs-deploy"]
            """)
        }

        func job(_ script: [String], profiles: String) -> SimulatedJob {
            var job = SimulatedJob(script: script)
            job.variables = ["AIRLOCK_PROFILES": profiles, "COSMOS_ENDPOINT": azure.cosmosEndpoint, "GOOGLE_API": google.baseURL]
            job.idTokens = ["AIRLOCK_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: AzureGCPEndToEndTests.audience)),
                            "AZURE_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: "api://AzureADTokenExchange")),
                            "GCP_ID_TOKEN": issuer.mint(issuer.claims(for: job, audience: "https:\(AzureGCPEndToEndTests.wip)"))]
            return job
        }

        var subject: String { "project_path:platform/api:ref_type:branch:ref:main" }

        func audit() -> [[String: Any]] { world.auditRecords() }
    }

    @Test func cosmosJobCallsTheDataPlaneWithTheDocumentedHeader() throws {
        let p = try Peers()
        p.azure.addApp(Self.client, [.init(issuer: p.issuer.issuer, subject: p.subject)])
        // The account's own scope is unknown to the tenant: Entra answers AADSTS500011 and Airlock
        // falls back to https://cosmos.azure.com/.default, as the Cosmos DB SDK does.
        p.azure.cosmosAccountScopeKnown = false
        let job = p.job([
            "d=$(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S GMT')",
            "curl -sS -f -H \"Authorization: type=aad&ver=1.0&sig=$AZURE_ACCESS_TOKEN\" -H \"x-ms-date: $d\" -H 'x-ms-version: 2018-12-31' \"$COSMOS_ENDPOINT/dbs\"; echo",
            "echo \"token=$AZURE_ACCESS_TOKEN tenant=$AZURE_TENANT_ID client=$AZURE_CLIENT_ID\"",
            "echo \"azure-id-token=${AZURE_ID_TOKEN:-none}\"",
        ], profiles: "orders-db")
        let r = p.world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(r.log.contains("\"Databases\"") && r.log.contains("\"orders\""), "\(TestWorld.redacted(r.log))")
        // Computed first: a failing expectation would print the log, and with it the secret.
        let masked1 = r.log.contains("token=[MASKED] tenant=\(p.azure.tenant) client=\(Self.client)")
        #expect(masked1, "\(TestWorld.redacted(r.log))")
        let present1 = r.log.contains("fake-entra.")
        #expect(!present1)
        let present2 = r.log.contains(job.idTokens["AZURE_ID_TOKEN"]!)
        #expect(!present2)
        #expect(p.azure.requestedScopes == ["https://orders-db.documents.azure.com/.default", "https://cosmos.azure.com/.default"])
        let issued = p.audit().first { $0["event"] as? String == "issued" }
        #expect(issued?["tenant_id"] as? String == p.azure.tenant)
        #expect(issued?["client_id"] as? String == Self.client)
        #expect((issued?["cosmos_scope_fallback"] as? String)?.contains("AADSTS500011") == true)
        // Entra tokens cannot be revoked: cleanup says when it expires.
        #expect(r.runnerLog.contains("orders-db (hmac:") && r.runnerLog.contains("azure cannot revoke it; expires"), "\(r.runnerLog)")
    }

    @Test func keyVaultSecretArrivesAsAFile() throws {
        let p = try Peers(deliver: "file")
        p.azure.addApp(Self.client, [.init(issuer: p.issuer.issuer, subject: p.subject)])
        p.azure.putSecret("db-password", "kv-S3cret-value-0123456789abcdef", readers: [Self.client])
        let job = p.job([
            #"echo "file=$DB_PASSWORD mode=$(stat -c %a "$DB_PASSWORD") bytes=$(wc -c < "$DB_PASSWORD")""#,
            "echo \"value: $(cat \"$DB_PASSWORD\")\"",
            "echo \"token=${AZURE_ACCESS_TOKEN:-none}\"",
        ], profiles: "app-secrets")
        let r = p.world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        // Read-only for the job, the value without a trailing newline (32 characters).
        #expect(r.output.contains("file=/run/airlock/secrets/app-secrets-DB_PASSWORD mode=400 bytes=32\n"), "\(TestWorld.redacted(r.output))")
        // Computed first: a failing expectation would print the log, and with it the secret.
        let masked2 = r.output.contains("value: [MASKED]\n")
        #expect(masked2, "\(TestWorld.redacted(r.output))")
        // The Key Vault token stays with Airlock.
        #expect(r.output.contains("token=none\n"))
        let present3 = r.log.contains("kv-S3cret-value")
        #expect(!present3)
        #expect(r.runnerLog.contains("long-lived secret, not Airlock's to revoke; the job's copies are deleted"), "\(r.runnerLog)")
        let audit = p.audit()
        #expect(audit.contains { $0["event"] as? String == "revoked" && $0["outcome"] as? String == "copies_deleted" })
        #expect(audit.contains { $0["event"] as? String == "issued" && $0["secret.DB_PASSWORD"] as? String == "db-password" })
        let present4 = p.world.auditText.contains("kv-S3cret-value")
        #expect(!present4)
        // The job's copies are deleted: no file left on the host holds the value (the world's tree,
        // its secrets root, the runner's temp dirs).
        let value = Data("kv-S3cret-value-0123456789abcdef".utf8)
        var holders: [String] = []
        for top in [p.world.root, p.world.secretsRoot] {
            let e = FileManager.default.enumerator(atPath: top)
            while let rel = e?.nextObject() as? String {
                if let d = FileManager.default.contents(atPath: "\(top)/\(rel)"), d.range(of: value) != nil { holders.append("\(top)/\(rel)") }
            }
        }
        #expect(holders.isEmpty, "\(holders)")
        #expect(!FileManager.default.fileExists(atPath: "\(p.world.secretsRoot)/\(job.jobID)"))
    }

    @Test func gcpJobGetsAnImpersonatedTokenAndCleanupRevokesIt() throws {
        let p = try Peers()
        p.google.addProvider(Self.wip, .init(issuer: p.issuer.issuer) { $0["project_id"] == "42" && $0["ref_protected"] == "true" })
        p.google.addServiceAccount(Self.serviceAccount, impersonators: [p.subject])
        let job = p.job([
            "curl -sS -f \"$GOOGLE_API/tokeninfo?access_token=$CLOUDSDK_AUTH_ACCESS_TOKEN\"; echo",
            #"echo "same-token=$([ "$GOOGLE_OAUTH_ACCESS_TOKEN" = "$CLOUDSDK_AUTH_ACCESS_TOKEN" ] && echo yes || echo no) project=$CLOUDSDK_CORE_PROJECT""#,
            #"echo "token=[$CLOUDSDK_AUTH_ACCESS_TOKEN]""#,
        ], profiles: "gcs-deploy")
        let r = p.world.simulate(job) { $0.runnerMasking = false }
        #expect(r.status == "success", "\(TestWorld.redacted(r.log))")
        #expect(r.log.contains("\"email\":\"\(Self.serviceAccount)\""), "\(TestWorld.redacted(r.log))")
        #expect(r.output.contains("same-token=yes project=platform-prod\n"), "\(TestWorld.redacted(r.output))")
        // The script printed the token: the mask stands where it was.
        // Computed first: a failing expectation would print the log, and with it the secret.
        let masked3 = r.output.contains("token=[[MASKED]]\n")
        #expect(masked3, "\(TestWorld.redacted(r.output))")
        let present5 = r.log.contains("ya29.")
        #expect(!present5)
        #expect(p.google.count(kind: "impersonated") == 1)
        // Google does not revoke service-account tokens ("Token is not revocable."): no call is made
        // and the audit and the runner's log say when it expires.
        #expect(p.google.revokeRequests == 0)
        let audit = p.audit()
        let issued = audit.first { $0["event"] as? String == "issued" }
        #expect(issued?["pool"] as? String == "gitlab")
        #expect(issued?["pool_provider"] as? String == "gitlab-example")
        #expect(issued?["service_account"] as? String == Self.serviceAccount)
        #expect(audit.contains { $0["event"] as? String == "revoked" && $0["outcome"] as? String == "expires_at" && $0["expires_at"] != nil })
        #expect(!audit.contains { $0["outcome"] as? String == "revoked" })
        #expect(r.runnerLog.contains("gcs-deploy (hmac:") && r.runnerLog.contains("gcp cannot revoke it; expires"), "\(r.runnerLog)")
    }

    /// Entra's four most reported federation failures, each acted out by the fake as Entra would
    /// answer it; each must be the job's failure with a message that says what to fix.
    struct EntraFailure: Sendable, CustomTestStringConvertible {
        let code: String, kind: String
        var testDescription: String { "\(code) (\(kind))" }
    }
    static let entraFailures: [EntraFailure] = [
        .init(code: "AADSTS700211", kind: "issuer"), .init(code: "AADSTS700213", kind: "subject"),
        .init(code: "AADSTS7002138", kind: "subject case"), .init(code: "AADSTS70021", kind: "legacy subject"),
        .init(code: "AADSTS700212", kind: "audience"), .init(code: "AADSTS700024", kind: "time"),
        .init(code: "AADSTS501661", kind: "discovery"),
    ]

    @Test(arguments: entraFailures)
    func entraFailureIsABuildFailureThatSaysWhatToFix(_ failure: EntraFailure) throws {
        let (code, kind) = (failure.code, failure.kind)
        let p = try Peers()
        switch kind {
        case "issuer":
            p.azure.addApp(Self.client, [.init(issuer: p.issuer.issuer + "/", subject: p.subject)])
        case "subject", "legacy subject":
            p.azure.legacyCodes = kind == "legacy subject"
            p.azure.addApp(Self.client, [.init(issuer: p.issuer.issuer, subject: "project_path:platform/api:ref_type:branch:ref:release")])
        case "subject case":
            p.azure.addApp(Self.client, [.init(issuer: p.issuer.issuer, subject: p.subject.replacingOccurrences(of: "platform/api", with: "Platform/API"))])
        case "audience":
            p.azure.addApp(Self.client, [.init(issuer: p.issuer.issuer, subject: p.subject, audiences: ["https://gitlab.example.com"])])
        case "time":
            p.azure.addApp(Self.client, [.init(issuer: p.issuer.issuer, subject: p.subject)])
            p.azure.clockOffset = 2 * 3600
        default:
            p.azure.addApp(Self.client, [.init(issuer: p.issuer.issuer, subject: p.subject)])
            p.azure.issuerReachable = false
        }
        let job = p.job([#"echo "ran-$((6*7))""#], profiles: "orders-db")
        let r = p.world.simulate(job)
        #expect(r.failureReason == "script_failure", "\(TestWorld.redacted(r.log))")
        #expect(r.prepareAttempts == 1)
        #expect(r.log.contains(code), "\(TestWorld.redacted(r.log))")
        let present6 = r.output.contains("ran-42")
        #expect(!present6, "the job ran")
        switch kind {
        case "issuer":
            #expect(r.log.contains("has no federated identity credential for the issuer \"\(p.issuer.issuer)\"") && r.log.contains("no trailing slash"), "\(TestWorld.redacted(r.log))")
        case "subject case":
            #expect(r.log.contains("differs from this job's only in letter case") && r.log.contains("must be exactly \"\(p.subject)\""), "\(TestWorld.redacted(r.log))")
        case "subject", "legacy subject":
            #expect(r.log.contains("subject \"\(p.subject)\""), "\(TestWorld.redacted(r.log))")
            #expect(r.log.contains("The federated credential must hold exactly (case-sensitive): issuer \"\(p.issuer.issuer)\", subject \"\(p.subject)\", audiences [\"api://AzureADTokenExchange\"]"))
        case "audience":
            #expect(r.log.contains("its audiences do not include the token's aud \"api://AzureADTokenExchange\""), "\(TestWorld.redacted(r.log))")
        case "time":
            #expect(r.log.contains("outside its valid time range") && r.log.contains("Check NTP"), "\(TestWorld.redacted(r.log))")
        default:
            #expect(r.log.contains("could not fetch the issuer's OpenID Connect discovery") && r.log.contains("must serve both publicly"), "\(TestWorld.redacted(r.log))")
        }
        let present7 = r.log.contains(job.idTokens["AZURE_ID_TOKEN"]!)
        #expect(!present7)
        let decisions = p.audit().filter { $0["event"] as? String == "federation_failed" }
        #expect(decisions.first?["code"] as? String == code)
        #expect(decisions.first?["fault"] as? String == "job")
    }

    @Test func missingSecondIDTokenIsRefusedWithTheBlockToAdd() throws {
        let p = try Peers()
        p.azure.addApp(Self.client, [.init(issuer: p.issuer.issuer, subject: p.subject)])
        var job = p.job([#"echo "ran-$((6*7))""#], profiles: "orders-db")
        job.idTokens["AZURE_ID_TOKEN"] = nil
        let r = p.world.simulate(job)
        #expect(r.failureReason == "script_failure", "\(TestWorld.redacted(r.log))")
        #expect(r.log.contains("AZURE_ID_TOKEN:\n") && r.log.contains("aud: api://AzureADTokenExchange"), "\(TestWorld.redacted(r.log))")
        #expect(p.azure.requestedScopes.isEmpty)
        // Another job's Entra token (same project, other job) is refused before Entra sees it.
        var other = p.job([#"echo "ran-$((6*7))""#], profiles: "orders-db")
        var stranger = other
        stranger.jobID += 1
        other.idTokens["AZURE_ID_TOKEN"] = p.issuer.mint(p.issuer.claims(for: stranger, audience: "api://AzureADTokenExchange"))
        let r2 = p.world.simulate(other)
        #expect(r2.failureReason == "script_failure", "\(r2.log)")
        #expect(r2.log.contains("AZURE_ID_TOKEN belongs to job \(stranger.jobID)"), "\(r2.log)")
        #expect(p.azure.requestedScopes.isEmpty)
    }
}
