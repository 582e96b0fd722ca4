package import ConfigSyntax
import Foundation
public import Identity
import Policy

/// `[providers.NAME]` as its kind read it.
public protocol ProviderSettings: Sendable {
    /// The second ID token this provider is sent instead of the one Airlock's policy reads.
    var audienceToken: AudienceToken? { get }
    /// Files with secrets Airlock reads (client keys): hidden from every job, checked by `airlock check`.
    var secretFiles: [(key: String, path: String)] { get }
    /// `airlock check`'s look at one of `secretFiles`: a note on what it is, or the problem.
    func checkSecretFile(_ path: String) async -> Result<String, SecretFileProblem>
    /// The `aud` Airlock's own token carries for this provider with `identity = "airlock"`, unless
    /// its profile or the provider's `audience` says otherwise; nil: none (the config must say).
    var airlockAudience: String? { get }
    /// The JWS algorithms the provider verifies an external token with; nil: any Airlock signs with.
    var airlockAlgorithms: [String]? { get }
    /// Where it is, for `airlock policy export` (Vault's address, the OAuth token endpoint).
    var target: [String: String] { get }
}

public struct SecretFileProblem: Error, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
}

extension ProviderSettings {
    public var audienceToken: AudienceToken? { nil }
    public var secretFiles: [(key: String, path: String)] { [] }
    public func checkSecretFile(_ path: String) async -> Result<String, SecretFileProblem> { .success("present") }
    public var airlockAudience: String? { nil }
    public var airlockAlgorithms: [String]? { nil }
    public var target: [String: String] { [:] }
}

/// The provider-specific part of a `[profiles.NAME]`, as its kind read it.
public protocol ProfileSettings: Sendable {
    /// This profile's own default `aud` for Airlock's token (GCP: its pool provider); nil: the provider's.
    var airlockAudience: String? { get }
    /// Whether issuing it presents the job's identity at all (an OAuth client_credentials grant does not).
    var presentsJobIdentity: Bool { get }
    /// What it reaches, for `airlock policy export` and a portal: the role, tenant and app, service
    /// account, Vault role and paths... ({claim} templates as written).
    var target: [String: String] { get }
}

extension ProfileSettings {
    public var airlockAudience: String? { nil }
    public var presentsJobIdentity: Bool { true }
    public var target: [String: String] { [:] }
}

/// Which identity a provider is shown (issue 17): GitLab's ID token as the job brought it, or a
/// token Airlock mints for each exchange, signed by its `[issuer]` key, that only jobs which passed
/// Airlock's checks on these runners get.
public enum JobIdentity: Sendable, Equatable {
    case gitlab
    /// `audience`: the provider's `audience` override; `subject`: the `sub` template.
    case airlock(audience: String?, subject: String)

    public static let defaultSubject = "{sub}"
    public var isAirlock: Bool { if case .airlock = self { true } else { false } }
}

/// A second `id_tokens:` entry with the audience a provider insists on (Entra wants
/// `api://AzureADTokenExchange`). Airlock verifies it like the first (same issuer, keys, job, sub).
public struct AudienceToken: Sendable, Equatable {
    public var variable: String
    public var audience: String
    public init(variable: String, audience: String) {
        self.variable = variable
        self.audience = audience
    }
}

/// One kind of identity provider, `type = "<typeName>"`: its configuration, how it issues and
/// revokes, what it delivers. Each kind lives in its own folder under Federation; `ProviderKinds.all`
/// wires it in.
package protocol ProviderKind: Sendable {
    associatedtype Settings: ProviderSettings
    associatedtype Profile: ProfileSettings
    static var typeName: String { get }
    /// The SDK endpoint that serves its credentials with `deliver = "endpoint"`; nil: none.
    static var endpoint: EndpointKind? { get }
    /// Reads `[providers.NAME]` (its `type` already read). Findings that are not errors go to `warnings`.
    static func settings(name: String, _ c: inout TOMLCursor, warnings: inout [String]) throws(ConfigError) -> Settings
    /// Reads a profile's own keys (`provider`, `stages`, `deliver` and `description` already read).
    static func profile(name: String, provider: String, settings: Settings, deliver: DeliveryMode,
                        _ c: inout TOMLCursor) throws(ConfigError) -> Profile
    /// The provider that issues and revokes these profiles.
    static func provider(name: String, settings: Settings, profiles: [String: Profile],
                         transport: any HTTPTransport) -> any CredentialProvider
}

extension ProviderKind {
    package static var endpoint: EndpointKind? { nil }
}

/// A provider kind with its types erased, so that the registry can hold every kind in one list.
package struct AnyProviderKind: Sendable {
    package let typeName: String
    package let endpoint: EndpointKind?
    let settings: @Sendable (String, inout TOMLCursor, inout [String]) throws(ConfigError) -> any ProviderSettings
    let profile: @Sendable (String, String, any ProviderSettings, DeliveryMode, inout TOMLCursor) throws(ConfigError) -> any ProfileSettings
    let provider: @Sendable (String, any ProviderSettings, [String: any ProfileSettings], any HTTPTransport) -> (any CredentialProvider)?

    package init<K: ProviderKind>(_ kind: K.Type) {
        typeName = K.typeName
        endpoint = K.endpoint
        settings = { name, c, warnings throws(ConfigError) in try K.settings(name: name, &c, warnings: &warnings) }
        profile = { name, provider, settings, deliver, c throws(ConfigError) in
            guard let s = settings as? K.Settings else { throw c.error("provider", "is not a \(K.typeName) provider") }
            return try K.profile(name: name, provider: provider, settings: s, deliver: deliver, &c)
        }
        provider = { name, settings, profiles, transport in
            guard let s = settings as? K.Settings else { return nil }
            return K.provider(name: name, settings: s, profiles: profiles.compactMapValues { $0 as? K.Profile }, transport: transport)
        }
    }
}

/// `[providers.NAME]`: a provider of one of `ProviderKinds.all`.
public struct ProviderSpec: Sendable {
    public let name: String
    public let typeName: String
    public let settings: any ProviderSettings
    /// `identity`: GitLab's token (default) or Airlock's own.
    public let identity: JobIdentity

    /// The second ID token a job declares for this provider; none when Airlock presents its own token.
    public var audienceToken: AudienceToken? { identity.isAirlock ? nil : settings.audienceToken }

    /// The `aud` of Airlock's token for `profile`; nil with `identity = "gitlab"` or when nothing says.
    public func airlockAudience(for profile: any ProfileSettings) -> String? {
        guard case .airlock(let override, _) = identity else { return nil }
        return override ?? profile.airlockAudience ?? settings.airlockAudience
    }

    /// Why this provider would refuse tokens signed with `algorithm`; nil when it takes them.
    public func refusesSignatures(_ algorithm: String) -> String? {
        guard identity.isAirlock, let accepted = settings.airlockAlgorithms, !accepted.contains(algorithm) else { return nil }
        return "[providers.\(name)] (\(typeName)) verifies only \(accepted.joined(separator: ", ")) tokens, and [issuer] signing_key_file signs \(algorithm): use an RSA key of at least 2048 bits (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out FILE; chmod 600 FILE), published before it signs (airlock issuer rotate explains the overlap)"
    }

    /// Whether issuing `profile` needs the job's GitLab ID token (and so whether it must be kept).
    public func needsGitLabToken(_ profile: any ProfileSettings) -> Bool {
        !identity.isAirlock && profile.presentsJobIdentity
    }
}

/// The provider kinds this build supports. A new kind is a folder under Federation and one line in `all`.
public enum ProviderKinds {
    package static let all: [AnyProviderKind] = [
        AnyProviderKind(AWSKind.self),
        AnyProviderKind(VaultKind.self),
        AnyProviderKind(OAuthKind.self),
        AnyProviderKind(AzureKind.self),
        AnyProviderKind(GCPKind.self),
    ]

    public static var typeNames: [String] { all.map { $0.typeName } }

    static func named(_ type: String) -> AnyProviderKind? { all.first { $0.typeName == type } }

    /// Reads `[providers.NAME]`.
    package static func spec(name: String, _ c: inout TOMLCursor, warnings: inout [String]) throws(ConfigError) -> ProviderSpec {
        let list = typeNames.map(\.quoted).joined(separator: ", ")
        let type = try c.requiredString("type", hint: "one of " + list)
        guard let kind = named(type) else {
            throw c.error("type", "unknown provider type \(type.quoted); this build supports: " + list)
        }
        let identity = try Self.identity(&c)
        return ProviderSpec(name: name, typeName: type, settings: try kind.settings(name, &c, &warnings), identity: identity)
    }

    /// `identity`, `audience` and `subject`: which token the provider is shown (issue 17).
    static func identity(_ c: inout TOMLCursor) throws(ConfigError) -> JobIdentity {
        let text = try c.string("identity") ?? "gitlab"
        let audience = try c.string("audience")
        let subject = try c.string("subject")
        switch text {
        case "gitlab":
            if audience != nil { throw c.error("audience", "is the aud of Airlock's own token: it needs identity = \"airlock\"") }
            if subject != nil { throw c.error("subject", "is the sub of Airlock's own token: it needs identity = \"airlock\"") }
            return .gitlab
        case "airlock":
            if let audience, audience.isEmpty { throw c.error("audience", "must not be empty") }
            let sub = subject ?? JobIdentity.defaultSubject
            guard !sub.isEmpty else { throw c.error("subject", "must not be empty") }
            try c.checkClaims(sub, key: "subject")
            return .airlock(audience: audience, subject: sub)
        default:
            throw c.error("identity", "expected \"gitlab\" (the job's GitLab ID token) or \"airlock\" (a token Airlock mints, signed by its [issuer] key), got \(text.quoted)")
        }
    }

    /// Reads a profile's own keys for its provider `spec`.
    package static func profile(name: String, spec: ProviderSpec, deliver: DeliveryMode, _ c: inout TOMLCursor) throws(ConfigError) -> any ProfileSettings {
        guard let kind = named(spec.typeName) else { throw c.error("provider", "has an unknown type \(spec.typeName.quoted)") }
        if deliver == .endpoint && kind.endpoint == nil {
            let served = all.filter { $0.endpoint != nil }.map(\.typeName).joined(separator: ", ")
            throw c.error("deliver", "\"endpoint\" serves profiles of types \(served) (the SDKs' container, managed identity and metadata endpoints); use env or file for \(spec.typeName)")
        }
        let profile = try kind.profile(name, spec.name, spec.settings, deliver, &c)
        if spec.identity.isAirlock && profile.presentsJobIdentity && spec.airlockAudience(for: profile) == nil {
            throw c.error("provider", "[providers.\(spec.name)] has identity = \"airlock\" but nothing says the aud of Airlock's token for it: set audience on [providers.\(spec.name)] to what the provider expects"
                          + (spec.typeName == "vault" ? " (a value of the JWT role's bound_audiences)" : ""))
        }
        return profile
    }

    /// The providers a configuration defines, each knowing its profiles (`profiles`: name → its
    /// provider's name and its settings).
    public static func providers(_ specs: [String: ProviderSpec], profiles: [String: (provider: String, settings: any ProfileSettings)],
                                 transport: any HTTPTransport) -> [String: any CredentialProvider] {
        var out: [String: any CredentialProvider] = [:]
        for (name, spec) in specs {
            guard let kind = named(spec.typeName) else { continue }
            let mine = profiles.filter { $0.value.provider == name }.mapValues(\.settings)
            out[name] = kind.provider(name, spec.settings, mine, transport)
        }
        return out
    }
}

/// Checks a provider's parser shares.
extension TOMLCursor {
    /// Every `{placeholder}` of `value` must be a GitLab ID token claim.
    package func checkClaims(_ value: String?, key: String) throws(ConfigError) {
        for ph in Template.placeholders(in: value ?? "") where !knownGitLabClaims.contains(ph) {
            throw error(key, "{\(ph)} is not a GitLab ID token claim")
        }
    }

    /// `token_variable` and `token_audience`: a second ID token for providers that insist on an audience.
    package mutating func audienceToken(defaultVariable: String?, defaultAudience: String?) throws(ConfigError) -> AudienceToken? {
        let variable = try string("token_variable") ?? defaultVariable
        let audience = try string("token_audience") ?? defaultAudience
        guard let variable else {
            if audience != nil { throw error("token_audience", "needs token_variable: the id_tokens: name jobs declare with this audience") }
            return nil
        }
        guard Self.isVariableName(variable) else {
            throw error("token_variable", "must be a variable name, got \(variable.quoted)")
        }
        guard let audience, !audience.isEmpty else { throw error("token_audience", "is required with token_variable: the aud jobs request for it") }
        return AudienceToken(variable: variable, audience: audience)
    }

    /// An https endpoint (loopback http for tests) with a default, without a lone trailing slash.
    package mutating func endpoint(_ key: String, default d: String) throws(ConfigError) -> String {
        let v = try secureURL(key, default: d)!
        return v.hasSuffix("/") && URL(string: v)?.path == "/" ? String(v.dropLast()) : v
    }
}
