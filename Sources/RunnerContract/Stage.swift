/// Stage names the runner sends to `run_exec`, per custom-executor.md §1.
public enum Stage {
    /// Stages the runner actually sends, in order. Unknown names (`step_<name>`, future stages) are
    /// run as ordinary scripts.
    public static let ordered: [String] = [
        "prepare_script", "get_sources", "clear_worktree", "restore_cache", "download_artifacts",
        "build_script", "after_script", "archive_cache", "archive_cache_on_failure",
        "upload_artifacts_on_success", "upload_artifacts_on_failure", "cleanup_file_variables",
    ]

    /// Whether a stage receives credentials when a profile does not name its stages:
    /// `build_script`, `step_*` and `after_script`; never sources, caches or artifacts.
    public static func receivesCredentialsByDefault(_ stage: String) -> Bool {
        stage == "build_script" || stage == "after_script" || stage.hasPrefix("step_")
    }

    /// A stage name is used in file names of the job state, so it is restricted to a safe set.
    public static func isValidName(_ stage: String) -> Bool {
        !stage.isEmpty && stage.count <= 128
            && stage.utf8.allSatisfy { c in
                (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c == 0x5f || c == 0x2d
            }
    }
}
