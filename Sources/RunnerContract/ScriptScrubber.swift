import Foundation

/// Removes values the job must not see from a stage script before it runs.
///
/// The runner writes every job variable into every stage script as `export KEY=VALUE`
/// (custom-executor.md §1, "Secrets on disk"), ID tokens included, and a JWT stands there verbatim
/// because it is made only of `[A-Za-z0-9_.-]`. Replacing each occurrence of the value with nothing
/// leaves `export KEY=` (an empty variable), which keeps the script's shape intact whatever quoting
/// or file-variable form the runner used around it.
public enum ScriptScrubber {
    /// Returns the script with every occurrence of each value removed, and how many were removed.
    /// Values shorter than 8 characters are ignored: they cannot be tokens and would damage the script.
    public static func scrub(_ script: String, removing values: [String]) -> (script: String, removed: Int) {
        var out = script
        var removed = 0
        for value in values where value.utf8.count >= 8 {
            let parts = out.components(separatedBy: value)
            removed += parts.count - 1
            if parts.count > 1 { out = parts.joined() }
        }
        return (out, removed)
    }
}
