import Ledger
public import Foundation

/// What a stage's sandbox looks like: the one place that decides what a job can see and write.
public struct SandboxSpec: Sendable {
    /// bubblewrap, or none (the script runs with the host's view: unsafe).
    public var useBubblewrap: Bool
    public var bwrapPath: String
    /// The job's own uid and gid, which the stage is started as (`ChildProcess(tenant:)`); nil runs
    /// as the caller (only with `useBubblewrap == false`).
    public var uid: UInt32?
    /// The job's own directories: host path → where the job sees it. Mounted last, so they win.
    public var writable: [(host: String, inside: String)]
    /// Directories replaced by an empty tmpfs: roots of other jobs' directories, Airlock's state,
    /// the runner's config and temp dirs.
    public var hiddenDirectories: [String]
    /// Files replaced by /dev/null: Airlock's config, keys, the audit log, response.json.
    public var hiddenFiles: [String]
    /// Files bubblewrap copies into the sandbox from an open descriptor, read-only, mode 0400,
    /// owned by the job: the stage script and the stage's secret files. The job's uid needs no access
    /// to any host path for them.
    public var dataFiles: [(fd: Int32, inside: String)]
    /// The working directory inside the sandbox.
    public var directory: String
    /// The job's whole environment; nothing else is inherited.
    public var environment: [String: String]
    /// The command to run inside.
    public var command: [String]

    public init(useBubblewrap: Bool, bwrapPath: String, uid: UInt32?,
                writable: [(host: String, inside: String)], hiddenDirectories: [String], hiddenFiles: [String],
                dataFiles: [(fd: Int32, inside: String)] = [], directory: String,
                environment: [String: String], command: [String]) {
        self.useBubblewrap = useBubblewrap
        self.bwrapPath = bwrapPath
        self.uid = uid
        self.writable = writable
        self.hiddenDirectories = hiddenDirectories
        self.hiddenFiles = hiddenFiles
        self.dataFiles = dataFiles
        self.directory = directory
        self.environment = environment
        self.command = command
    }

    /// The argv to spawn (in a new session: no controlling terminal to push keystrokes into).
    ///
    /// With bubblewrap, started as the job's uid/gid (no supplementary groups, no capabilities,
    /// bounding set emptied, no_new_privs: `ChildProcess(tenant:)`), bubblewrap builds
    /// new user/PID/IPC/UTS/mount/cgroup namespaces (the network is the host's, as with the shell
    /// executor), forbids further user namespaces, shows the system read-only, a private /tmp and
    /// /run, masks the hidden paths, mounts the job's own directories, and dies with its parent.
    public func argv() -> [String] {
        guard useBubblewrap else { return command }
        let fm = FileManager.default
        var a = [bwrapPath, "--unshare-all", "--share-net", "--die-with-parent"]
        if uid != nil { a += ["--unshare-user", "--disable-userns"] }
        a += ["--hostname", "airlock-job", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
              "--tmpfs", "/tmp", "--tmpfs", "/run"]
        // /run holds sockets (docker, systemd) a job must not reach; keep only the resolver.
        if fm.fileExists(atPath: "/run/systemd/resolve") {
            a += ["--ro-bind", "/run/systemd/resolve", "/run/systemd/resolve"]
        }
        // Under the fresh /tmp or /run a host path is already gone.
        func underTmpfs(_ p: String) -> Bool {
            p == "/tmp" || p.hasPrefix("/tmp/") || p == "/run" || p.hasPrefix("/run/")
        }
        // A path the job's uid cannot even reach (a directory on the way is not searchable by others)
        // is already out of its sight; bubblewrap, running as that uid, could not mount over it either.
        let reachable = { (p: String) in uid == nil || Self.searchableByOthers(parentsOf: p) }
        let hidden = hiddenDirectories.filter { !underTmpfs($0) && fm.fileExists(atPath: $0) && reachable($0) }
        // A directory inside another hidden one is gone already; covering it again would recreate its
        // name as a mount point in the empty tmpfs above it.
        for d in Set(hidden).sorted() where !hidden.contains(where: { d.hasPrefix($0 + "/") }) {
            a += ["--tmpfs", d]
        }
        // A file inside a hidden directory is already gone; binding over it would recreate its name.
        let inHiddenDir = { (f: String) in self.hiddenDirectories.contains { f.hasPrefix($0 + "/") } }
        for f in hiddenFiles where !underTmpfs(f) && !inHiddenDir(f) && fm.fileExists(atPath: f) && reachable(f) {
            a += ["--ro-bind", "/dev/null", f]
        }
        // The job's own directories last, so that they show even where a hidden root covers them.
        for w in writable { a += ["--bind", w.host, w.inside] }
        for f in dataFiles { a += ["--perms", "0400", "--ro-bind-data", "\(f.fd)", f.inside] }
        a += ["--chdir", directory, "--"]
        return a + command
    }

    /// Whether every directory above `path` lets others search it (o+x): whether a uid that owns
    /// none of them and belongs to none of their groups can reach `path` at all.
    public static func searchableByOthers(parentsOf path: String) -> Bool { unsearchableParent(of: path) == nil }

    /// The first directory above `path` that others cannot search (or that cannot be read), if any.
    public static func unsearchableParent(of path: String) -> (path: String, mode: mode_t)? {
        var dir = (path as NSString).deletingLastPathComponent
        while dir.count > 1 {
            guard let st = Files.status(dir, follow: true) else { return (dir, 0) }
            if st.mode & 0o001 == 0 { return (dir, mode_t(st.mode & 0o777)) }
            dir = (dir as NSString).deletingLastPathComponent
        }
        return nil
    }
}
