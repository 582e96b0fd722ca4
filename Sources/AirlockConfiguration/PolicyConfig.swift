public import Federation
import ConfigSyntax
import Foundation
import Identity
import Policy
import RunnerContract

/// `[profiles.NAME]`: what a grant hands out. Its provider-specific part (`settings`) is what the
/// provider's kind read (an `AWSRoleProfile`, a `VaultProfile`, ...).
public struct ProfileSpec: Sendable {
    public var name: String
    public var provider: String
    /// The stages that receive it; nil means build_script, step_* and after_script.
    public var stages: [String]?
    public var deliver: DeliveryMode
    public var settings: any ProfileSettings

    public init(name: String, provider: String, stages: [String]? = nil, deliver: DeliveryMode, settings: any ProfileSettings) {
        self.name = name
        self.provider = provider
        self.stages = stages
        self.deliver = deliver
        self.settings = settings
    }

    /// The provider-specific part as `T`, or nil when the profile is of another kind.
    public func settings<T: ProfileSettings>(as type: T.Type) -> T? { settings as? T }
}

extension AirlockConfig {
    static func parseGitLab(_ g: inout TOMLCursor) throws(ConfigError) -> IssuerSettings {
        let issuer = try g.requiredString("issuer", hint: "the GitLab URL, exactly as the token's iss, e.g. \"https://gitlab.example.com\"")
        guard TOMLCursor.isSecureURL(issuer) else {
            throw g.error("issuer", "must be an https URL (http only on loopback, for tests), got \(issuer.quoted)")
        }
        let audience = try g.requiredString("audience", hint: "the aud jobs put in their id_tokens: block, e.g. \"https://airlock.example.com\"")
        var s = IssuerSettings(issuer: issuer, audience: audience)
        s.tokenVariable = try g.string("token_variable") ?? IssuerSettings.defaultTokenVariable
        guard TOMLCursor.isVariableName(s.tokenVariable) else {
            throw g.error("token_variable", "must be a variable name, got \(s.tokenVariable.quoted)")
        }
        s.jwksCacheTTL = try g.duration("jwks_cache_ttl") ?? s.jwksCacheTTL
        s.jwksGrace = try g.duration("jwks_grace") ?? s.jwksGrace
        s.jwksFile = try g.string("jwks_file")
        if try g.string("ca_file") != nil {
            // FoundationNetworking on Linux passes no custom CA bundle to libcurl (the
            // URLSessionCertificateAuthorityInfoFile override exists on Android only), so a
            // ca_file here would be silently ignored.
            throw g.error("ca_file", "is not supported by this build: URLSession on Linux uses the system CA store only. Add the CA there instead (copy it to /usr/local/share/ca-certificates/ and run update-ca-certificates), or use jwks_file")
        }
        s.clockSkew = try g.duration("clock_skew") ?? s.clockSkew
        guard s.clockSkew <= 300 else { throw g.error("clock_skew", "must be at most 5m; a large skew accepts expired tokens") }
        s.maxTokenBytes = try g.int("max_token_bytes") ?? s.maxTokenBytes
        s.unknownKidRefreshInterval = try g.duration("unknown_kid_refresh_interval") ?? s.unknownKidRefreshInterval
        s.requireToken = try g.bool("require_token") ?? false
        if let algs = try g.stringArray("algorithms") {
            let allowed = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]
            for a in algs where !allowed.contains(a) {
                throw g.error("algorithms", "\(a.quoted) is not allowed; choose from \(allowed.joined(separator: ", ")) (none and HMAC are never accepted)")
            }
            s.algorithms = algs
        }
        if let extra = try g.stringArray("required_claims") { s.requiredClaims = Array(Set(s.requiredClaims + extra)).sorted() }
        try g.finish()
        return s
    }

    static func parseProviders(_ p: TOMLCursor, issuer: Bool, warnings: inout [String]) throws(ConfigError) -> [String: ProviderSpec] {
        var out: [String: ProviderSpec] = [:]
        for (name, var c) in try p.subtables() {
            let spec = try ProviderKinds.spec(name: name, &c, warnings: &warnings)
            if spec.identity.isAirlock && !issuer {
                throw c.error("identity", "\"airlock\" presents a token Airlock signs: add an [issuer] section (url, signing_key_file) and register it with the provider")
            }
            out[name] = spec
            try c.finish()
        }
        return out
    }

    static func parseProfiles(_ p: TOMLCursor, providers: [String: ProviderSpec]) throws(ConfigError) -> [String: ProfileSpec] {
        var out: [String: ProfileSpec] = [:]
        for (name, var c) in try p.subtables() {
            let provider = try c.requiredString("provider", hint: "the name of a [providers.NAME] section")
            guard let spec = providers[provider] else {
                throw c.error("provider", "\(provider.quoted) is not defined: add a [providers.\(provider)] section with its type (defined: \(providers.keys.sorted().joined(separator: ", ")))")
            }
            let stages = try c.stringArray("stages")
            for s in stages ?? [] where !Stage.isValidName(s) {
                throw c.error("stages", "\(s.quoted) is not a stage name")
            }
            let deliverText = try c.string("deliver") ?? DeliveryMode.env.rawValue
            guard let deliver = DeliveryMode(rawValue: deliverText) else {
                throw c.error("deliver", "expected one of \(DeliveryMode.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")), got \(deliverText.quoted)")
            }
            _ = try c.string("description")
            let settings = try ProviderKinds.profile(name: name, spec: spec, deliver: deliver, &c)
            try c.finish()
            out[name] = ProfileSpec(name: name, provider: provider, stages: stages, deliver: deliver, settings: settings)
        }
        return out
    }

    /// `[[rules]]` of the main file, or of a team's file (`delegation`: its rules grant only the
    /// delegated profiles, may not name namespaces outside its scope, and are bound to that scope).
    static func parseRules(_ cursors: [TOMLCursor], profiles: [String: ProfileSpec], warnings: inout [String],
                           delegation: Delegation? = nil, takenNames: Set<String> = []) throws(ConfigError) -> [Rule] {
        var rules: [Rule] = []
        var names = takenNames
        for var c in cursors {
            let written = try c.requiredString("name", hint: "a name for the audit log, e.g. \"protected main of platform projects\"")
            // A team's rules are named within the team: "payments/<name>".
            let name = delegation.map { "\($0.team)/\(written)" } ?? written
            guard names.insert(name).inserted else { throw c.error("name", "duplicate rule name \(name.quoted)\(delegation == nil ? "" : " (rule names are unique across the main file and every team's file)")") }
            guard let grants = try c.stringArray("grant"), !grants.isEmpty else {
                throw c.error("grant", "is required: the profiles this rule grants, e.g. [\"deploy-prod\"]")
            }
            for g in grants where profiles[g] == nil {
                throw c.error("grant", "profile \(g.quoted) is not defined (defined: \(profiles.keys.sorted().joined(separator: ", ")))")
            }
            if let d = delegation {
                for g in grants where !d.profiles.contains(g) {
                    throw c.error("grant", "rule \(name.quoted) grants \(g.quoted), which is not delegated to team \(d.team.quoted) (it may grant: \(d.profiles.joined(separator: ", ")); the platform team's [[delegations]] entry decides)")
                }
            }
            _ = try c.string("description")
            var conditions: [Condition] = []
            for key in c.order where !["name", "grant", "description"].contains(key) {
                guard let node = c.raw(key) else { continue }
                let m: Matcher
                do { m = try matcher(node) } catch { throw c.error(key, error.message) }
                let condition = Condition(claim: key, matcher: m)
                if let d = delegation {
                    let outside = d.scope.escapes(condition)
                    guard outside.isEmpty else {
                        throw c.error(key, "rule \(name.quoted) would match outside team \(d.team.quoted)'s scope (\(d.scope)): \(outside.joined(separator: ", ")) is not inside it")
                    }
                }
                conditions.append(condition)
                if !knownGitLabClaims.contains(key) {
                    warnings.append("\(c.describe(key)): \(key) is not a GitLab ID token claim; this condition never holds unless your GitLab adds it")
                }
                if key == "project_path" || key == "namespace_path" {
                    warnings.append("rule \(name.quoted) matches \(key): paths can be reused after a rename or deletion; prefer \(key == "project_path" ? "project_id" : "namespace_id")")
                }
                // Claims whose value depends on the GitLab edition or a feature flag.
                if key == "environment_protected" {
                    warnings.append("rule \(name.quoted) matches environment_protected: GitLab Community Edition always sets it to \"false\" (protected environments are a Premium feature), so on CE a condition on \"true\" never holds; match ref_protected and environment there")
                }
                if key == "groups_direct" {
                    warnings.append("rule \(name.quoted) matches groups_direct: GitLab adds this claim only with the ci_jwt_groups_direct feature flag on (off by default) and leaves it out for users in 200 or more groups; without it this condition never holds")
                }
            }
            guard !conditions.isEmpty else {
                throw c.error(nil, "rule \(name.quoted) has no conditions and would grant every job; add at least one claim condition")
            }
            try c.finish()
            // A team's rule holds only inside the team's scope, whatever else it says.
            if let d = delegation { conditions.insert(d.scope.condition, at: 0) }
            rules.append(Rule(name: name, conditions: conditions, grants: grants,
                              origin: RuleOrigin(team: delegation?.team, file: c.file, findLine: { [index = c.index, path = c.path] in index.line(of: path) })))
        }
        return rules
    }

    struct MatcherError: Error { let message: String }

    static func matcher(_ node: TOMLNode) throws(MatcherError) -> Matcher {
        switch node {
        case .string(let s): return .pattern(s)
        case .bool(let b): return .bool(b)
        case .int(let i): return .exact(String(i))
        case .array(let items):
            guard !items.isEmpty else { throw MatcherError(message: "an empty list matches nothing") }
            var ms: [Matcher] = []
            for i in items {
                if case .array = i { throw MatcherError(message: "lists cannot nest") }
                ms.append(try matcher(i))
            }
            return .anyOf(ms)
        default: throw MatcherError(message: "expected a string, glob, boolean, integer or a list of them, got \(node.typeName)")
        }
    }
}
