public import CSupport
public import Foundation
public import RunnerContract

/// Per-job state on disk: one directory per job under `state_dir`, 0700, files 0600, written atomically.
/// The one owner of that layout: every module names the job's directory and files through it.
public struct JobStateStore: Sendable {
    /// The files in a job's directory.
    public enum File {
        /// Every credential issued and what became of it (`JobLedger`).
        public static let ledger = "ledger.json"
        /// The job, its paths and uid, written by prepare (`JobRecord`).
        public static let record = "job.json"
        /// The configuration the job was prepared with.
        public static let configSnapshot = "config.toml"
        /// What run and cleanup read of it, compiled by prepare (`JobView`).
        public static let configView = "config-view.json"
        /// The credential endpoint's session: the job's secret, tokens, profiles.
        public static let endpointSession = "endpoint.json"
        /// The credential endpoint's pid and port.
        public static let endpointServer = "endpoint-server.json"
    }

    /// `<state_dir>/jobs/<id>`: the only place that computes it.
    public static func directory(stateDir: String, jobID: String) -> String { "\(stateDir)/jobs/\(jobID)" }

    /// `[runner] state_dir`.
    public let root: String

    public init(root: String) { self.root = root }

    /// The job's directory (whether or not it exists).
    public func directory(jobID: String) -> String { Self.directory(stateDir: root, jobID: jobID) }

    /// Creates the job's directory, 0700, and the root if missing.
    /// - Throws: `AirlockFailure` (system) naming the path and the OS error.
    @discardableResult
    public func create(jobID: String) throws(AirlockFailure) -> String {
        try Files.makeDirectories((root as NSString).deletingLastPathComponent, mode: 0o755)
        for dir in [root, "\(root)/jobs", directory(jobID: jobID)] {
            try Files.makeDirectory(dir, mode: 0o700)
        }
        return directory(jobID: jobID)
    }

    /// Removes the job's directory; succeeds when it is already gone.
    /// - Throws: `AirlockFailure` (system) when it exists and cannot be removed.
    public func remove(jobID: String) throws(AirlockFailure) {
        try Files.removeTree(directory(jobID: jobID))
    }

    /// Every job directory present, for sweep.
    public func jobIDs() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: "\(root)/jobs"))?.filter { $0.allSatisfy(\.isNumber) }.sorted() ?? []
    }
}

/// Small file helpers with Airlock's permissions and messages.
public enum Files {
    /// A file's status: its mode (type and permission bits), owner, whether it is a directory, its
    /// modification time. `follow`: stat (a symlink's target) instead of lstat. nil when absent.
    public struct Status: Sendable {
        public var mode: UInt32
        public var uid: UInt32
        public var isDirectory: Bool
        public var modificationTimeNanoseconds: Int
        /// The permission bits.
        public var permissions: UInt32 { mode & 0o7777 }
    }

    public static func status(_ path: String, follow: Bool = false) -> Status? {
        var s = airlock_file_status()
        guard airlock_file_status_of(path, follow ? 1 : 0, &s) == 0 else { return nil }
        return Status(mode: s.mode, uid: s.uid, isDirectory: s.is_directory != 0, modificationTimeNanoseconds: Int(s.mtime_ns))
    }

    /// mkdir with `mode`; an existing directory has its mode enforced.
    /// - Throws: `AirlockFailure` (system) naming the path.
    public static func makeDirectory(_ path: String, mode: mode_t) throws(AirlockFailure) {
        if mkdir(path, mode) != 0 && errno != EEXIST {
            throw AirlockFailure(.system, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        guard let st = status(path), st.isDirectory else {
            throw AirlockFailure(.system, "\(path) exists and is not a directory (a symlink is refused)")
        }
        if st.mode & 0o777 != UInt32(mode) { chmod(path, mode) }
    }

    /// mkdir -p with `mode` for each created component.
    /// - Throws: `AirlockFailure` (system) naming the path.
    public static func makeDirectories(_ path: String, mode: mode_t) throws(AirlockFailure) {
        var cur = ""
        for part in path.split(separator: "/") {
            cur += "/" + part
            if mkdir(cur, mode) != 0 && errno != EEXIST {
                throw AirlockFailure(.system, "cannot create \(cur): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Writes `data` to `path` atomically (temp file, fsync, rename) with `mode`.
    /// - Throws: `AirlockFailure` (system) naming the path.
    /// `durable: false` skips the fsync, for transient files that need no crash safety (stage scripts).
    public static func writeAtomically(_ data: Data, to path: String, mode: mode_t = 0o600, durable: Bool = true) throws(AirlockFailure) {
        let tmp = "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw AirlockFailure(.system, "cannot write \(path): \(String(cString: strerror(errno)))") }
        var ok = writeAll(fd, data)
        fchmod(fd, mode)
        if durable && fsync(fd) != 0 { ok = false }
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw AirlockFailure(.system, "cannot write \(path): \(reason)")
        }
    }

    /// Writes every byte of `data` to `fd`, retrying on EINTR; false on any other error.
    static func writeAll(_ fd: Int32, _ data: Data) -> Bool {
        data.withUnsafeBytes { writeAll(fd, $0) }
    }

    static func writeAll(_ fd: Int32, _ buf: UnsafeRawBufferPointer) -> Bool {
        var off = 0
        while off < buf.count {
            let n = write(fd, buf.baseAddress! + off, buf.count - off)
            if n < 0 { if errno == EINTR { continue }; return false }
            off += n
        }
        return true
    }

    /// A read-only descriptor of a root-only copy of `text` whose name is already gone: handed to a
    /// sandbox, which copies it in. The descriptor is inherited by children (no close-on-exec).
    /// - Throws: `AirlockFailure` (system) naming the directory.
    /// (Text, not Data: Data made from a String's UTF-8 view costs a run stage a conformance scan.)
    public static func unlinkedCopy(_ text: String, in directory: String) throws(AirlockFailure) -> Int32 {
        let path = "\(directory)/.data-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let w = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard w >= 0 else { throw AirlockFailure(.system, "cannot write in \(directory): \(String(cString: strerror(errno)))") }
        defer { close(w); unlink(path) }
        var text = text
        let ok = text.withUTF8 { writeAll(w, UnsafeRawBufferPointer($0)) }
        let r = open(path, O_RDONLY)
        guard ok, r >= 0 else { throw AirlockFailure(.system, "cannot write in \(directory): \(String(cString: strerror(errno)))") }
        return r
    }

    /// rm -rf that does not follow symlinks; an absent path is success.
    /// - Throws: `AirlockFailure` (system) naming what could not be removed.
    /// A file's modification time in nanoseconds, nil when it does not exist.
    public static func modificationTime(_ path: String) -> Int? {
        status(path, follow: true)?.modificationTimeNanoseconds
    }

    public static func removeTree(_ path: String) throws(AirlockFailure) {
        guard status(path) != nil else { return }
        do {
            try FileManager.default.removeItem(atPath: path)
        } catch {
            if status(path) == nil { return }  // a concurrent cleanup removed it
            throw AirlockFailure(.system, "cannot remove \(path): \(error.localizedDescription)")
        }
    }
}
