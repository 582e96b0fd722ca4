#if canImport(Glibc)
import Glibc
#endif

/// Whole small files read with open(2) and read(2): the payload and the job's state files, which
/// every stage reads (FileManager.contents(atPath:) cost a stat and Foundation's Data on each).
public enum FileContents {
    /// Every byte of the file at `path` (symlinks followed), or nil when it cannot be opened or read
    /// (a directory cannot). For Airlock's own files and the runner's payload only: a FIFO would
    /// block.
    public static func read(_ path: String) -> [UInt8]? {
        try? reading(path).get()
    }

    /// Why a file could not be read: the system's reason (strerror), for messages.
    public struct ReadError: Error, CustomStringConvertible, Sendable {
        public let code: Int32
        public var description: String { String(cString: strerror(code)) }
    }

    /// `read`, with the reason when the file cannot be opened or read.
    public static func reading(_ path: String) -> Result<[UInt8], ReadError> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(ReadError(code: errno)) }
        defer { close(fd) }
        let (bytes, complete) = readToEnd(fd)
        return complete ? .success(bytes) : .failure(ReadError(code: errno))
    }

    /// Reads `fd` to its end, retrying on EINTR: what it held, and whether it ended without an error
    /// (the bytes before an error are kept). The descriptor stays open.
    public static func readToEnd(_ fd: Int32) -> (bytes: [UInt8], complete: Bool) {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; return (out, false) }
            if n == 0 { return (out, true) }
            out.append(contentsOf: chunk[0..<n])
        }
    }
}
