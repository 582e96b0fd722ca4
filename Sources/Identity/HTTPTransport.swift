public import Foundation

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

/// A transport for executables that must not talk to the network (config, run): every call fails.
/// Keeping URLSession out of them keeps libcurl and its libraries out of every stage's start-up.
public struct NoNetworkTransport: HTTPTransport {
    public init() {}
    public func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        throw TransportError("no network in this executable (\(request.url.host ?? "?"))")
    }
}
