import Foundation

/// Starts the test peers' processes (moto, OpenBao, the metadata stand-in) from one thread that
/// lives as long as the test process.
///
/// The peers run under `setpriv --pdeathsig KILL` so that they die with the test process even when
/// it is SIGKILLed. The kernel's parent-death signal follows the *thread* that forked the child, not
/// the process: a peer started from a Swift concurrency or Dispatch worker thread was killed when
/// that idle worker thread exited, mid-test (OpenBao vanished 40 s into a slow CI run). A thread that
/// never exits makes the signal mean what it was meant to: the test process is gone.
enum PeerSpawner {
    private final class Request: @unchecked Sendable {
        let process: Process
        var error: (any Error)?
        let done = DispatchSemaphore(value: 0)
        init(_ p: Process) { process = p }
    }

    private final class Queue: @unchecked Sendable {
        let lock = NSCondition()
        var pending: [Request] = []
    }

    private static let queue: Queue = {
        let q = Queue()
        let thread = Thread {
            while true {
                q.lock.lock()
                while q.pending.isEmpty { q.lock.wait() }
                let r = q.pending.removeFirst()
                q.lock.unlock()
                do { try r.process.run() } catch { r.error = error }
                r.done.signal()
            }
        }
        thread.name = "airlock-peer-spawner"
        thread.start()
        return q
    }()

    /// `process.run()`, from the spawner thread.
    static func run(_ process: Process) throws {
        let r = Request(process)
        queue.lock.lock()
        queue.pending.append(r)
        queue.lock.signal()
        queue.lock.unlock()
        r.done.wait()
        if let e = r.error { throw e }
    }
}
