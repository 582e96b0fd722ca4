import Crypto
import Foundation

/// A short, non-reversible fingerprint of a secret for logs and audit records: `sha256:` + 12 hex.
public enum Fingerprint {
    public static func of(_ secret: String) -> String {
        "sha256:" + SHA256.hash(data: Data(secret.utf8)).prefix(6).map { String(format: "%02x", $0) }.joined()
    }
}
