import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// moto's server (a real AWS emulator nobody here wrote) on a loopback port, for the life of a test.
/// Started with `moto_server -H 127.0.0.1 -p PORT`; stopped (and its process reaped) by `stop()`/deinit.
public final class MotoServer: @unchecked Sendable {
    public let port: UInt16
    private let process: Process

    /// `http://127.0.0.1:PORT`.
    public var url: String { "http://127.0.0.1:\(port)" }

    /// Starts moto and waits until it answers.
    /// - Throws: when moto_server is missing or does not come up within 20 s.
    public init() throws {
        port = try Self.freePort()
        process = Process()
        // setpriv --pdeathsig: moto dies with the test process even when that is SIGKILLed.
        let setpriv = FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")
        process.executableURL = URL(fileURLWithPath: setpriv ? "/usr/bin/setpriv" : "/usr/bin/env")
        process.arguments = (setpriv ? ["--pdeathsig", "KILL", "/usr/bin/env"] : [])
            + ["python3", "-m", "moto.server", "-H", "127.0.0.1", "-p", "\(port)"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try PeerSpawner.run(process)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if Self.answers(port) { return }
            if !process.isRunning { throw SimulatorError("moto_server exited; install it with scripts/install-deps") }
            Thread.sleep(forTimeInterval: 0.1)
        }
        stop()
        throw SimulatorError("moto_server did not answer on port \(port) within 20 s")
    }

    /// SIGTERM, then SIGKILL after 3 s: werkzeug's server does not always stop on SIGTERM.
    public func stop() {
        guard process.isRunning else { return }
        let pid = process.processIdentifier
        kill(pid, SIGTERM)
        let until = Date().addingTimeInterval(3)
        while process.isRunning && Date() < until { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
    }

    deinit { stop() }

    static func freePort() throws -> UInt16 {
        let s = try LoopbackHTTPServer { _ in FakeResponse(body: Data()) }
        let p = s.port
        s.stop()
        return p
    }

    static func answers(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = port.bigEndian
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}

/// An STS that refuses every identity with a given error code, in STS's error XML (federation.md A1).
public enum FakeSTS {
    /// A server that answers every AssumeRoleWithWebIdentity with `code` and HTTP `status`.
    public static func rejecting(code: String, status: Int = 400, message: String = "Incorrect token audience", delay: Double = 0) throws -> LoopbackHTTPServer {
        try LoopbackHTTPServer { _ in
            if delay > 0 { Thread.sleep(forTimeInterval: delay) }
            let xml = """
            <ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
              <Error><Type>Sender</Type><Code>\(code)</Code><Message>\(message)</Message></Error>
              <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
            </ErrorResponse>
            """
            return FakeResponse(status: status, headers: ["Content-Type": "text/xml"], body: Data(xml.utf8))
        }
    }
}

extension FakeSTS {
    /// A server that answers after `delay` seconds (a provider that hangs), with a 503.
    public static func hanging(_ delay: Double) throws -> LoopbackHTTPServer {
        try LoopbackHTTPServer { _ in
            Thread.sleep(forTimeInterval: delay)
            return FakeResponse(status: 503, body: Data())
        }
    }
}
