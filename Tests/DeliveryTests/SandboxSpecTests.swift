import Delivery
import Foundation
import Testing

/// The bubblewrap command line a stage runs under (issue 16: SandboxSpec had no unit tests). The
/// end-to-end suites run it for real, as root, and attack it as a hostile job.
struct SandboxSpecTests {
    /// A scratch tree under /var/tmp (not /tmp: the sandbox's own /tmp is a fresh tmpfs, so paths
    /// there are skipped), searchable by others like the real roots.
    final class Tree {
        let root = "/var/tmp/airlock-sandbox-spec-\(UUID().uuidString)"
        init(_ dirs: [String], files: [String]) throws {
            for d in [""] + dirs {
                try FileManager.default.createDirectory(atPath: root + d, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            }
            for f in files { FileManager.default.createFile(atPath: root + f, contents: Data("x".utf8)) }
        }
        deinit { try? FileManager.default.removeItem(atPath: root) }
    }

    func spec(_ t: Tree, uid: UInt32? = 200_001, bubblewrap: Bool = true) -> SandboxSpec {
        SandboxSpec(useBubblewrap: bubblewrap, bwrapPath: "/usr/bin/bwrap", uid: uid,
                    writable: [(t.root + "/builds/p42", "/builds"), (t.root + "/homes/j7", "/home/job")],
                    hiddenDirectories: [t.root + "/state", t.root + "/state/jobs", t.root + "/builds", t.root + "/absent", "/tmp/whatever"],
                    hiddenFiles: [t.root + "/etc/airlock.toml", t.root + "/state/jobs/ledger.json", t.root + "/absent.pem"],
                    dataFiles: [(fd: 9, inside: "/tmp/.airlock-stage.sh")], directory: "/builds",
                    environment: ["PATH": "/usr/bin:/bin"], command: ["bash", "/tmp/.airlock-stage.sh"])
    }

    static func pairs(_ a: [String], _ flag: String) -> [String] {
        a.indices.filter { a[$0] == flag && $0 + 1 < a.count }.map { a[$0 + 1] }
    }

    @Test func theJobGetsItsOwnNamespacesAReadOnlySystemAndDiesWithItsParent() throws {
        let t = try Tree(["/builds/p42", "/homes/j7", "/state/jobs", "/etc"], files: ["/etc/airlock.toml", "/state/jobs/ledger.json"])
        let a = spec(t).argv()
        #expect(a.first == "/usr/bin/bwrap")
        for flag in ["--unshare-all", "--share-net", "--die-with-parent", "--unshare-user", "--disable-userns"] {
            #expect(a.contains(flag), "\(flag)")
        }
        let roBind = a.firstIndex(of: "--ro-bind")
        #expect(roBind.map { Array(a[$0...($0 + 2)]) } == ["--ro-bind", "/", "/"])
        #expect(Self.pairs(a, "--tmpfs").prefix(2) == ["/tmp", "/run"])
        #expect(Array(a.suffix(5)) == ["--chdir", "/builds", "--", "bash", "/tmp/.airlock-stage.sh"])
        #expect(Array(a[a.firstIndex(of: "--perms")!...].prefix(5)) == ["--perms", "0400", "--ro-bind-data", "9", "/tmp/.airlock-stage.sh"])
    }

    /// Hidden directories become empty tmpfs (a nested one only once: covering it again would
    /// recreate its name), hidden files /dev/null (not inside a hidden directory); absent paths and
    /// paths under the sandbox's own /tmp are skipped; the job's own directories come last, so they
    /// show through a hidden root.
    @Test func hiddenPathsAreCoveredOnceAndTheJobsOwnDirectoriesWin() throws {
        let t = try Tree(["/builds/p42", "/homes/j7", "/state/jobs", "/etc"], files: ["/etc/airlock.toml", "/state/jobs/ledger.json"])
        let a = spec(t).argv()
        let tmpfs = Self.pairs(a, "--tmpfs")
        #expect(tmpfs.dropFirst(2).sorted() == [t.root + "/builds", t.root + "/state"])
        let devNull = a.indices.filter { a[$0] == "--ro-bind" && a[$0 + 1] == "/dev/null" }.map { a[$0 + 2] }
        #expect(devNull == [t.root + "/etc/airlock.toml"])
        let binds = Self.pairs(a, "--bind")
        #expect(binds == [t.root + "/builds/p42", t.root + "/homes/j7"])
        let lastHide = a.lastIndex { $0 == "--tmpfs" || $0 == "/dev/null" }!
        #expect(a.firstIndex(of: "--bind")! > lastHide)
    }

    @Test func withoutAUidOfItsOwnThereIsNoUserNamespaceAndWithoutBubblewrapJustTheCommand() throws {
        let t = try Tree(["/builds/p42", "/homes/j7"], files: [])
        let noUID = spec(t, uid: nil).argv()
        #expect(!noUID.contains("--unshare-user") && !noUID.contains("--disable-userns") && noUID.contains("--unshare-all"))
        #expect(spec(t, bubblewrap: false).argv() == ["bash", "/tmp/.airlock-stage.sh"])
    }

    /// A path the job's uid cannot reach (a directory on the way not searchable by others) is already
    /// out of its sight, and bubblewrap, running as that uid, could not mount over it: skipped.
    @Test func aPathTheJobsUidCannotReachIsNotMountedOver() throws {
        let t = try Tree(["/private/state", "/builds/p42", "/homes/j7"], files: [])
        chmod(t.root + "/private", 0o700)
        var s = spec(t)
        s.hiddenDirectories = [t.root + "/private/state"]
        #expect(!Self.pairs(s.argv(), "--tmpfs").contains(t.root + "/private/state"))
        #expect(SandboxSpec.unsearchableParent(of: t.root + "/private/state")?.path == t.root + "/private")
        s.uid = nil  // as the caller (root), it is reachable and covered
        #expect(Self.pairs(s.argv(), "--tmpfs").contains(t.root + "/private/state"))
    }
}
