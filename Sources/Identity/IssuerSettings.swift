/// `[gitlab]` resolved: who issues the tokens Airlock accepts and how strictly they are checked.
public struct IssuerSettings: Sendable {
    public static let defaultTokenVariable = "AIRLOCK_ID_TOKEN"
    public static let defaultJWKSCacheTTL = 3600.0
    /// How long past its TTL a cached key set still verifies while GitLab is unreachable.
    public static let defaultJWKSGrace = 86_400.0
    public static let defaultClockSkew = 30.0
    public static let defaultMaxTokenBytes = 16_384
    /// At most one forced refresh for an unknown `kid` per this many seconds.
    public static let defaultUnknownKidRefreshInterval = 60.0
    /// Claims GitLab always sends in a job's ID token (custom-executor.md §2).
    public static let defaultRequiredClaims = [
        "iss", "sub", "aud", "exp", "iat", "jti", "project_id", "project_path", "namespace_id", "namespace_path",
        "job_id", "pipeline_id", "ref", "ref_type", "ref_protected",
    ]
    public static let defaultAlgorithms = ["RS256", "ES256", "PS256"]

    /// Exact match with `iss`.
    public var issuer: String
    /// The token's `aud` must contain it.
    public var audience: String
    /// The `id_tokens:` name jobs declare.
    public var tokenVariable: String
    public var jwksCacheTTL: Double
    public var jwksGrace: Double
    /// Static keys for an instance the runner cannot reach.
    public var jwksFile: String?
    public var clockSkew: Double
    public var maxTokenBytes: Int
    public var unknownKidRefreshInterval: Double
    public var requiredClaims: [String]
    public var algorithms: [String]
    /// Fail jobs that declare no token instead of running them with no grants.
    public var requireToken: Bool

    public init(issuer: String, audience: String, tokenVariable: String = defaultTokenVariable,
                jwksCacheTTL: Double = defaultJWKSCacheTTL, jwksGrace: Double = defaultJWKSGrace, jwksFile: String? = nil,
                clockSkew: Double = defaultClockSkew, maxTokenBytes: Int = defaultMaxTokenBytes,
                unknownKidRefreshInterval: Double = defaultUnknownKidRefreshInterval,
                requiredClaims: [String] = defaultRequiredClaims, algorithms: [String] = defaultAlgorithms,
                requireToken: Bool = false) {
        self.issuer = issuer
        self.audience = audience
        self.tokenVariable = tokenVariable
        self.jwksCacheTTL = jwksCacheTTL
        self.jwksGrace = jwksGrace
        self.jwksFile = jwksFile
        self.clockSkew = clockSkew
        self.maxTokenBytes = maxTokenBytes
        self.unknownKidRefreshInterval = unknownKidRefreshInterval
        self.requiredClaims = requiredClaims
        self.algorithms = algorithms
        self.requireToken = requireToken
    }
}
