public import Foundation
import Synchronization
public import Identity
public import RunnerContract

/// What a provider needs to issue one profile's credential for one job.
public struct IssueRequest: Sendable {
    public var profile: String
    public var job: VerifiedJob
    /// The job's GitLab ID token; sent to the provider, never logged.
    public var idToken: String
    public var jobTimeoutSeconds: Int
    public var now: Date
    /// Everything (retries included) must be done by then.
    public var deadline: Date

    public init(profile: String, job: VerifiedJob, idToken: String, jobTimeoutSeconds: Int, now: Date, deadline: Date) {
        self.profile = profile
        self.job = job
        self.idToken = idToken
        self.jobTimeoutSeconds = jobTimeoutSeconds
        self.now = now
        self.deadline = deadline
    }
}

/// A credential a provider issued: the fourth boundary type of the data path.
/// `secrets` are the values the job receives and that are masked; `details` are public facts for the
/// audit log (role, session name, account); `delivery` is what reaches the job and how, filled in by
/// the provider; `revocationHandle` is what `revoke` needs.
public struct IssuedCredential: Sendable, Codable, Equatable {
    public var id: String
    public var profile: String
    public var provider: String
    public var providerType: String
    public var secrets: [String: String]
    public var details: [String: String]
    public var expiresAt: Date
    /// nil when the provider cannot revoke (the credential simply expires).
    public var revocationHandle: String?
    public var delivery: DeliveryContract
    /// What it is, in the job log's one line: the role, the app, the service account...
    public var summary: String

    public init(profile: String, provider: String, providerType: String, secrets: [String: String],
                details: [String: String], expiresAt: Date, revocationHandle: String?,
                delivery: DeliveryContract, summary: String) {
        id = UUID().uuidString.lowercased()
        self.profile = profile
        self.provider = provider
        self.providerType = providerType
        self.secrets = secrets
        self.details = details
        self.expiresAt = expiresAt
        self.revocationHandle = revocationHandle
        self.delivery = delivery
        self.summary = summary
    }

    enum CodingKeys: String, CodingKey {
        case id, profile, provider, providerType, secrets, details, expiresAt, revocationHandle, delivery, summary
    }
}

/// A credential printed by mistake (string interpolation, a failed test's expectation, a debugger's
/// print) shows what it is and the names of its values, never the values or the revocation handle.
extension IssuedCredential: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String {
        "IssuedCredential(id: \(id), profile: \(profile), provider: \(provider) (\(providerType)), expires \(expiresAt), "
            + "secrets: [\(secrets.keys.sorted().joined(separator: ", "))] (values not shown), \(summary))"
    }
    public var debugDescription: String { description }
}

extension IssuedCredential {
    /// A ledger written before the delivery contract (an upgrade mid-job) still loads, so that
    /// cleanup and sweep can revoke what it holds; the run stage refuses to deliver it.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        profile = try c.decode(String.self, forKey: .profile)
        provider = try c.decode(String.self, forKey: .provider)
        providerType = try c.decode(String.self, forKey: .providerType)
        secrets = try c.decode([String: String].self, forKey: .secrets)
        details = try c.decode([String: String].self, forKey: .details)
        expiresAt = try c.decode(Date.self, forKey: .expiresAt)
        revocationHandle = try c.decodeIfPresent(String.self, forKey: .revocationHandle)
        delivery = try c.decodeIfPresent(DeliveryContract.self, forKey: .delivery) ?? { var d = DeliveryContract(); d.fromOlderLedger = true; return d }()
        summary = try c.decodeIfPresent(String.self, forKey: .summary) ?? providerType
    }

    /// A fingerprint over every secret value, for logs and audit records.
    public var fingerprint: String {
        Fingerprint.of(secrets.keys.sorted().map { secrets[$0]! }.joined(separator: "\u{0}"))
    }
}

/// What revocation achieved; an honest answer, not a yes/no.
public enum RevokeOutcome: Sendable, Equatable {
    case revoked
    /// Revoking again, or the provider no longer knows it: nothing left to do.
    case alreadyGone
    /// The provider has no revocation; the credential stops working at this time.
    case notRevocable(expiresAt: Date)
    /// It expired before cleanup ran.
    case expired(at: Date)
    /// A long-lived value Airlock only copied (a Key Vault secret): the job's copies are deleted,
    /// the value itself is not Airlock's to revoke.
    case copiesDeleted
    /// Part of it is revoked (`revoked`: what) and part lives on until `expiresAt` (`remains`:
    /// what, and why): a Vault batch login whose leases are revoked, an OAuth grant whose refresh
    /// token is revoked while its JWT access token runs out.
    case partlyRevoked(revoked: String, remains: String, expiresAt: Date)

    public var auditName: String {
        switch self {
        case .revoked: "revoked"
        case .alreadyGone: "already_revoked"
        case .notRevocable: "expires_at"
        case .expired: "expired"
        case .copiesDeleted: "copies_deleted"
        case .partlyRevoked: "partly_revoked"
        }
    }
}

/// A federation failure: which profile and provider, the provider's error code, and whose fault.
public struct FederationError: BlamedError, Equatable {
    public var fault: Fault
    public var profile: String
    public var provider: String
    /// The provider's own code (InvalidIdentityToken, HTTP 503, connection refused, ...).
    public var code: String
    public var message: String
    /// Worth retrying (connection, 5xx, 429, throttling).
    public var transient: Bool
    public var retryAfter: Double?

    public init(fault: Fault, profile: String, provider: String, code: String, message: String, transient: Bool = false, retryAfter: Double? = nil) {
        self.fault = fault
        self.profile = profile
        self.provider = provider
        self.code = code
        self.message = message
        self.transient = transient
        self.retryAfter = retryAfter
    }

    public var description: String {
        "profile \(profile.debugDescription) (provider \(provider.debugDescription)): \(code): \(message)"
    }
}

/// One identity provider. Implementations are values; every call gets its time as a parameter.
public protocol CredentialProvider: Sendable {
    /// The `[providers.NAME]` name.
    var name: String { get }
    /// Exchanges the job's ID token for a credential.
    /// - Throws: `FederationError` with the job's fault for a rejected identity, the system's otherwise.
    func issue(_ request: IssueRequest) async throws -> IssuedCredential
    /// Revokes; idempotent.
    /// - Throws: `FederationError` when the provider could not be reached.
    func revoke(_ credential: IssuedCredential, now: Date) async throws -> RevokeOutcome
}

/// Capped exponential backoff with full jitter, inside a deadline.
public enum Retry {
    public static let baseDelay = 0.2
    public static let maxDelay = 5.0
    private static let abandoned = Atomic<Bool>(false)

    /// No further attempts in this process (the runner cancelled prepare): exchanges in flight still
    /// finish, so that what they issue reaches the ledger and is rolled back. Safe in a signal handler.
    public static func abandon() { abandoned.store(true, ordering: .relaxed) }

    /// Runs `body` until it succeeds, fails with a non-transient error, or the deadline would pass.
    public static func run<T: Sendable>(deadline: Date, _ body: @Sendable (Int) async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do {
                return try await body(attempt)
            } catch let e as FederationError where e.transient {
                attempt += 1
                let backoff = min(maxDelay, baseDelay * pow(2, Double(attempt - 1)))
                let wait = max(e.retryAfter ?? 0, Double.random(in: 0...backoff))
                if abandoned.load(ordering: .relaxed) {
                    var last = e
                    last.message += " (no retry: prepare was cancelled)"
                    throw last
                }
                guard Date().addingTimeInterval(wait + 0.05) < deadline else {
                    var last = e
                    last.message += " (gave up after \(attempt) attempt(s) within the federation deadline)"
                    throw last
                }
                try await Task.sleep(nanoseconds: UInt64(wait * 1_000_000_000))
            }
        }
    }
}
