import AirlockCore

// GitLab Runner's config_exec: `airlock-config [--config FILE]`.
Executor.mainSync(.config)
