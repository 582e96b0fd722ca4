import AirlockCore

// GitLab Runner's run_exec: `airlock-run [--config FILE] <script> <stage>`.
Executor.mainSync(.run)
