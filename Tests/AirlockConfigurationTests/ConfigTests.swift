import ConfigSyntax
import Policy
import Federation
import AirlockConfiguration
import Foundation
import Identity
import Testing

struct ConfigTests {
    static let runner = """
    [runner]
    builds_root = "/srv/b"
    cache_root = "/srv/c"
    state_dir = "/srv/s"
    audit_log = "/srv/a.jsonl"

    """

    @Test func shippedExampleParses() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let c = try AirlockConfig.load(path: root.appendingPathComponent("runner-config/airlock.toml.example").path)
        #expect(c.policy.rules.count == 2)
        #expect(c.profiles["deploy-prod"]?.settings(as: AWSRoleProfile.self)?.maxDuration == 3600)
        #expect(c.gitlab?.audience == "https://airlock.example.com")
        #expect(c.profiles["db-readonly"]?.settings(as: VaultProfile.self)?.env == ["DB_USER": "username", "DB_PASSWORD": "password"])
        #expect(c.profiles["orders-api"]?.settings(as: OAuthProfile.self)?.subjectTokenType == "https://airlock.example.com/gitlab-id-token")
        #expect(c.profiles["orders-db"]?.settings(as: AzureProfile.self)?.resource == .cosmos(account: "orders-db"))
        #expect(c.profiles["azure-secrets"]?.settings(as: AzureProfile.self)?.keyVaultSecrets["DB_PASSWORD"] == "db-password")
        #expect(c.profiles["gcs-deploy"]?.settings(as: GCPProfile.self)?.poolParts?.pool == "gitlab")
        #expect(c.consumedTokenVariables == ["AIRLOCK_ID_TOKEN", "AZURE_ID_TOKEN", "GCP_ID_TOKEN"])
    }

    /// A config that must be refused, and the whole start of the error: `file:line: [table] key: what`.
    /// Every case names a line: a key's own, or its table's when the key is missing.
    struct ErrorCase: Sendable, CustomTestStringConvertible {
        let name: String
        let text: String
        let error: String
        init(_ name: String, _ text: String, _ error: String) {
            self.name = name
            self.text = text
            self.error = error
        }
        var testDescription: String { name }
    }

    static let errors: [ErrorCase] = [
        .init("wrong type", "[runner]\nbuilds_root = 3\n", "airlock.toml:2: [runner] builds_root: expected a string, got integer"),
        .init("unknown isolation", runner + "isolation = \"docker\"\n", "airlock.toml:6: [runner] isolation: expected one of \"bubblewrap\", \"none\", got \"docker\""),
        .init("bad duration", runner + "graceful_kill = \"soon\"\n", "airlock.toml:6: [runner] graceful_kill: expected a duration like \"10s\", \"5m\" or \"1h30m\", got \"soon\""),
        .init("missing audience", runner + "[gitlab]\nissuer = \"https://g\"\n", "airlock.toml:6: [gitlab] audience: is required"),
        .init("http issuer", runner + "[gitlab]\nissuer = \"http://gitlab.example.com\"\naudience = \"a\"\n", "airlock.toml:7: [gitlab] issuer: must be an https URL"),
        .init("HMAC algorithm", runner + "[gitlab]\nissuer = \"https://g\"\naudience = \"a\"\nalgorithms = [\"HS256\"]\n", "airlock.toml:9: [gitlab] algorithms: \"HS256\" is not allowed"),
        .init("clock_skew over 5m", runner + "[gitlab]\nissuer = \"https://g\"\naudience = \"a\"\nclock_skew = \"5m1s\"\n", "airlock.toml:9: [gitlab] clock_skew: must be at most 5m"),
        .init("negative clock_skew", runner + "[gitlab]\nissuer = \"https://g\"\naudience = \"a\"\nclock_skew = -1\n", "airlock.toml:9: [gitlab] clock_skew: expected a duration"),
        .init("undefined provider", runner + "[profiles.p]\nprovider = \"nope\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\n", "airlock.toml:7: [profiles.p] provider: \"nope\" is not defined"),
        .init("key of another provider type", runner + "[providers.a]\ntype = \"aws\"\n[profiles.p]\nprovider = \"a\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\nrole = \"x\"\n", "airlock.toml:11: [profiles.p] role: unknown key"),
        .init("template with an unknown claim", runner + "[providers.a]\ntype = \"aws\"\n[profiles.p]\nprovider = \"a\"\nrole_arn = \"arn:aws:iam::123456789012:role/{nope}\"\n", "airlock.toml:10: [profiles.p] role_arn: {nope} is not a GitLab ID token claim"),
        .init("rule without conditions", runner + "[gitlab]\nissuer = \"https://g\"\naudience = \"a\"\n[providers.a]\ntype = \"aws\"\n[profiles.p]\nprovider = \"a\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\n[[rules]]\nname = \"all\"\ngrant = [\"p\"]\n", "airlock.toml:14: [rules #1]: rule \"all\" has no conditions and would grant every job"),
        .init("unknown key", runner + "state = 1\n", "airlock.toml:6: [runner] state: unknown key; allowed here:"),
        .init("TOML syntax", "[runner\n", "airlock.toml:1: TOML syntax error"),
        .init("ca_file", runner + "[gitlab]\nissuer = \"https://g\"\naudience = \"a\"\nca_file = \"/x.pem\"\n", "airlock.toml:9: [gitlab] ca_file: is not supported by this build"),
        .init("secrets_root inside builds_root", runner + "secrets_root = \"/srv/b/secrets\"\n", "airlock.toml:6: [runner] secrets_root: must not be inside builds_root"),
        .init("state_dir inside builds_root", runner.replacingOccurrences(of: "/srv/s", with: "/srv/b/state"), "airlock.toml:2: [runner] builds_root: must not overlap state_dir"),
        .init("Azure profile without tenant", runner + "[providers.z]\ntype = \"azure\"\n[profiles.p]\nprovider = \"z\"\nclient_id = \"0a1b2c3d-0000-4000-8000-00000000abcd\"\nresource = \"arm\"\n", "airlock.toml:8: [profiles.p] tenant_id: is required (here or on [providers.z])"),
        .init("cosmos without account", runner + "[providers.z]\ntype = \"azure\"\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\n[profiles.p]\nprovider = \"z\"\nclient_id = \"0a1b2c3d-0000-4000-8000-00000000abcd\"\nresource = \"cosmos\"\n", "airlock.toml:9: [profiles.p] cosmos_account: is required"),
        .init("secrets without key_vault", runner + "[providers.z]\ntype = \"azure\"\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\n[profiles.p]\nprovider = \"z\"\nclient_id = \"0a1b2c3d-0000-4000-8000-00000000abcd\"\nsecrets = { A = \"a\" }\n", "airlock.toml:9: [profiles.p] key_vault: is required with secrets"),
        .init("bad token_variable", runner + "[providers.z]\ntype = \"azure\"\ntoken_variable = \"bad-name\"\n", "airlock.toml:8: [providers.z] token_variable: must be a variable name"),
        .init("short workload_identity_provider", runner + "[providers.g]\ntype = \"gcp\"\nworkload_identity_provider = \"projects/my-project/pools/x\"\n", "airlock.toml:8: [providers.g] workload_identity_provider: must be the provider's full resource name"),
        .init("token_variable without token_audience", runner + "[providers.g]\ntype = \"gcp\"\ntoken_variable = \"GCP_ID_TOKEN\"\n", "airlock.toml:6: [providers.g] token_audience: is required with token_variable"),
        .init("role_arn typo (issue 14)", runner + "[providers.a]\ntype = \"aws\"\n[profiles.p]\nprovider = \"a\"\nrole_arn = \"arn:aws:iam::12345:rol/x\"\n", "airlock.toml:10: [profiles.p] role_arn: must be an IAM role ARN, arn:aws:iam::<12-digit account>:role/<name>"),
        .init("role_arn of another service", runner + "[providers.a]\ntype = \"aws\"\n[profiles.p]\nprovider = \"a\"\nrole_arn = \"arn:aws:s3:::bucket\"\n", "airlock.toml:10: [profiles.p] role_arn: must be an IAM role ARN"),
        .init("policy_arns not a policy", runner + "[providers.a]\ntype = \"aws\"\n[profiles.p]\nprovider = \"a\"\nrole_arn = \"arn:aws:iam::123456789012:role/x\"\npolicy_arns = [\"arn:aws:iam::aws:role/ReadOnly\"]\n", "airlock.toml:11: [profiles.p] policy_arns: \"arn:aws:iam::aws:role/ReadOnly\" is not a managed policy ARN"),
        .init("client_id not a GUID", runner + "[providers.z]\ntype = \"azure\"\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\n[profiles.p]\nprovider = \"z\"\nclient_id = \"my-app\"\nresource = \"arm\"\n", "airlock.toml:11: [profiles.p] client_id: \"my-app\" is not an application (client) ID"),
        .init("tenant_id neither GUID nor domain", runner + "[providers.z]\ntype = \"azure\"\n[profiles.p]\nprovider = \"z\"\ntenant_id = \"72f988bf86f1\"\nclient_id = \"0a1b2c3d-0000-4000-8000-00000000abcd\"\nresource = \"arm\"\n", "airlock.toml:10: [profiles.p] tenant_id: \"72f988bf86f1\" is not an Entra tenant"),
        .init("GCP profile without provider name", runner + "[providers.g]\ntype = \"gcp\"\n[profiles.p]\nprovider = \"g\"\n", "airlock.toml:8: [profiles.p] workload_identity_provider: is required (here or on [providers.g])"),
    ]

    /// Issue 14: check reports every problem at once, each with its line; a table with an error is
    /// set aside and what only follows from that (its profile "not defined") is not reported twice.
    @Test func everyProblemAtOnce() {
        let text = Self.runner + """
        [gitlab]
        issuer = "https://g"
        audience = "a"
        [providers.a]
        type = "aws"
        colour = "red"
        [providers.b]
        type = "aws"
        [profiles.p]
        provider = "a"
        role_arn = "arn:aws:iam::123456789012:role/x"
        [profiles.q]
        provider = "b"
        role_arn = "arn:aws:iam::12345:rol/x"
        [[rules]]
        name = "r"
        project_id = 42
        grant = ["q"]
        [[rules]]
        name = "s"
        ref = "main"
        grant = ["nope"]

        """
        let problems = AirlockConfig.allProblems(text, path: "airlock.toml")
        #expect(problems.count == 3, "\(problems)")
        #expect(problems.first?.hasPrefix("airlock.toml:11: [providers.a] colour: unknown key") == true, "\(problems)")
        #expect(problems.contains { $0.hasPrefix("airlock.toml:19: [profiles.q] role_arn: must be an IAM role ARN") }, "\(problems)")
        #expect(problems.contains { $0.hasPrefix("airlock.toml:27: [rules #2] grant: profile \"nope\" is not defined") }, "\(problems)")
        // Profile p's provider and rule r's profile were set aside: no "not defined" for them.
        #expect(!problems.contains { $0.contains("\"a\" is not defined") || $0.contains("\"q\" is not defined") }, "\(problems)")
        // A good file has none; a syntax error is the only one found.
        #expect(AirlockConfig.allProblems(Self.runner, path: "airlock.toml").isEmpty)
        #expect(AirlockConfig.allProblems(Self.runner + "[profiles.x\n", path: "airlock.toml").count == 1)
    }

    @Test(arguments: errors)
    func errorsNameFileLineAndKey(_ c: ErrorCase) {
        let e = #expect(throws: ConfigError.self) { _ = try AirlockConfig.parse(c.text, path: "airlock.toml") }
        #expect(e?.message.hasPrefix(c.error) == true, "\(e?.message ?? "accepted")")
    }

    /// `clock_skew` up to 5m is accepted, and what is accepted is what the verifier uses.
    @Test(arguments: [("0s", 0.0), ("30s", 30.0), ("5m", 300.0), ("90", 90.0)])
    func clockSkewWithinBoundsIsAccepted(_ c: (String, Double)) throws {
        let value = Double(c.0) == nil ? "\"\(c.0)\"" : c.0
        let config = try AirlockConfig.parse(Self.runner + "[gitlab]\nissuer = \"https://g\"\naudience = \"a\"\nclock_skew = \(value)\n", path: "airlock.toml")
        #expect(config.gitlab?.clockSkew == c.1)
    }

    /// Issue 15: a GCP `revoke_endpoint` from an older config still loads (an upgrade must not stop
    /// the runner) and is named as ignored, with why.
    @Test func aGCPRevokeEndpointIsIgnoredWithAWarning() throws {
        let with = try AirlockConfig.parse(Self.runner + "[providers.g]\ntype = \"gcp\"\nrevoke_endpoint = \"https://oauth2.googleapis.com/revoke\"\n", path: "airlock.toml")
        #expect(with.warnings.contains { $0.contains("[providers.g] revoke_endpoint is ignored: Google does not revoke") }, "\(with.warnings)")
        let without = try AirlockConfig.parse(Self.runner + "[providers.g]\ntype = \"gcp\"\n", path: "airlock.toml")
        #expect(!without.warnings.contains { $0.contains("revoke_endpoint") })
    }

    /// `required_claims` adds to GitLab's standard set; it never replaces it.
    @Test func requiredClaimsExtendTheStandardSet() throws {
        let config = try AirlockConfig.parse(Self.runner + "[gitlab]\nissuer = \"https://g\"\naudience = \"a\"\nrequired_claims = [\"environment\"]\n", path: "airlock.toml")
        let required = try #require(config.gitlab?.requiredClaims)
        #expect(required.contains("environment"))
        #expect(Set(IssuerSettings.defaultRequiredClaims).isSubset(of: Set(required)))
    }
}
