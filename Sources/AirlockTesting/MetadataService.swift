import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A stand-in for a cloud VM's metadata services, for tests on a machine that has none (threat-model.md
/// "building blocks"): the well-known addresses are added to `lo` and an HTTP server answers on each,
/// as the host's own identity would. Shared by the tests that need it and torn down (server stopped,
/// addresses removed) when the last one is done.
public final class MetadataService: @unchecked Sendable {
    public static let addresses = ["169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"]
    /// What every address answers; a job that prints it reached the host's identity.
    public static let answer = "host-instance-identity-\(UUID().uuidString.prefix(8))"

    private static let lock = NSLock()
    nonisolated(unsafe) private static var shared: MetadataService?
    nonisolated(unsafe) private static var users = 0

    private let process: Process

    /// Takes a reference to the running service, starting it first if needed.
    /// - Throws: when the addresses cannot be added (not root) or the server does not answer.
    public static func acquire() throws -> MetadataService {
        try lock.withLock {
            if let s = shared { users += 1; return s }
            let s = try MetadataService()
            shared = s
            users = 1
            return s
        }
    }

    /// Gives the reference back; the last one stops the server and removes the addresses.
    public static func release() {
        lock.withLock {
            users -= 1
            guard users <= 0, let s = shared else { return }
            s.stop()
            shared = nil
        }
    }

    private init() throws {
        for a in Self.addresses {
            let prefix = a.contains(":") ? "128" : "32"
            _ = Self.ip(["addr", "add", "\(a)/\(prefix)", "dev", "lo"])
        }
        let script = """
        import http.server, socket, threading, sys
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = sys.argv[1].encode() + b"\\n"
                self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
            def log_message(self, *a): pass
        class S4(http.server.ThreadingHTTPServer): pass
        class S6(http.server.ThreadingHTTPServer): address_family = socket.AF_INET6
        servers = []
        for a in sys.argv[2:]:
            s = (S6 if ":" in a else S4)((a, 80), H)
            threading.Thread(target=s.serve_forever, daemon=True).start()
            servers.append(s)
        print("ready", flush=True)
        threading.Event().wait()
        """
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = ["--pdeathsig", "KILL", "/usr/bin/python3", "-c", script, Self.answer] + Self.addresses
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try PeerSpawner.run(process)
        let line = out.fileHandleForReading.availableData
        guard String(decoding: line, as: UTF8.self).contains("ready") else {
            stop()
            throw SimulatorError("the metadata stand-in did not start (are the tests running as root?)")
        }
    }

    private func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        for a in Self.addresses {
            let prefix = a.contains(":") ? "128" : "32"
            _ = Self.ip(["addr", "del", "\(a)/\(prefix)", "dev", "lo"])
        }
    }

    /// What a plain GET of `http://ADDRESS/` returns to this (root, non-job) process: the control
    /// that shows the service answers at all.
    public static func fetchAsHost(_ address: String) -> String {
        let host = address.contains(":") ? "[\(address)]" : address
        let r = TestWorld.launch("/usr/bin/curl", ["-s", "-m", "3", "http://\(host)/"], environment: nil)
        return r.stdout
    }

    @discardableResult
    static func ip(_ args: [String]) -> Int32 {
        TestWorld.launch("/usr/sbin/ip", args, environment: nil).code
    }
}
