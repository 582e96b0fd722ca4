public import Foundation
#if canImport(FoundationNetworking)
public import FoundationNetworking
#endif
public import Identity

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
            // Detached: a cancelled caller must not cancel the URLSessionTask, whose cancel can
            // deadlock in swift-corelibs-foundation; every request ends by its own timeout.
            let session = self.session
            let request = r
            let (data, response) = try await Task.detached { try await session.data(for: request) }.value
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
