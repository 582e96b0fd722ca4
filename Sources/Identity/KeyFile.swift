import CSupport
public import Foundation

/// A private key file as the checks on it need it: the mode of the path itself, from lstat(2)
/// through CSupport (FileManager.attributesOfItem also looks up the owner's and group's names:
/// glibc's NSS, which the statically linked stage executables must not load), and its bytes.
/// IssuerKey and the OAuth client key read theirs with it; each makes its own checks.
public struct KeyFile: Sendable {
    public let pem: Data
    /// `st_mode` of the path itself (a symlink's own, not its target's).
    public let mode: Int

    /// nil when the path cannot be examined or read.
    public static func read(_ path: String) -> KeyFile? {
        var status = airlock_file_status()
        guard airlock_file_status_of(path, 0, &status) == 0, let pem = FileManager.default.contents(atPath: path) else { return nil }
        return KeyFile(pem: pem, mode: Int(status.mode))
    }
}
