/// The `[providers.NAME]` tables that point Airlock at the test peers, written once for every suite
/// (moto, OpenBao or FakeVault, the Entra, Google and OAuth fakes). Each ends with a blank line so
/// that tables can be concatenated with the suite's own profiles and rules.
public enum PeerTables {
    public static func aws(_ name: String = "aws", moto: MotoServer, region: String? = nil) -> String {
        aws(name, sts: moto.url, region: region)
    }

    public static func aws(_ name: String = "aws", sts: String, region: String? = nil) -> String {
        table(name, [("type", "aws"), ("sts_endpoint", sts)] + (region.map { [("region", $0)] } ?? []))
    }

    public static func vault(_ name: String = "vault", address: String, namespace: String? = nil) -> String {
        table(name, [("type", "vault"), ("address", address)] + (namespace.map { [("auth_mount", "jwt"), ("namespace", $0)] } ?? []))
    }

    public static func azure(_ azure: FakeAzure, name: String = "azure") -> String {
        table(name, [("type", "azure"), ("authority_host", azure.authorityHost), ("tenant_id", azure.tenant)])
    }

    /// `audienceToken`: (variable, audience) of the second ID token the pool provider wants.
    public static func gcp(_ google: FakeGoogle, name: String = "gcp", audienceToken: (variable: String, audience: String)? = nil) -> String {
        table(name, [("type", "gcp"), ("sts_endpoint", google.stsEndpoint), ("iam_credentials_endpoint", google.baseURL)]
              + (audienceToken.map { [("token_variable", $0.variable), ("token_audience", $0.audience)] } ?? []))
    }

    /// An OAuth server; with `keyFile`, private_key_jwt as `clientID`; with `revocation` and
    /// `introspection`, the fake's endpoints for them.
    public static func oauth(_ name: String, _ server: FakeOAuthServer, clientID: String, keyFile: String? = nil,
                             revocation: Bool = false, introspection: Bool = false) -> String {
        var keys = [("type", "oauth2"), ("token_endpoint", server.tokenEndpoint)]
        if revocation { keys.append(("revocation_endpoint", "\(server.baseURL)/oauth/revoke")) }
        if introspection { keys.append(("introspection_endpoint", "\(server.baseURL)/oauth/introspect")) }
        keys.append(("client_id", clientID))
        if let keyFile { keys.append(("private_key_file", keyFile)) }
        return table(name, keys)
    }

    /// One profile on each of the five providers (tables named aws, azure, gcp, plain, vault):
    /// `deploy` (AWS role gitlab-{project_id}), `arm` (Entra, ARM), `gcs` (Google, `workloadIdentityProvider`
    /// impersonating `serviceAccount`), `plain` (OAuth token exchange into PLAIN_TOKEN) and
    /// `vault-token` (a Vault token of `vaultRole`). AirlockIssuerEndToEndTests and bench-prepare.
    public static let fiveProfiles = ["deploy", "arm", "gcs", "plain", "vault-token"]
    public static func fiveProfiles(azureClient: String, workloadIdentityProvider: String, serviceAccount: String,
                                    vaultRole: String, deployExtra: String = "") -> String {
        """
        [profiles.deploy]
        provider = "aws"
        role_arn = "arn:aws:iam::123456789012:role/gitlab-{project_id}"
        \(deployExtra)

        [profiles.arm]
        provider = "azure"
        client_id = "\(azureClient)"
        resource = "arm"

        [profiles.gcs]
        provider = "gcp"
        workload_identity_provider = "\(workloadIdentityProvider)"
        service_account = "\(serviceAccount)"

        [profiles.plain]
        provider = "plain"
        grant = "token_exchange"
        variable = "PLAIN_TOKEN"

        [profiles.vault-token]
        provider = "vault"
        role = "\(vaultRole)"
        token = true

        """
    }

    static func table(_ name: String, _ keys: [(String, String)]) -> String {
        "[providers.\(name)]\n" + keys.map { "\($0.0) = \"\($0.1)\"\n" }.joined() + "\n"
    }
}
