public import RunnerContract

/// Why an ID token was refused. Each case names one check, so a platform engineer reading the job
/// log knows exactly which one failed. Messages never contain the token.
public struct TokenRejection: BlamedError, Equatable {
    /// The check that failed.
    public enum Check: String, Sendable, CaseIterable {
        case size, format, header, algorithm, keyID = "kid", unknownKey = "unknown_key"
        case keyMismatch = "key_algorithm", signature, payload, issuer, audience
        case expired, notYetValid = "not_yet_valid", issuedInFuture = "issued_in_future"
        case missingClaim = "missing_claim", wrongJob = "wrong_job"
    }
    public let check: Check
    public let detail: String
    public var fault: Fault { .job }
    public var description: String { "ID token rejected (\(check.rawValue)): \(detail)" }

    public init(_ check: Check, _ detail: String) {
        self.check = check
        self.detail = detail
    }
}

/// Airlock could not verify because it has no usable keys: the host's or GitLab's fault.
public struct KeySetUnavailable: BlamedError {
    public let message: String
    public var fault: Fault { .system }
    public var description: String { message }
    public init(_ m: String) { message = m }
}
