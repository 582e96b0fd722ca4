import AirlockCore

// GitLab Runner's cleanup_exec: `airlock-cleanup [--config FILE]`. It links no libcurl: a job with
// credentials to revoke is handed over to airlock-federate before anything is done, and every other
// job is cleaned up here.
let begun = Executor.begin(.cleanup)
await Executor.main(begun)
