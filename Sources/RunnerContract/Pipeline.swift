/// The boundary types of Airlock's data path, in the order a job meets them:
///
///     JobContext ─verify─▶ VerifiedJob ─policy─▶ Grant ─federate─▶ IssuedCredential ─deliver─▶ InjectionPlan
///
/// `JobContext` lives here because it is what the runner hands us; the later types live in the
/// module that produces them (Identity, Policy, Ledger, Delivery). Nothing in this module knows
/// about providers or tokens: it is the runner's side of the contract only.

/// Who is at fault when a stage fails; maps to the runner's exit codes.
public enum Fault: String, Sendable, Codable {
    /// The job's fault (bad token, policy denial, script failure) → BUILD_FAILURE_EXIT_CODE.
    case job
    /// The host's or a provider's fault (config, IdP down, sandbox broken) → SYSTEM_FAILURE_EXIT_CODE.
    case system
}

/// An error that carries its blame and a one-line, secret-free reason for the job log.
public protocol BlamedError: Error, CustomStringConvertible {
    /// Whose fault the failure is.
    var fault: Fault { get }
}

/// A plain blamed error with a message; the message must never contain a secret.
public struct AirlockFailure: BlamedError, Equatable {
    /// Whose fault the failure is.
    public let fault: Fault
    /// What failed, the bad value (never a secret), and what to do next.
    public let message: String
    /// Creates a failure.
    public init(_ fault: Fault, _ message: String) {
        self.fault = fault
        self.message = message
    }
    public var description: String { message }
}
