import AirlockCore
import Foundation
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
        #expect(c.profiles["deploy-prod"]?.aws?.maxDuration == 3600)
        #expect(c.gitlab?.audience == "https://airlock.example.com")
        #expect(c.profiles["db-readonly"]?.vault?.env == ["DB_USER": "username", "DB_PASSWORD": "password"])
        #expect(c.profiles["orders-api"]?.oauth?.subjectTokenType == "https://airlock.example.com/gitlab-id-token")
        #expect(c.profiles["orders-db"]?.azure?.resource == .cosmos(account: "orders-db"))
        #expect(c.profiles["azure-secrets"]?.azure?.keyVaultSecrets["DB_PASSWORD"] == "db-password")
        #expect(c.profiles["gcs-deploy"]?.gcp?.poolParts?.pool == "gitlab")
        #expect(c.consumedTokenVariables == ["AIRLOCK_ID_TOKEN", "AZURE_ID_TOKEN", "GCP_ID_TOKEN"])
    }

    static let errors: [(String, String)] = [
        ("[runner]\nbuilds_root = 3\n", "airlock.toml:2: [runner] builds_root: expected a string, got integer"),
        (runner + "isolation = \"docker\"\n", "airlock.toml:6: [runner] isolation: expected one of \"bubblewrap\", \"none\", got \"docker\""),
        (runner + "graceful_kill = \"soon\"\n", "airlock.toml:6: [runner] graceful_kill: expected a duration like \"10s\", \"5m\" or \"1h30m\", got \"soon\""),
        (runner + "[gitlab]\nissuer = \"https://g\"\n", "airlock.toml:6: [gitlab] audience: is required"),
        (runner + "[gitlab]\nissuer = \"http://gitlab.example.com\"\naudience = \"a\"\n", "[gitlab] issuer: must be an https URL"),
        (runner + "[gitlab]\nissuer = \"https://g\"\naudience = \"a\"\nalgorithms = [\"HS256\"]\n", "airlock.toml:9: [gitlab] algorithms: \"HS256\" is not allowed"),
        (runner + "[profiles.p]\nprovider = \"nope\"\nrole_arn = \"arn:x\"\n", "airlock.toml:7: [profiles.p] provider: \"nope\" is not defined"),
        (runner + "[providers.a]\ntype = \"aws\"\n[profiles.p]\nprovider = \"a\"\nrole_arn = \"arn:x\"\nrole = \"x\"\n", "airlock.toml:11: [profiles.p] role: unknown key"),
        (runner + "[providers.a]\ntype = \"aws\"\n[profiles.p]\nprovider = \"a\"\nrole_arn = \"arn:{nope}\"\n", "{nope} is not a GitLab ID token claim"),
        (runner + "[gitlab]\nissuer = \"https://g\"\naudience = \"a\"\n[providers.a]\ntype = \"aws\"\n[profiles.p]\nprovider = \"a\"\nrole_arn = \"arn:x\"\n[[rules]]\nname = \"all\"\ngrant = [\"p\"]\n", "has no conditions and would grant every job"),
        (runner + "state = 1\n", "airlock.toml:6: [runner] state: unknown key; allowed here:"),
        ("[runner\n", "airlock.toml:1: TOML syntax error"),
        (runner + "[gitlab]\nissuer = \"https://g\"\naudience = \"a\"\nca_file = \"/x.pem\"\n", "airlock.toml:9: [gitlab] ca_file: is not supported by this build"),
        (runner + "secrets_root = \"/srv/b/secrets\"\n", "[runner] secrets_root: must not be inside builds_root"),
        (runner.replacingOccurrences(of: "/srv/s", with: "/srv/b/state"), "[runner] builds_root: must not overlap state_dir"),
        (runner + "[providers.z]\ntype = \"azure\"\n[profiles.p]\nprovider = \"z\"\nclient_id = \"c\"\nresource = \"arm\"\n", "[profiles.p] tenant_id: is required (here or on [providers.z])"),
        (runner + "[providers.z]\ntype = \"azure\"\ntenant_id = \"t\"\n[profiles.p]\nprovider = \"z\"\nclient_id = \"c\"\nresource = \"cosmos\"\n", "[profiles.p] cosmos_account: is required"),
        (runner + "[providers.z]\ntype = \"azure\"\ntenant_id = \"t\"\n[profiles.p]\nprovider = \"z\"\nclient_id = \"c\"\nsecrets = { A = \"a\" }\n", "[profiles.p] key_vault: is required with secrets"),
        (runner + "[providers.z]\ntype = \"azure\"\ntoken_variable = \"bad-name\"\n", "[providers.z] token_variable: must be a variable name"),
        (runner + "[providers.g]\ntype = \"gcp\"\nworkload_identity_provider = \"projects/my-project/pools/x\"\n", "[providers.g] workload_identity_provider: must be the provider's full resource name"),
        (runner + "[providers.g]\ntype = \"gcp\"\ntoken_variable = \"GCP_ID_TOKEN\"\n", "[providers.g] token_audience: is required with token_variable"),
        (runner + "[providers.g]\ntype = \"gcp\"\n[profiles.p]\nprovider = \"g\"\n", "[profiles.p] workload_identity_provider: is required (here or on [providers.g])"),
    ]

    @Test(arguments: errors.indices)
    func errorsNameKeyAndLine(_ i: Int) {
        let (text, want) = Self.errors[i]
        do {
            _ = try AirlockConfig.parse(text, path: "airlock.toml")
            Issue.record("accepted: \(want)")
        } catch {
            #expect(error.message.contains(want), "\(error.message)")
        }
    }
}
