import AirlockConfiguration
import Federation
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM (or SIGINT/SIGHUP) from the runner during prepare or cleanup: a job timeout or a cancel.
///
/// Dying at once could lose a credential a provider has just issued but the ledger does not hold
/// yet. So the signal only raises a flag: prepare lets in-flight exchanges finish (they are bounded by
/// `federation_timeout`), records them, revokes everything and exits; cleanup finishes revoking. The
/// runner's SIGKILL comes `graceful_kill_timeout` later (600 s by default).
enum Termination {
    private static let flag = Atomic<Int32>(0)

    /// Installs the flag-raising handler for SIGTERM, SIGINT and SIGHUP in this process.
    static func install() {
        for s in [SIGTERM, SIGINT, SIGHUP] {
            signal(s) { sig in
                Termination.flag.store(sig, ordering: .relaxed)
                Retry.abandon()
            }
        }
    }

    /// The signal received, if any.
    static var received: Int32? {
        let s = flag.load(ordering: .relaxed)
        return s == 0 ? nil : s
    }
}
