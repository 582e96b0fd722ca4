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
        #expect(output(of: child) == dir + "\n")
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
