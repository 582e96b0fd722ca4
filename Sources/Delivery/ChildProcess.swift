public import CSupport
import Foundation
import RunnerContract
#if canImport(Glibc)
import Glibc
#endif

/// A child process in its own process group, with stdout and stderr on pipes.
///
/// posix_spawn directly rather than Foundation's `Process`: Airlock needs the child in a new process
/// group with a clean signal mask, and an exact environment, none of which `Process` exposes.
public final class ChildProcess: @unchecked Sendable {
    /// The child's pid, which is also its process group id.
    public let pid: pid_t
    /// Read ends of the child's stdout and stderr.
    public let stdoutFD: Int32
    public let stderrFD: Int32
    private let exitState = NSCondition()
    private var exitStatus: Int32?
    private var exitedAt: Date?

    /// Spawns `argv` with exactly `environment`, stdin from /dev/null, in `directory`.
    /// `newSession`: the child leads a new session (and so a new process group) with no controlling
    /// terminal, so a job cannot push keystrokes (TIOCSTI) into the runner's terminal.
    /// `mergedOutput`: stdout and stderr are one pipe (`stderrFD` is -1), so the child's writes to
    /// both arrive in the order it made them; two pipes read by one poll loop cannot tell which
    /// came first when both are ready.
    /// - Throws: `SpawnError` with the OS reason when the spawn fails.
    public init(argv: [String], environment: [String: String], directory: String?, newSession: Bool = false, mergedOutput: Bool = false) throws {
        // Started in a directory, the command is looked up as the `cd` in a shell before did (see
        // the chdir below): on the child's own PATH (its absolute entries: a relative one would be
        // looked up in `directory`), not on this process's, which posix_spawnp would use.
        var argv = argv
        if let directory, !argv[0].contains("/"), let path = environment["PATH"] {
            let name = argv[0]
            let candidates: [String] = path.split(separator: ":").filter { $0.hasPrefix("/") }.map { "\($0)/\(name)" }
            guard let found = candidates.first(where: { (c: String) in access(c, X_OK) == 0 }) else {
                throw SpawnError(argv0: name, errno: ENOENT, directory: directory)
            }
            argv[0] = found
        }
        var outPipe: [Int32] = [0, 0]
        var errPipe: [Int32] = [-1, -1]
        guard pipe(&outPipe) == 0, mergedOutput || pipe(&errPipe) == 0 else { throw SpawnError(argv0: argv[0], errno: errno) }
        for fd in [outPipe[0], errPipe[0]] where fd >= 0 { Self.widenPipe(fd) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, mergedOutput ? outPipe[1] : errPipe[1], 2)
        for fd in [outPipe[0], outPipe[1], errPipe[0], errPipe[1]] where fd >= 0 { posix_spawn_file_actions_addclose(&actions, fd) }

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT, SIGCHLD] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        // glibc's POSIX_SPAWN_SETSID (0x80); setsid also makes the child its own process group leader.
        let setsid: Int32 = 0x80
        if !newSession { posix_spawnattr_setpgroup(&attr, 0) }
        posix_spawnattr_setflags(&attr, Int16((newSession ? setsid : POSIX_SPAWN_SETPGROUP) | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        // The child changes directory itself, as gitlab-runner's own exec does: a `cd` in a shell
        // in between cost every stage a second exec (issue 19).
        if let directory {
            let rc = withUnsafeMutablePointer(to: &actions) { airlock_spawn_addchdir($0, directory) }
            guard rc == 0 else {
                close(outPipe[0]); close(outPipe[1]); if errPipe[0] >= 0 { close(errPipe[0]); close(errPipe[1]) }
                throw SpawnError(argv0: argv[0], errno: rc, directory: directory)
            }
        }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (cArgs + cEnv).forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawnp(&child, argv[0], &actions, &attr, cArgs, cEnv)
        close(outPipe[1])
        if errPipe[1] >= 0 { close(errPipe[1]) }
        guard rc == 0 else {
            close(outPipe[0]); if errPipe[0] >= 0 { close(errPipe[0]) }
            throw SpawnError(argv0: argv[0], errno: rc, directory: directory)
        }
        pid = child
        stdoutFD = outPipe[0]
        stderrFD = errPipe[0]
    }

    /// Spawns `argv` (its first element an absolute path) as a tenant: uid and gid `uid`, no
    /// supplementary groups, no capabilities (bounding set emptied), no_new_privs, a new session,
    /// stdin from /dev/null, exactly `environment`. Airlock must be root. Descriptors that are not
    /// close-on-exec are inherited (the sandbox's data files).
    /// - Throws: `SpawnError` when fork fails.
    /// `mergedOutput` as for `init(argv:environment:directory:newSession:mergedOutput:)`.
    public init(tenant uid: UInt32, argv: [String], environment: [String: String], mergedOutput: Bool = false) throws {
        var outPipe: [Int32] = [0, 0]
        var errPipe: [Int32] = [-1, -1]
        guard pipe(&outPipe) == 0, mergedOutput || pipe(&errPipe) == 0 else { throw SpawnError(argv0: argv[0], errno: errno) }
        for fd in [outPipe[0], errPipe[0]] where fd >= 0 { Self.widenPipe(fd) }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (cArgs + cEnv).forEach { free($0) } }
        let closing = [outPipe[0], errPipe[0], outPipe[1], errPipe[1]].filter { $0 >= 0 }
        let errWrite = mergedOutput ? outPipe[1] : errPipe[1]
        let rc = cArgs.withUnsafeBufferPointer { a in
            cEnv.withUnsafeBufferPointer { e in
                closing.withUnsafeBufferPointer { c in
                    airlock_spawn_tenant(uid, argv[0], a.baseAddress, e.baseAddress, outPipe[1], errWrite, c.baseAddress, Int32(c.count))
                }
            }
        }
        close(outPipe[1])
        if errPipe[1] >= 0 { close(errPipe[1]) }
        guard rc > 0 else {
            close(outPipe[0]); if errPipe[0] >= 0 { close(errPipe[0]) }
            throw SpawnError(argv0: argv[0], errno: -rc)
        }
        pid = rc
        stdoutFD = outPipe[0]
        stderrFD = errPipe[0]
    }

    /// Reaps the child on its own thread and calls `onExit` at once, before the output pipes close:
    /// a background process the script left holds them open, and `onExit` is where it is killed.
    public func startReaper(onExit: @escaping @Sendable () -> Void) {
        let pid = self.pid
        Thread.detachNewThread { [self] in
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            onExit()
            exitState.lock()
            exitStatus = status
            exitedAt = Date()
            exitState.broadcast()
            exitState.unlock()
        }
    }

    private var exitedSince: Date? {
        exitState.lock(); defer { exitState.unlock() }
        return exitedAt
    }

    /// Copies both output streams through their maskers to this process's stdout and stderr until
    /// both close. Held-back bytes are flushed after `idleFlush` seconds without output.
    ///
    /// Given one masker for both (`stdout === stderr`), the streams are masked as one, in arrival
    /// order, and written to stdout: a secret printed half on each is still caught (the runner
    /// merges both into one job log anyway).
    public func pump(stdout: StreamMasker, stderr: StreamMasker, idleFlush: Double = 0.2, drainAfterExit: Double = 1.0,
                     tick: () -> Void = {},
                     sink: (Int32, [UInt8]) -> Void) {
        pump(stdout: stdout, stderr: stderr, idleFlush: idleFlush, drainAfterExit: drainAfterExit, tick: tick,
             write: { fd, pieces in sink(fd, pieces.flatMap { Array($0) }) })
    }

    /// `pump`, writing what the maskers let through to this process's stdout (and stderr, with two
    /// maskers) straight from where it lies: output without a secret is not copied.
    public func pump(stdout: StreamMasker, stderr: StreamMasker, idleFlush: Double = 0.2, drainAfterExit: Double = 1.0,
                     tick: () -> Void = {},
                     write: (Int32, [UnsafeBufferPointer<UInt8>]) -> Void = { fd, pieces in ChildProcess.writeAll(fd, pieces) }) {
        var fds = [pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0), pollfd(fd: stderrFD, events: Int16(POLLIN), revents: 0)]
        let merged = stdout === stderr
        let maskers = [stdout, stderr]
        let sinks: [Int32] = merged ? [1, 1] : [1, 2]
        var open = [true, stderrFD >= 0]
        let buffer = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: Self.pumpBuffer)
        var lastData = [Date(), Date()]
        defer {
            for i in 0..<2 where open[i] {
                maskers[i].flush { write(sinks[i], $0) }
                close(i == 0 ? stdoutFD : stderrFD)
            }
            buffer.deallocate()
        }
        // With one masker, a stream's end flushes only when the other one has ended too.
        func ended(_ i: Int) { if !merged || !open[1 - i] { maskers[i].flush { write(sinks[i], $0) } } }
        while open[0] || open[1] {
            for i in 0..<2 { fds[i].fd = open[i] ? (i == 0 ? stdoutFD : stderrFD) : -1; fds[i].revents = 0 }
            // Once the child is gone, give its output a moment to drain, then stop even if a process
            // that escaped its group still holds a pipe.
            if let gone = exitedSince, Date().timeIntervalSince(gone) > drainAfterExit { break }
            let r = poll(&fds, 2, 100)
            tick()
            if r < 0 { if errno == EINTR { continue }; break }
            for i in 0..<2 where open[i] && fds[i].revents != 0 {
                let n = read(fds[i].fd, buffer.baseAddress, buffer.count)
                if n > 0 {
                    maskers[i].feed(UnsafeBufferPointer(rebasing: buffer[..<n])) { write(sinks[i], $0) }
                    lastData[i] = Date()
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    open[i] = false
                    ended(i)
                    close(fds[i].fd)
                }
            }
            for i in 0..<2 where open[i] && maskers[i].hasPending && Date().timeIntervalSince(merged ? max(lastData[0], lastData[1]) : lastData[i]) >= idleFlush {
                maskers[i].flush { write(sinks[i], $0) }
            }
        }
    }

    /// The pump's read size. Reads of 64 KiB from the default 64 KiB pipe kept the pump at the
    /// speed of `cat | cat` and no faster (issue 19's masker benchmark); 128 KiB reads from a pipe
    /// of 256 KiB (`outputPipeCapacity`) let it run ahead with a hundred secrets to mask.
    public static let pumpBuffer = 131072

    /// The capacity of the pipes a child writes its output into. The kernel allocates a pipe's
    /// pages as they fill, so a quiet job costs no more.
    public static let outputPipeCapacity: Int32 = 262144

    /// Gives the pipe `fd` belongs to `outputPipeCapacity`, if the kernel lets it (a failure leaves
    /// the default, which works the same, only slower). Also used on stdin by `airlock mask`.
    public static func widenPipe(_ fd: Int32) {
        _ = airlock_widen_pipe(fd, outputPipeCapacity)
    }

    /// Waits for the child (reaped by `startReaper`); returns its exit code, or 128 + signal.
    public func wait() -> Int32 {
        exitState.lock()
        while exitStatus == nil { exitState.wait() }
        let status = exitStatus!
        exitState.unlock()
        let low = status & 0x7f
        if low == 0 { return (status >> 8) & 0xff }
        return 128 + low
    }

    /// Reads a descriptor to its end on its own thread, so that a child filling one pipe (stderr)
    /// cannot block while the caller reads the other (stdout).
    public final class Drain: @unchecked Sendable {
        private var data: [UInt8] = []
        private let done = DispatchSemaphore(value: 0)
        public init(_ fd: Int32) {
            Thread.detachNewThread { [self] in
                data = ChildProcess.readAll(fd)
                done.signal()
            }
        }
        /// Waits for the end of the stream and returns what it held.
        public func finish() -> [UInt8] {
            done.wait()
            return data
        }
    }

    /// Reads `fd` to its end and closes it.
    public static func readAll(_ fd: Int32) -> [UInt8] {
        defer { close(fd) }
        return FileContents.readToEnd(fd).bytes
    }

    /// Writes every byte to `fd`, retrying on EINTR.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { writeAll(fd, $0) }
    }

    /// Writes every byte to `fd`, retrying on EINTR.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeBufferPointer<UInt8>) {
        writeAll(fd, [bytes])
    }

    /// Writes the pieces to `fd` in order with writev(2) (as many at once as it takes), retrying on
    /// EINTR and after a short write.
    public static func writeAll(_ fd: Int32, _ pieces: [UnsafeBufferPointer<UInt8>]) {
        var iov = pieces.filter { !$0.isEmpty }.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
        var first = 0
        while first < iov.count {
            let n = iov.withUnsafeBufferPointer { writev(fd, $0.baseAddress! + first, Int32(min(iov.count - first, 1024))) }
            if n < 0 { if errno == EINTR { continue }; return }
            // Step past what was written: whole pieces, then into the piece it stopped in.
            var left = n
            while first < iov.count && left >= iov[first].iov_len { left -= iov[first].iov_len; first += 1 }
            if left > 0 {
                iov[first].iov_base += left
                iov[first].iov_len -= left
            }
        }
    }
}

/// A spawn that failed, with the OS's reason.
public struct SpawnError: Error, CustomStringConvertible {
    public let argv0: String
    public let errno: Int32
    /// The directory it was to start in (the spawn's error may be about it: glibc reports a failed
    /// chdir as the spawn's).
    public var directory: String? = nil
    public var description: String { "cannot start \(argv0)\(directory.map { " in \($0)" } ?? ""): \(String(cString: strerror(errno)))" }
}

/// Hands SIGTERM, SIGINT and SIGHUP to a handler on a dedicated thread, whichever thread the kernel
/// delivers them to.
///
/// A process-wide handler writes the signal's number to a pipe (async-signal-safe); a thread reads
/// it and calls the handler. Blocking the signals with `pthread_sigmask` instead only covers the
/// calling thread and the threads it starts later: a signal delivered to any thread already running
/// (Dispatch's, the reaper's) killed airlock-run at once, and the sandbox with it (die-with-parent),
/// so a script never got its grace period.
public enum SignalRelay {
    nonisolated(unsafe) private static var writeFD: Int32 = -1

    /// Installs the relay; `handler` runs on the relay's thread, once per signal received.
    public static func install(_ handler: @escaping @Sendable (Int32) -> Void) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        writeFD = fds[1]
        let readFD = fds[0]
        let t = Thread {
            var b: UInt8 = 0
            while true {
                let n = read(readFD, &b, 1)
                if n == 1 { handler(Int32(b)); continue }
                if n < 0 && errno == EINTR { continue }
                return
            }
        }
        t.start()
        for s in [SIGTERM, SIGINT, SIGHUP] {
            signal(s) { sig in
                var b = UInt8(truncatingIfNeeded: sig)
                _ = write(SignalRelay.writeFD, &b, 1)
            }
        }
    }
}

/// Signals processes of a group, optionally sparing one (bubblewrap's outer process, whose death
/// would SIGKILL the sandbox at once and leave the script no grace period).
public enum ProcessGroup {
    /// Sends `signal` to every process in group `pgid` except `spare`.
    public static func signal(_ pgid: pid_t, _ sig: Int32, sparing spare: pid_t? = nil) {
        guard let spare else { kill(-pgid, sig); return }
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return }
        for e in entries {
            guard let pid = pid_t(e), pid != spare else { continue }
            if getpgid(pid) == pgid { kill(pid, sig) }
        }
    }
}
