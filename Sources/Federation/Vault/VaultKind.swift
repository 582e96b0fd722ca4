package import ConfigSyntax
import Foundation
package import Identity

/// `type = "vault"`: HashiCorp Vault (and OpenBao) JWT auth (federation.md A4).
package enum VaultKind: ProviderKind {
    package static let typeName = "vault"

    package static func settings(name: String, _ c: inout TOMLCursor, warnings: inout [String]) throws(ConfigError) -> VaultSettings {
        let address = try c.requiredSecureURL("address", hint: "e.g. \"https://vault.example.com:8200\"")
        return VaultSettings(address: address, authMount: try c.string("auth_mount") ?? "jwt", namespace: try c.string("namespace"))
    }

    package static func profile(name: String, provider: String, settings: VaultSettings, deliver: DeliveryMode,
                                _ c: inout TOMLCursor) throws(ConfigError) -> VaultProfile {
        let role = try c.requiredString("role", hint: "the Vault JWT role, e.g. \"ci-{project_id}\"")
        let secret = try c.string("secret")
        let secretParams = try c.stringMap("secret_params") ?? [:]
        if !secretParams.isEmpty && secret == nil {
            throw c.error("secret_params", "is sent with secret: name the path it goes to, e.g. secret = \"pki/issue/ci\"")
        }
        let kv = try c.string("kv")
        let env = try c.stringMap("env") ?? [:]
        let token = try c.bool("token") ?? false
        guard secret != nil || kv != nil || token else {
            throw c.error(nil, "a Vault profile needs secret (a dynamic secret path), kv (<mount>/<path>) or token = true")
        }
        if (secret != nil || kv != nil) && env.isEmpty {
            throw c.error("env", "is required with secret or kv: map job variables to fields, e.g. { DB_USER = \"username\" }")
        }
        for v in env.keys where !TOMLCursor.isVariableName(v) {
            throw c.error("env", "\(v.quoted) is not a variable name")
        }
        try c.checkClaims(role, key: "role")
        try c.checkClaims(kv, key: "role")
        for v in secretParams.values { try c.checkClaims(v, key: "secret_params") }
        return VaultProfile(role: role, secret: secret, secretParams: secretParams, kv: kv, env: env, token: token)
    }

    package static func provider(name: String, settings: VaultSettings, profiles: [String: VaultProfile],
                                 transport: any HTTPTransport) -> any CredentialProvider {
        VaultProvider(name: name, address: URL(string: settings.address)!, authMount: settings.authMount,
                      namespace: settings.namespace, profiles: profiles, transport: transport)
    }
}

/// `[providers.NAME]` of type vault.
public struct VaultSettings: ProviderSettings {
    public var address: String
    public var authMount: String
    public var namespace: String?
    public var target: [String: String] {
        ["address": address, "auth_mount": authMount].merging(namespace.map { ["namespace": $0] } ?? [:]) { a, _ in a }
    }
}
