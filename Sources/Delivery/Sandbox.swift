import Foundation

/// What a stage's sandbox looks like: the one place that decides what a job can see and write.
public struct SandboxSpec: Sendable {
    /// bubblewrap, or none (the script runs with the host's view).
    public var useBubblewrap: Bool
    public var bwrapPath: String
    /// Directories the job may write: its builds dir, cache dir and HOME.
    public var writable: [String]
    /// Directories replaced by an empty tmpfs: Airlock's state, the runner's temp dir.
    public var hiddenDirectories: [String]
    /// Files replaced by /dev/null: Airlock's config, the audit log, response.json.
    public var hiddenFiles: [String]
    /// Read-only files bound into the sandbox at a path inside it (host path → sandbox path).
    public var readOnlyFiles: [(host: String, inside: String)]
    /// The working directory inside the sandbox.
    public var directory: String
    /// The job's whole environment; nothing else is inherited.
    public var environment: [String: String]
    /// The command to run inside.
    public var command: [String]

    public init(useBubblewrap: Bool, bwrapPath: String, writable: [String], hiddenDirectories: [String],
                hiddenFiles: [String], readOnlyFiles: [(host: String, inside: String)], directory: String,
                environment: [String: String], command: [String]) {
        self.useBubblewrap = useBubblewrap
        self.bwrapPath = bwrapPath
        self.writable = writable
        self.hiddenDirectories = hiddenDirectories
        self.hiddenFiles = hiddenFiles
        self.readOnlyFiles = readOnlyFiles
        self.directory = directory
        self.environment = environment
        self.command = command
    }

    /// The argv to spawn. With bubblewrap: new PID/IPC/UTS namespaces, the whole system read-only,
    /// a private /tmp and /run, the hidden paths masked, only `writable` writable, and the sandbox
    /// dies with its parent.
    public func argv() -> [String] {
        guard useBubblewrap else { return command }
        let fm = FileManager.default
        var a = [bwrapPath, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                 "--hostname", "airlock-job", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                 "--tmpfs", "/tmp", "--tmpfs", "/run"]
        // /run holds sockets (docker, systemd) a job must not reach; keep only the resolver.
        if fm.fileExists(atPath: "/run/systemd/resolve") {
            a += ["--ro-bind", "/run/systemd/resolve", "/run/systemd/resolve"]
        }
        for w in writable { a += ["--bind", w, w] }
        // Hidden paths come after the writable binds so that they win if an operator nests them.
        // Under the fresh /tmp or /run a host path is already gone, unless a writable bind brought it back.
        func underTmpfs(_ p: String) -> Bool {
            (p == "/tmp" || p.hasPrefix("/tmp/") || p == "/run" || p.hasPrefix("/run/"))
                && !writable.contains { p == $0 || p.hasPrefix($0 + "/") }
        }
        for d in hiddenDirectories where !underTmpfs(d) && fm.fileExists(atPath: d) {
            a += ["--tmpfs", d]
        }
        // A file inside a hidden directory is already gone; binding over it would recreate its name.
        let inHiddenDir = { (f: String) in self.hiddenDirectories.contains { f.hasPrefix($0 + "/") } }
        for f in hiddenFiles where !underTmpfs(f) && !inHiddenDir(f) && fm.fileExists(atPath: f) {
            a += ["--ro-bind", "/dev/null", f]
        }
        for f in readOnlyFiles { a += ["--ro-bind", f.host, f.inside] }
        a += ["--chdir", directory, "--"]
        return a + command
    }
}
