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

    private static var stageSignals: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&set, s) }
        return set
    }

    /// airlock-prepare and airlock-cleanup, first thing on the main thread, while it is the only
    /// thread: the runner's signals stay pending while the stage decides whether to hand the job over.
    /// execv keeps them pending (and the mask), and airlock-federate takes them in `release`;
    /// otherwise `release` here lets them in before the stage's work begins.
    static func hold() {
        var set = stageSignals
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// The handlers, then an empty mask on the calling (main) thread, so that a signal held since the
    /// runner sent it is taken now: in airlock-federate first thing (the mask came along with execv),
    /// in airlock-prepare and airlock-cleanup once they keep the job.
    static func release() {
        install()
        var none = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, nil)
    }

    /// The signal received, if any.
    static var received: Int32? {
        let s = flag.load(ordering: .relaxed)
        return s == 0 ? nil : s
    }
}
