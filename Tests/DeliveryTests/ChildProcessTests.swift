import Delivery
import Foundation
import Testing

/// ChildProcess's working directory (issue 19): the child changes to it itself, before exec, with
/// no shell in between, as gitlab-runner's own exec does.
struct ChildProcessDirectoryTests {
    private func output(of child: ChildProcess) -> String {
        child.startReaper {}
        var log: [UInt8] = []
        child.pump(stdout: StreamMasker(MaskPatterns(exact: [])), stderr: StreamMasker(MaskPatterns(exact: [])), sink: { _, bytes in log += bytes })
        _ = child.wait()
        return String(decoding: log, as: UTF8.self)
    }

    @Test func theChildStartsInTheDirectory() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-cwd-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let child = try ChildProcess(argv: ["/bin/pwd"], environment: [:], directory: dir)
        // pwd prints the physical path: TMPDIR may lead through a symbolic link.
        let physical = URL(fileURLWithPath: dir).resolvingSymlinksInPath().path
        #expect(output(of: child) == physical + "\n")
    }

    /// Started in a directory, a bare command name is looked up on the child's PATH, as the `cd` in a
    /// shell did (the unsandboxed run stage: the job's PATH, `job_path`), not on this process's.
    @Test func aCommandIsFoundOnTheChildsPath() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-path-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let command = "airlock-probe-\(getpid())"
        FileManager.default.createFile(atPath: "\(dir)/\(command)", contents: Data("#!/bin/sh\necho found-on-$((6 * 7))\n".utf8),
                                       attributes: [.posixPermissions: 0o755])
        let child = try ChildProcess(argv: [command], environment: ["PATH": "relative:\(dir)"], directory: "/")
        #expect(output(of: child) == "found-on-42\n")
        // Not on the child's PATH: not started, whatever this process's PATH holds.
        #expect(throws: SpawnError.self) { try ChildProcess(argv: ["sh"], environment: ["PATH": dir], directory: "/") }
    }

    /// A `cd` in a shell started the child and let the shell report the missing directory as the
    /// command's own failure (exit 2); the spawn itself now fails and names it.
    @Test func aMissingDirectoryIsASpawnErrorThatNamesTheReason() {
        let missing = "/nonexistent-airlock-\(getpid())"
        do {
            let child = try ChildProcess(argv: ["/bin/true"], environment: [:], directory: missing)
            Issue.record("spawned pid \(child.pid) in a missing directory")
        } catch {
            #expect("\(error)" == "cannot start /bin/true in \(missing): No such file or directory", "\(error)")
        }
    }
}
