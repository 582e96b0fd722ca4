package import ConfigSyntax
import Foundation
package import Identity

/// `type = "azure"`: Microsoft Entra ID workload identity federation (federation.md A2).
package enum AzureKind: ProviderKind {
    package static let endpoint: EndpointKind? = .azureManagedIdentity
    package static let typeName = "azure"
    package static let defaultAuthority = "https://login.microsoftonline.com"
    package static let defaultTokenVariable = "AZURE_ID_TOKEN"
    package static let defaultTokenAudience = "api://AzureADTokenExchange"
    static let guid = #"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"#
    static let domain = #"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"#

    package static func settings(name: String, _ c: inout TOMLCursor, warnings: inout [String]) throws(ConfigError) -> AzureSettings {
        let tenant = try c.string("tenant_id")
        return AzureSettings(authorityHost: try c.endpoint("authority_host", default: defaultAuthority), tenantID: tenant,
                             token: try c.audienceToken(defaultVariable: defaultTokenVariable, defaultAudience: defaultTokenAudience)!)
    }

    package static func profile(name: String, provider: String, settings a: AzureSettings, deliver: DeliveryMode,
                                _ c: inout TOMLCursor) throws(ConfigError) -> AzureProfile {
        if deliver == .endpoint, try c.stringMap("secrets") != nil {
            throw c.error("deliver", "\"endpoint\" serves Azure tokens; Key Vault secrets are delivered as env or file")
        }
        guard let tenant = try c.string("tenant_id") ?? a.tenantID else {
            throw c.error("tenant_id", "is required (here or on [providers.\(provider)]): the Entra tenant's GUID or domain")
        }
        try c.checkClaims(tenant, key: "tenant_id")
        let client = try c.requiredString("client_id", hint: "the application (client) ID of the app registration or user-assigned managed identity that holds the federated credential")
        try c.checkClaims(client, key: "client_id")
        guard TOMLCursor.matches(client, guid) || client.contains("{") else {
            throw c.error("client_id", "\(client.quoted) is not an application (client) ID: a GUID like 0a1b2c3d-0000-4000-8000-00000000abcd")
        }
        guard TOMLCursor.matches(tenant, guid) || TOMLCursor.matches(tenant, domain) || tenant.contains("{") else {
            throw c.error(try c.string("tenant_id") == nil ? "provider" : "tenant_id", "\(tenant.quoted) is not an Entra tenant: its GUID or a domain like contoso.onmicrosoft.com")
        }
        let vaultURL = try c.string("key_vault")
        let secrets = try c.stringMap("secrets") ?? [:]
        for v in secrets.keys { _ = try c.variableName(v, key: "secrets") }
        if !secrets.isEmpty && vaultURL == nil { throw c.error("key_vault", "is required with secrets: the vault URL, e.g. \"https://ci-secrets.vault.azure.net\"") }
        if let vaultURL {
            guard TOMLCursor.isSecureURL(vaultURL) else {
                throw c.error("key_vault", "must be an https URL, got \(vaultURL.quoted)")
            }
            guard !secrets.isEmpty else { throw c.error("secrets", "is required with key_vault: map job variables to secret names, e.g. { DB_PASSWORD = \"db-password\" }") }
        }
        let resourceText = try c.string("resource") ?? (secrets.isEmpty ? nil : "key_vault")
        let scope = try c.string("scope")
        let resource: AzureResource
        switch resourceText {
        case "arm": resource = .arm
        case "key_vault": resource = .keyVault
        case "cosmos":
            let account = try c.requiredString("cosmos_account", hint: "the Cosmos DB account name (the <account> of https://<account>.documents.azure.com)")
            guard TOMLCursor.matches(account, "^[a-z0-9-]{3,50}$") else {
                throw c.error("cosmos_account", "\(account.quoted) is not a Cosmos DB account name (3-50 of a-z, 0-9, -)")
            }
            resource = .cosmos(account: account)
        case nil:
            guard let scope else { throw c.error("resource", "is required: \"arm\", \"cosmos\", \"key_vault\", or give scope = \"<resource>/.default\"") }
            resource = .scope(scope)
        default:
            throw c.error("resource", "expected \"arm\", \"cosmos\" or \"key_vault\" (or leave it out and give scope), got \(resourceText!.quoted)")
        }
        if scope != nil, resourceText != nil { throw c.error("scope", "give either resource or scope, not both") }
        if !secrets.isEmpty && resource != .keyVault { throw c.error("resource", "must be \"key_vault\" (or absent) with secrets") }
        let variable = try c.variableName(try c.string("variable") ?? "AZURE_ACCESS_TOKEN", key: "variable")
        return AzureProfile(tenantID: tenant, clientID: client, resource: resource, keyVaultURL: vaultURL,
                            keyVaultSecrets: secrets, variable: variable)
    }

    package static func provider(name: String, settings: AzureSettings, profiles: [String: AzureProfile],
                                 transport: any HTTPTransport) -> any CredentialProvider {
        AzureProvider(name: name, authorityHost: URL(string: settings.authorityHost)!, profiles: profiles, transport: transport)
    }
}

/// `[providers.NAME]` of type azure.
public struct AzureSettings: ProviderSettings {
    public var authorityHost: String
    public var tenantID: String?
    /// Entra takes only a token with its own audience: jobs declare a second ID token.
    public var token: AudienceToken
    public var audienceToken: AudienceToken? { token }
    /// What Microsoft recommends a federated identity credential's audiences be.
    public var airlockAudience: String? { "api://AzureADTokenExchange" }
    /// Entra verifies external tokens signed with RSA keys only: ES256 is refused with AADSTS5002738
    /// ("'ES256' is not a supported signature algorithm"; AzureAD/microsoft-identity-web#3467).
    public var airlockAlgorithms: [String]? { ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] }
}

/// The App Service managed identity endpoint (federation.md B2), as azure-identity speaks it.
public enum AzureManagedIdentity {
    package static let apiVersion = "2019-08-01"

    /// The resource a request names, without `/.default`.
    public static func wanted(_ resource: String) -> String {
        resource.hasSuffix("/.default") ? String(resource.dropLast(9)) : resource
    }

    /// Which of the job's Azure profiles (sorted by name) serves `wanted`: its scope's resource, with
    /// or without a trailing slash (Cosmos DB: the account's or the generic one).
    public static func profile(serving wanted: String, among profiles: [(name: String, profile: AzureProfile)]) -> String? {
        profiles.first { _, p in
            var scopes = [p.resource.scope]
            if case .cosmos = p.resource { scopes.append(AzureResource.cosmosFallbackScope) }
            return scopes.contains { $0.dropLast(9) == wanted || $0.dropLast(9) == wanted + "/" || $0.dropLast(9) + "/" == wanted }
        }?.name
    }

    /// The resources the job may ask for, for the refusal message.
    public static func granted(_ profiles: [AzureProfile]) -> [String] {
        profiles.map { String($0.resource.scope.dropLast(9)) }
    }

    /// A `client_id` the SDK sends must be the profile's (a templated one is checked by Entra).
    public static func clientAllowed(_ client: String?, _ p: AzureProfile) -> Bool {
        guard let client, !client.isEmpty else { return true }
        return client == p.clientID || p.clientID.contains("{")
    }

    public static func body(_ c: IssuedCredential, resource: String, profile p: AzureProfile) -> [String: String] {
        ["access_token": c.secrets["access_token"] ?? "", "expires_on": String(Int(c.expiresAt.timeIntervalSince1970)),
         "resource": resource, "token_type": "Bearer", "client_id": c.details["client_id"] ?? p.clientID]
    }
}
