import AirlockConfiguration
import ConfigSyntax
import Crypto
import Federation
import Foundation
import Identity
import Testing

/// `identity = "airlock"` on a provider (issue 17, part 3): what it needs, the audience each kind
/// defaults to, and what it changes about the tokens a job must declare.
struct IdentityConfigTests {
    static let dir: String = {
        let d = NSTemporaryDirectory() + "airlock-identity-config-\(getpid())"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        let key = d + "/issuer.pem"
        if !FileManager.default.fileExists(atPath: key) {
            FileManager.default.createFile(atPath: key, contents: Data(P256.Signing.PrivateKey().pemRepresentation.utf8), attributes: [.posixPermissions: 0o600])
        }
        return d
    }()

    static let head = """
    [runner]
    builds_root = "/srv/b"
    cache_root = "/srv/c"
    state_dir = "/srv/s"
    audit_log = "/srv/a.jsonl"

    [gitlab]
    issuer = "https://gitlab.example.com"
    audience = "https://airlock.example.com"

    """
    static var issuer: String { "[issuer]\nurl = \"https://airlock.example.com\"\nsigning_key_file = \"\(dir)/issuer.pem\"\n\n" }
    static let wip = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/airlock/providers/runners"

    static let providers = """
    [providers.aws]
    type = "aws"
    identity = "airlock"

    [providers.azure]
    type = "azure"
    tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    identity = "airlock"

    [providers.gcp]
    type = "gcp"
    identity = "airlock"

    [providers.auth0]
    type = "oauth2"
    token_endpoint = "https://tenant.eu.auth0.com:8443/oauth/token"
    identity = "airlock"

    [providers.vault]
    type = "vault"
    address = "https://vault.example.com:8200"
    identity = "airlock"
    audience = "https://vault.example.com"
    subject = "project-{project_id}"

    [profiles.deploy]
    provider = "aws"
    role_arn = "arn:aws:iam::123456789012:role/ci"

    [profiles.arm]
    provider = "azure"
    client_id = "8a3b1c2d-0000-4e5f-9a8b-7c6d5e4f3a2b"
    resource = "arm"

    [profiles.gcs]
    provider = "gcp"
    workload_identity_provider = "\(wip)"

    [profiles.api]
    provider = "auth0"
    grant = "token_exchange"

    [profiles.secrets]
    provider = "vault"
    role = "ci"
    token = true

    """

    @Test func eachKindDefaultsToTheAudienceItsServiceExpects() throws {
        let c = try AirlockConfig.parse(Self.head + Self.issuer + Self.providers)
        func audience(_ profile: String) -> String? {
            guard let p = c.profiles[profile], let spec = c.providers[p.provider] else { return nil }
            return spec.airlockAudience(for: p.settings)
        }
        #expect(audience("deploy") == "sts.amazonaws.com")
        #expect(audience("arm") == "api://AzureADTokenExchange")
        #expect(audience("gcs") == "https:" + Self.wip)
        #expect(audience("api") == "https://tenant.eu.auth0.com:8443")
        #expect(audience("secrets") == "https://vault.example.com")
        #expect(c.providers["vault"]?.identity == .airlock(audience: "https://vault.example.com", subject: "project-{project_id}"))
        #expect(c.providers["aws"]?.identity == .airlock(audience: nil, subject: "{sub}"))
        // Entra no longer needs the job's second ID token: the job declares only Airlock's.
        #expect(c.providers["azure"]?.audienceToken == nil)
        #expect(c.consumedTokenVariables == ["AIRLOCK_ID_TOKEN"])
    }

    @Test func anAudienceOverridesTheKindsDefault() throws {
        let text = Self.providers.replacingOccurrences(of: "[providers.aws]\ntype = \"aws\"\n", with: "[providers.aws]\ntype = \"aws\"\naudience = \"https://iam.example.com\"\n")
        let c = try AirlockConfig.parse(Self.head + Self.issuer + text)
        let p = try #require(c.profiles["deploy"])
        #expect(c.providers["aws"]?.airlockAudience(for: p.settings) == "https://iam.example.com")
    }

    @Test(arguments: [
        ("no [issuer]", head + providers, "airlock.toml:26: [providers.auth0] identity: \"airlock\" presents a token Airlock signs: add an [issuer] section"),
        ("unknown identity", head + issuer + "[providers.aws]\ntype = \"aws\"\nidentity = \"github\"\n", "airlock.toml:16: [providers.aws] identity: expected \"gitlab\" (the job's GitLab ID token) or \"airlock\""),
        ("audience without airlock", head + "[providers.aws]\ntype = \"aws\"\naudience = \"sts.amazonaws.com\"\n", "airlock.toml:12: [providers.aws] audience: is the aud of Airlock's own token: it needs identity = \"airlock\""),
        ("subject without airlock", head + "[providers.aws]\ntype = \"aws\"\nsubject = \"{sub}\"\n", "airlock.toml:12: [providers.aws] subject: is the sub of Airlock's own token: it needs identity = \"airlock\""),
        ("subject with an unknown claim", head + issuer + "[providers.aws]\ntype = \"aws\"\nidentity = \"airlock\"\nsubject = \"{repo}\"\n", "airlock.toml:17: [providers.aws] subject: {repo} is not a GitLab ID token claim"),
        ("vault without an audience", head + issuer + "[providers.vault]\ntype = \"vault\"\naddress = \"https://v.example.com\"\nidentity = \"airlock\"\n[profiles.s]\nprovider = \"vault\"\nrole = \"ci\"\ntoken = true\n",
         "airlock.toml:19: [profiles.s] provider: [providers.vault] has identity = \"airlock\" but nothing says the aud of Airlock's token for it: set audience on [providers.vault] to what the provider expects (a value of the JWT role's bound_audiences)"),
    ])
    func whatAirlocksIdentityNeedsIsAConfigError(_ name: String, _ text: String, _ error: String) {
        let e = #expect(throws: ConfigError.self) { _ = try AirlockConfig.parse(text, path: "airlock.toml") }
        #expect(e?.message.hasPrefix(error) == true, "\(name): \(e?.message ?? "no error")")
    }

    /// An OAuth client_credentials profile presents no job identity, so it needs no audience and
    /// keeps nothing; a token-exchange profile of the same provider does.
    @Test func onlyProfilesThatPresentTheJobsIdentityNeedIt() throws {
        let text = Self.head + Self.issuer + """
        [providers.auth0]
        type = "oauth2"
        token_endpoint = "https://tenant.eu.auth0.com/oauth/token"
        client_id = "ci"
        private_key_file = "\(Self.dir)/issuer.pem"

        [profiles.m2m]
        provider = "auth0"
        grant = "client_credentials"

        [profiles.api]
        provider = "auth0"
        grant = "token_exchange"
        """
        let c = try AirlockConfig.parse(text)
        let spec = try #require(c.providers["auth0"])
        #expect(spec.needsGitLabToken(try #require(c.profiles["api"]).settings))
        #expect(!spec.needsGitLabToken(try #require(c.profiles["m2m"]).settings))
        let airlock = try AirlockConfig.parse(text.replacingOccurrences(of: "type = \"oauth2\"\n", with: "type = \"oauth2\"\nidentity = \"airlock\"\n"))
        #expect(!(try #require(airlock.providers["auth0"])).needsGitLabToken(try #require(airlock.profiles["api"]).settings))
    }

    /// Entra verifies RSA-signed external tokens only; the others take ES256 as well.
    @Test func entraRefusesAnES256Issuer() throws {
        let c = try AirlockConfig.parse(Self.head + Self.issuer + Self.providers)
        #expect(c.providers["azure"]?.refusesSignatures("ES256")?.contains("verifies only RS256") == true)
        #expect(c.providers["azure"]?.refusesSignatures("RS256") == nil)
        for name in ["aws", "gcp", "auth0", "vault"] { #expect(c.providers[name]?.refusesSignatures("ES256") == nil, "\(name)") }
        let gitlab = try AirlockConfig.parse(Self.head + "[providers.azure]\ntype = \"azure\"\ntenant_id = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\n")
        #expect(gitlab.providers["azure"]?.refusesSignatures("ES256") == nil)  // shown GitLab's token: not Airlock's key
    }
}
