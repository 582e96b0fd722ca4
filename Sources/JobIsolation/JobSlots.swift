package import AirlockConfiguration
import Delivery
import Foundation
import Ledger
package import RunnerContract
#if canImport(Glibc)
import Glibc
#endif

/// Hands each running job its own uid from `[runner] job_uids`, so that a job is a tenant: it cannot
/// read, signal or ptrace another job, write another job's directories, or read root's files.
///
/// One file per uid in `<state_dir>/uids/` holds the job id that owns it, under an exclusive lock.
/// A uid is free when its file is absent or names a job whose state is gone (that job was cleaned up
/// or swept). Nothing the job sets decides which uid it gets.
package enum JobSlots {
    package static func directory(_ runner: RunnerSettings) -> String { "\(runner.stateDir)/uids" }

    /// The uid the job holds, allocating one when it holds none. A free uid whose builds directory
    /// for this project and class already exists is preferred, so checkouts and caches are reused.
    /// - Throws: `AirlockFailure` (system) when every uid of the range belongs to a running job.
    package static func acquire(runner: RunnerSettings, job: JobContext, refClass: RefClass) throws(AirlockFailure) -> UInt32 {
        let dir = directory(runner)
        try Files.makeDirectory(runner.stateDir, mode: 0o700)
        try Files.makeDirectory(dir, mode: 0o700)
        return try withLock(dir) { () throws(AirlockFailure) -> UInt32 in
            // Only the slot files that exist are read (one per running job), not one per uid of the range.
            var taken = Set<UInt32>()
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
                guard let uid = UInt32(name), runner.jobUIDs.contains(uid), let other = owner(dir, uid) else { continue }
                if other == job.jobID { return uid }
                if FileManager.default.fileExists(atPath: JobPaths.state(runner, jobID: other)) { taken.insert(uid) }
            }
            let existing = ((try? FileManager.default.contentsOfDirectory(atPath: JobPaths.slotParent(runner.buildsRoot, job: job, refClass))) ?? [])
                .compactMap(UInt32.init).filter { runner.jobUIDs.contains($0) && !taken.contains($0) }.sorted()
            guard let uid = existing.first ?? runner.jobUIDs.first(where: { !taken.contains($0) }) else {
                throw AirlockFailure(.system, "all \(runner.jobUIDs.count) job uids of [runner] job_uids (\(runner.jobUIDs.lowerBound)-\(runner.jobUIDs.upperBound)) belong to running jobs: widen the range, or lower the runner's `concurrent` to at most its size")
            }
            try Files.writeAtomically(Data(job.jobID.utf8), to: "\(dir)/\(uid)", durable: false)
            return uid
        }
    }

    /// Gives the job's uid back (cleanup, sweep); a uid another job holds by now is left alone.
    package static func release(runner: RunnerSettings, jobID: String, uid: UInt32) {
        let dir = directory(runner)
        _ = try? withLock(dir) { () throws(AirlockFailure) in
            if owner(dir, uid) == jobID { unlink("\(dir)/\(uid)") }
        }
    }

    private static func owner(_ dir: String, _ uid: UInt32) -> String? {
        FileContents.read("\(dir)/\(uid)").map { String(decoding: $0, as: UTF8.self) }
    }

    private static func withLock<T>(_ dir: String, _ body: () throws(AirlockFailure) -> T) throws(AirlockFailure) -> T {
        let fd = open("\(dir)/.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw AirlockFailure(.system, "cannot open \(dir)/.lock: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            if errno != EINTR { throw AirlockFailure(.system, "cannot lock \(dir)/.lock: \(String(cString: strerror(errno)))") }
        }
        return try body()
    }
}

/// Directory ownership for a job's uid.
package enum Ownership {
    /// Creates (or takes back) a directory the job owns: parents root-owned 0711 (traversable, not
    /// listable), the directory itself `uid:uid` 0700. A symlink in its place is refused.
    package static func give(_ path: String, to uid: UInt32) throws(AirlockFailure) {
        let parent = (path as NSString).deletingLastPathComponent
        try Files.makeDirectories(parent, mode: 0o711)
        // bubblewrap runs as the job's uid and must reach the directory to mount it.
        if let (dir, mode) = SandboxSpec.unsearchableParent(of: path) {
            throw AirlockFailure(.system, "\(dir) (mode \(String(mode, radix: 8))) is not searchable by others, so job uids cannot reach their directories under it: chmod o+x \(dir) (job directories stay 0700, owned by their job)")
        }
        try Files.makeDirectory(path, mode: 0o700)
        guard lchown(path, uid, uid) == 0 else {
            throw AirlockFailure(.system, "cannot give \(path) to uid \(uid): \(String(cString: strerror(errno))); Airlock must run as root (as gitlab-runner's packages run it)")
        }
    }

    /// After the job: the directory is root's again, so that the uid's next job (maybe another
    /// project's) cannot reach it, even knowing its path.
    package static func takeBack(_ path: String) {
        guard let st = Files.status(path), st.isDirectory else { return }
        lchown(path, 0, 0)
        chmod(path, 0o700)
    }
}
