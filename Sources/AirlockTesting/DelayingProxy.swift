import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A TCP proxy on 127.0.0.1 in front of a loopback peer (moto, OpenBao, a fake) that holds each of
/// the peer's answers for `delay` seconds: a provider that takes that long to answer, for the
/// benchmarks (issue 19: prepare's exchanges run side by side). What the client sends goes through
/// at once; the first bytes the peer sends after it are held `delay` s, the rest follow unheld.
/// Benchmarks only: it checks nothing and changes no byte.
public final class DelayingProxy: @unchecked Sendable {
    public let port: UInt16
    public let delay: Double
    private let upstream: UInt16
    private let fd: Int32
    private let lock = NSLock()
    private var stopped = false

    /// `http://127.0.0.1:PORT`, with `path` (the peer's URL's path) kept by `url(for:)`.
    public var baseURL: String { "http://127.0.0.1:\(port)" }

    /// The proxy's URL for a URL of the peer: same path and query, the proxy's port.
    public func url(for peerURL: String) -> String {
        guard var c = URLComponents(string: peerURL) else { return baseURL }
        c.port = Int(port)
        return c.string ?? baseURL
    }

    /// - Parameter peer: a loopback URL of the peer (only its port is used).
    public init(peer: String, delay: Double) throws {
        guard let p = URLComponents(string: peer)?.port, let up = UInt16(exactly: p) else { throw SimulatorError("no port in \(peer)") }
        upstream = up
        self.delay = delay
        (fd, port) = try LoopbackHTTPServer.listenOnLoopback(backlog: 128)
        let listenFD = fd
        Thread.detachNewThread { [weak self] in
            while true {
                let c = accept(listenFD, nil, nil)
                guard c >= 0 else { return }
                guard let self, !self.isStopped else { close(c); return }
                Thread.detachNewThread { self.relay(c) }
            }
        }
    }

    deinit { stop() }

    var isStopped: Bool { lock.withLock { stopped } }

    public func stop() {
        lock.withLock {
            guard !stopped else { return }
            stopped = true
            shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
        }
    }

    static func loopback(port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        a.sin_port = port.bigEndian
        return a
    }

    private func relay(_ client: Int32) {
        let peer = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = Self.loopback(port: upstream)
        let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(peer, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard ok == 0 else { close(peer); close(client); return }
        // Set when the client has sent something the peer has not answered yet.
        let asked = Asked()
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            Self.pump(from: client, to: peer) { asked.set() }
            shutdown(peer, Int32(SHUT_WR))
            done.signal()
        }
        Self.pump(from: peer, to: client) {
            if asked.take() { Thread.sleep(forTimeInterval: self.delay) }
        }
        shutdown(client, Int32(SHUT_WR))
        done.wait()
        close(peer)
        close(client)
    }

    /// Copies until end of stream; `before` runs before each chunk is written on.
    private static func pump(from: Int32, to: Int32, before: () -> Void) {
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(from, &buf, buf.count)
            if n <= 0 { return }
            before()
            var off = 0
            while off < n {
                let w = buf.withUnsafeBytes { send(to, $0.baseAddress! + off, n - off, Int32(MSG_NOSIGNAL)) }
                if w <= 0 { return }
                off += w
            }
        }
    }
}

private final class Asked: @unchecked Sendable {
    private let lock = NSLock()
    private var waiting = false
    func set() { lock.withLock { waiting = true } }
    func take() -> Bool { lock.withLock { let w = waiting; waiting = false; return w } }
}
