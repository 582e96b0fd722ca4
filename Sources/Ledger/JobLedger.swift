public import Federation
public import Foundation
public import RunnerContract

/// One credential in a job's ledger and what has become of it.
public struct LedgerEntry: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable {
        case issued
        /// Revoked, already gone, expired or not revocable: nothing more to do.
        case settled
        /// Revocation was attempted and failed; sweep tries again.
        case revokeFailed = "revoke_failed"
    }
    public var credential: IssuedCredential
    public var issuedAt: Date
    public var state: State
    public var outcome: String?
}

/// The per-job ledger: every credential issued for a job, written atomically (0600) in the job's
/// state directory before it can reach the job, so that cleanup and sweep can account for it even
/// after a crash. Thread-safe within one process; one process writes a job's ledger at a time
/// (prepare, then run reads, then cleanup).
public final class JobLedger: @unchecked Sendable {
    public let path: String
    private let lock = NSLock()

    /// The ledger of the job whose state directory is `stateDirectory`.
    public init(stateDirectory: String) { path = "\(stateDirectory)/\(JobStateStore.File.ledger)" }

    /// Every entry; an absent ledger is empty.
    /// - Throws: `AirlockFailure` (system) when the file exists but cannot be parsed.
    public func entries() throws(AirlockFailure) -> [LedgerEntry] {
        lock.lock(); defer { lock.unlock() }
        return try read()
    }

    /// True when some credential is not settled yet, or the ledger exists but cannot be read.
    public var needsSettling: Bool {
        guard let all = try? entries() else { return true }
        return all.contains { $0.state != .settled }
    }

    /// Records a newly issued credential.
    /// - Throws: `AirlockFailure` (system); the caller must then revoke the credential.
    public func record(_ c: IssuedCredential, at now: Date) throws(AirlockFailure) {
        lock.lock(); defer { lock.unlock() }
        var all = try read()
        all.append(LedgerEntry(credential: c, issuedAt: now, state: .issued, outcome: nil))
        try write(all)
    }

    /// Sets an entry's state.
    /// - Throws: `AirlockFailure` (system).
    public func settle(_ id: String, state: LedgerEntry.State, outcome: String) throws(AirlockFailure) {
        lock.lock(); defer { lock.unlock() }
        var all = try read()
        for i in all.indices where all[i].credential.id == id {
            all[i].state = state
            all[i].outcome = outcome
        }
        try write(all)
    }

    private func read() throws(AirlockFailure) -> [LedgerEntry] {
        guard let d = FileContents.read(path).map({ Data($0) }) else { return [] }
        let dec = JSONDecoder()
        dec.dateDecodingStrategy = .secondsSince1970
        do {
            return try dec.decode([LedgerEntry].self, from: d)
        } catch {
            throw AirlockFailure(.system, "the ledger \(path) is unreadable; its credentials expire on their own, check the audit log for what was issued")
        }
    }

    private func write(_ all: [LedgerEntry]) throws(AirlockFailure) {
        let enc = JSONEncoder()
        enc.dateEncodingStrategy = .secondsSince1970
        enc.outputFormatting = [.sortedKeys]
        guard let d = try? enc.encode(all) else { throw AirlockFailure(.system, "cannot encode the ledger") }
        try Files.writeAtomically(d, to: path, mode: 0o600)
    }
}
