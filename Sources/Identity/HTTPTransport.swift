import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// An HTTP response: status, headers (lower-cased names) and body.
public struct HTTPResponse: Sendable {
    public let status: Int
    public let headers: [String: String]
    public let body: Data
    public init(status: Int, headers: [String: String] = [:], body: Data) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// An HTTP request as the providers and the JWKS fetcher make them.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: URL
    public var headers: [String: String]
    public var body: Data?
    public var timeout: Double
    public init(method: String = "GET", url: URL, headers: [String: String] = [:], body: Data? = nil, timeout: Double = 10) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }
}

/// The one seam for outbound HTTP; tests swap it with a closure-backed fake.
public protocol HTTPTransport: Sendable {
    /// Sends a request. Throws on connection failure or timeout; HTTP errors are responses.
    func send(_ request: HTTPRequest) async throws -> HTTPResponse
}

/// A transport failure (connection refused, timeout, TLS), with a message that names the host.
public struct TransportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// URLSession (libcurl underneath, system CA store). No cookies, no cache, no credential storage,
/// and redirects are not followed: a redirect from an identity provider is an answer to report.
public final class URLSessionTransport: NSObject, HTTPTransport, URLSessionTaskDelegate, @unchecked Sendable {
    private let session: URLSession

    public override init() {
        let c = URLSessionConfiguration.ephemeral
        c.httpCookieStorage = nil
        c.urlCache = nil
        c.urlCredentialStorage = nil
        c.requestCachePolicy = .reloadIgnoringLocalAndRemoteCacheData
        session = URLSession(configuration: c)
    }

    public func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        var r = URLRequest(url: request.url, cachePolicy: .reloadIgnoringLocalAndRemoteCacheData, timeoutInterval: request.timeout)
        r.httpMethod = request.method
        r.httpBody = request.body
        for (k, v) in request.headers { r.setValue(v, forHTTPHeaderField: k) }
        let host = request.url.host ?? request.url.absoluteString
        do {
            let (data, response) = try await session.data(for: r)
            guard let http = response as? HTTPURLResponse else { throw TransportError("\(host): not an HTTP response") }
            var headers: [String: String] = [:]
            for (k, v) in http.allHeaderFields { headers[String(describing: k).lowercased()] = String(describing: v) }
            return HTTPResponse(status: http.statusCode, headers: headers, body: data)
        } catch let e as TransportError {
            throw e
        } catch {
            throw TransportError("\(host): \((error as NSError).localizedDescription)")
        }
    }
}
