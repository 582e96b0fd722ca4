import AirlockTesting
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
        // O_CLOEXEC: a child another test starts meanwhile must not hold it open for writing (ETXTBSY).
        try TestFiles.writeExecutable("\(dir)/\(command)", Array("#!/bin/sh\necho found-on-$((6 * 7))\n".utf8))
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

/// The tenant spawn (airlock_spawn_tenant: clone with CLONE_VM | CLONE_VFORK since issue 19), seen
/// from the child itself, without bubblewrap (which drops capabilities again for what it runs, and so
/// would hide a spawn that did not): the job's uid and gid only, every capability set empty, the
/// bounding set included, no_new_privs, no signal blocked, caught or ignored from this process, a
/// session of its own and stdin from /dev/null. Needs root, as Airlock does.
struct TenantSpawnTests {
    @Test(.enabled(if: geteuid() == 0, "the tenant spawn needs root"))
    func theChildHasTheJobsIdsAndNothingElse() throws {
        // An ignored signal and a supplementary group in this process, which the child must not keep.
        // Both are process-wide for a moment: nothing else here uses SIGUSR2, and what other tests
        // start meanwhile only gains a group.
        signal(SIGUSR2, SIG_IGN)
        defer { signal(SIGUSR2, SIG_DFL) }
        // (Root may have no supplementary group of its own.)
        var saved = [gid_t](repeating: 0, count: 256)
        let count = getgroups(Int32(saved.count), &saved)
        try #require(count >= 0 && setgroups(1, [4242]) == 0)
        defer { _ = setgroups(Int(count), saved) }
        let uid: UInt32 = 2_000_000_901
        let script = #"cat /proc/self/status; echo "stdin=$(readlink /proc/self/fd/0)"; echo "session=$(cut -d' ' -f6 /proc/$$/stat) pid=$$""#
        let child = try ChildProcess(tenant: uid, argv: ["/bin/sh", "-c", script], environment: ["PATH": "/usr/bin:/bin"], mergedOutput: true)
        child.startReaper {}
        var log: [UInt8] = []
        child.pump(stdout: StreamMasker(MaskPatterns(exact: [])), stderr: StreamMasker(MaskPatterns(exact: [])), sink: { _, bytes in log += bytes })
        let code = child.wait()
        let text = String(decoding: log, as: UTF8.self)
        var status: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { status[String(parts[0])] = parts[1].split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ") }
        }
        #expect(code == 0, "\(text)")
        #expect(status["Uid"] == "\(uid) \(uid) \(uid) \(uid)" && status["Gid"] == "\(uid) \(uid) \(uid) \(uid)", "\(text)")
        #expect(status["Groups"] == "", "\(text)")
        let zero = "0000000000000000"
        let sets = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"].map { "\($0)=\(status[$0] ?? "?")" }
        #expect(sets == ["CapInh=\(zero)", "CapPrm=\(zero)", "CapEff=\(zero)", "CapBnd=\(zero)", "CapAmb=\(zero)"], "\(text)")
        #expect(status["NoNewPrivs"] == "1", "\(text)")
        // sh itself catches SIGCHLD-style signals only while it waits; blocked and ignored must be empty.
        #expect(status["SigBlk"] == zero && status["SigIgn"] == zero, "\(text)")
        let session = text.split(separator: "\n").first { $0.hasPrefix("session=") }.map(String.init) ?? ""
        let ids = session.split(separator: " ").map { $0.split(separator: "=").last.map(String.init) ?? "" }
        #expect(ids.count == 2 && ids[0] == ids[1], "\(session)")
        #expect(text.contains("stdin=/dev/null\n"), "\(text)")
    }
}

/// The pump's writer: pieces go out whole and in order, more of them than one writev(2) takes,
/// into a pipe that fills (so the writes block part-way and resume).
struct GatherWriteTests {
    @Test func everyPieceArrivesInOrder() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let reader = ChildProcess.Drain(fds[0])
        // 3000 pieces of 1 to 200 bytes (over 300 KB: the 64 KiB pipe fills many times).
        var expected: [UInt8] = []
        var pieces: [[UInt8]] = []
        for k in 0..<3000 {
            let piece = (0..<(1 + k * 7919 % 200)).map { UInt8(truncatingIfNeeded: $0 &+ k) }
            pieces.append(piece)
            expected += piece
        }
        let buffers = pieces.map { p -> UnsafeMutableBufferPointer<UInt8> in
            let b = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: p.count)
            _ = b.initialize(from: p)
            return b
        }
        defer { buffers.forEach { $0.deallocate() } }
        ChildProcess.writeAll(fds[1], buffers.map { UnsafeBufferPointer($0) })
        close(fds[1])
        let got = reader.finish()
        #expect(got.count == expected.count)
        let same = got == expected
        #expect(same)
    }
}
