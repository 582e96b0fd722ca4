import AirlockCore

// GitLab Runner's cleanup_exec: `airlock-cleanup [--config FILE]`.
await Executor.main(.cleanup)
