import Crypto
import Foundation
import RunnerContract
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A fingerprint of a secret for logs and audit records: `hmac:` + 32 hex (128 bits of
/// HMAC-SHA256 under a per-host key). Keyed, so that a log cannot be used to test guesses of a
/// low-entropy value offline (a plain hash could: a Key Vault secret is whatever a person typed);
/// the same value under the same key always gives the same fingerprint, so prepare's and cleanup's
/// records of one credential match. Audit records name the key (`fingerprint_key`).
public enum Fingerprint {
    public struct Key: Sendable {
        let key: SymmetricKey
        /// Names the key without revealing it: `k` + 8 hex of SHA-256 over the key.
        public let id: String

        public init(bytes: [UInt8]) {
            key = SymmetricKey(data: bytes)
            id = "k" + Fingerprint.hex(SHA256.hash(data: bytes).prefix(4))
        }
    }

    /// The key file's name in `state_dir`.
    public static let keyFile = "fingerprint.key"

    /// The key `use` set; until an executable loads the host's key, `processKey`.
    private static let current = Mutex<Key?>(nil)
    /// A random key of this process only (tests, tools), made when first needed: a stage that
    /// loads the host's key makes none (issue 19).
    private static let processKey = Key(bytes: (0..<32).map { _ in UInt8.random(in: 0...255) })
    private static var active: Key { current.withLock { $0 } ?? processKey }

    /// Makes `key` the one every fingerprint of this process uses.
    public static func use(_ key: Key) { current.withLock { $0 = key } }

    /// The id of the key in use (for audit records).
    public static var keyID: String { active.id }

    public static func of(_ secret: String) -> String {
        of(secret, key: active)
    }

    /// Lowercase hex, two digits a byte (String(format:) went through Foundation's formatting for
    /// each byte, in every stage that loads the host's key).
    package static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0x0f)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// The fingerprint of `secret` under `key`.
    public static func of(_ secret: String, key: Key) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data(secret.utf8), using: key.key)
        return "hmac:" + hex(Data(mac).prefix(16))
    }

    /// Loads the host's key from `directory/fingerprint.key`, creating it (32 random bytes, 0600,
    /// published with link(2) so that concurrent first jobs agree on one key) when absent.
    public static func hostKey(directory: String) throws -> Key {
        let path = "\(directory)/\(keyFile)"
        for _ in 0..<50 {
            if let d = FileContents.read(path) {
                // Published whole by link(2): any other size is not a key Airlock made.
                guard d.count == 32 else { throw KeyError("\(path) holds \(d.count) bytes, not a 32-byte key; remove it to make a new one (fingerprints then change)") }
                return Key(bytes: Array(d))
            } else {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                let tmp = "\(path).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
                let bytes = (0..<32).map { _ in UInt8.random(in: 0...255) }
                let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw KeyError("cannot create \(tmp): \(String(cString: strerror(errno)))") }
                let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, 32) }
                fsync(fd)
                close(fd)
                defer { unlink(tmp) }
                guard n == 32 else { throw KeyError("cannot write \(tmp)") }
                if link(tmp, path) == 0 { return Key(bytes: bytes) }
                guard errno == EEXIST else { throw KeyError("cannot create \(path): \(String(cString: strerror(errno)))") }
            }
        }
        throw KeyError("cannot read \(path)")
    }

    public struct KeyError: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }
}
