import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Files a test writes and then executes.
public enum TestFiles {
    public struct WriteError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Writes `bytes` to a new file at `path` with `mode` through a descriptor opened with O_CLOEXEC.
    /// A server or child another test starts meanwhile (moto, OpenBao, a tenant spawn) must not
    /// inherit it open for writing: executing the file would then fail with "Text file busy" for as
    /// long as that child lives. FileManager's createFile and copyItem descriptors are inheritable
    /// (seen twice, once in CI).
    public static func writeExecutable(_ path: String, _ bytes: [UInt8], mode: UInt32 = 0o755) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(mode))
        guard fd >= 0 else { throw WriteError(description: "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let reason = String(cString: strerror(errno))
                unlink(path)
                throw WriteError(description: "cannot write \(path): \(reason)")
            }
            done += n
        }
        // The mode asked for, whatever the umask took away.
        fchmod(fd, mode_t(mode))
    }
}
