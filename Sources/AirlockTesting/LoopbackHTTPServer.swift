public import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A request as a fake server sees it.
public struct FakeRequest: Sendable {
    public let method: String
    public let path: String
    public let query: [String: String]
    public let headers: [String: String]
    public let body: Data
    /// The body as an x-www-form-urlencoded form.
    public var form: [String: String] { FakeRequest.parseQuery(String(decoding: body, as: UTF8.self)) }

    static func parseQuery(_ s: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in s.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0) }
            if let k = kv.first { out[k] = kv.count > 1 ? kv[1] : "" }
        }
        return out
    }
}

/// A response from a fake server.
public struct FakeResponse: Sendable {
    public var status: Int
    public var headers: [String: String]
    public var body: Data
    public init(status: Int = 200, headers: [String: String] = ["Content-Type": "application/json"], body: Data) {
        self.status = status
        self.headers = headers
        self.body = body
    }
    public static func json(_ obj: Any, status: Int = 200) -> FakeResponse {
        FakeResponse(status: status, body: (try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])) ?? Data())
    }
}

/// A minimal HTTP/1.1 server on 127.0.0.1 for the fakes in AirlockTesting: one thread per
/// connection, `Connection: close`. Bound to loopback only; stopped by `stop()` or deinit.
public final class LoopbackHTTPServer: @unchecked Sendable {
    public let port: UInt16
    private let fd: Int32
    private let handler: @Sendable (FakeRequest) -> FakeResponse
    private let lock = NSLock()
    private var stopped = false
    public private(set) var requestCount = 0
    private var spans: [(path: String, start: Date, end: Date)] = []
    /// When each request arrived and was answered, to show concurrency without timing assertions.
    public var requestSpans: [(path: String, start: Date, end: Date)] { lock.withLock { spans } }

    /// Starts listening on an ephemeral loopback port.
    public init(handler: @escaping @Sendable (FakeRequest) -> FakeResponse) throws {
        self.handler = handler
        (fd, port) = try Self.listenOnLoopback(backlog: 64)
        let listenFD = fd
        Thread.detachNewThread { [weak self] in
            while true {
                let c = accept(listenFD, nil, nil)
                guard c >= 0 else { return }
                guard let self, !self.isStopped else { close(c); return }
                Thread.detachNewThread { self.serve(c) }
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    public var baseURL: String { "http://127.0.0.1:\(port)" }

    /// A listening TCP socket on an ephemeral port of 127.0.0.1, and that port.
    static func listenOnLoopback(backlog: Int32) throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let b = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard b == 0, listen(fd, backlog) == 0 else { close(fd); throw SimulatorError("cannot listen on loopback: \(String(cString: strerror(errno)))") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return (fd, UInt16(bigEndian: addr.sin_port))
    }

    var isStopped: Bool { lock.withLock { stopped } }

    public func stop() {
        lock.withLock {
            guard !stopped else { return }
            stopped = true
            shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
        }
    }

    deinit { stop() }

    private func serve(_ c: Int32) {
        defer { close(c) }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var data = Data()
        var buf = [UInt8](repeating: 0, count: 16384)
        var headerEnd: Range<Data.Index>?
        while headerEnd == nil {
            let n = read(c, &buf, buf.count)
            if n <= 0 { return }
            data.append(contentsOf: buf[0..<n])
            headerEnd = data.range(of: Data("\r\n\r\n".utf8))
            if data.count > 1 << 20 { return }
        }
        let head = String(decoding: data[..<headerEnd!.lowerBound], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count >= 2 else { return }
        var headers: [String: String] = [:]
        for l in lines {
            guard let i = l.firstIndex(of: ":") else { continue }
            headers[l[..<i].lowercased()] = l[l.index(after: i)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Data(data[headerEnd!.upperBound...])
        let length = Int(headers["content-length"] ?? "0") ?? 0
        while body.count < length {
            let n = read(c, &buf, buf.count)
            if n <= 0 { break }
            body.append(contentsOf: buf[0..<n])
        }
        let target = String(requestLine[1])
        let pathPart = target.split(separator: "?", maxSplits: 1)
        let req = FakeRequest(method: String(requestLine[0]), path: String(pathPart[0]),
                              query: pathPart.count > 1 ? FakeRequest.parseQuery(String(pathPart[1])) : [:],
                              headers: headers, body: body)
        lock.withLock { requestCount += 1 }
        let started = Date()
        let resp = handler(req)
        lock.withLock { spans.append((req.path, started, Date())) }
        var out = "HTTP/1.1 \(resp.status) X\r\nContent-Length: \(resp.body.count)\r\nConnection: close\r\n"
        for (k, v) in resp.headers { out += "\(k): \(v)\r\n" }
        out += "\r\n"
        let bytes = Array(out.utf8) + Array(resp.body)
        var off = 0
        while off < bytes.count {
            // MSG_NOSIGNAL: a peer that went away (a killed prepare) must not SIGPIPE the test process.
            let n = bytes.withUnsafeBytes { send(c, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }
}
