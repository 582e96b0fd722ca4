import AirlockCore

// GitLab Runner's prepare_exec: `airlock-prepare [--config FILE]`.
await Executor.main(.prepare)
