// Syscalls Swift cannot call itself (syscall(2) is variadic).
#define _GNU_SOURCE
#include <stddef.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include "csupport.h"

// linux/keyctl.h: KEYCTL_GET_KEYRING_ID 0, KEYCTL_JOIN_SESSION_KEYRING 1, KEY_SPEC_SESSION_KEYRING -3.
long airlock_join_new_session_keyring(void) { return syscall(SYS_keyctl, 1, NULL); }
long airlock_session_keyring_id(void) { return syscall(SYS_keyctl, 0, -3, 0); }

// linux/capability.h, without the header: _LINUX_CAPABILITY_VERSION_3 and its two 32-bit sets.
struct airlock_cap_header { unsigned int version; int pid; };
struct airlock_cap_data { unsigned int effective, permitted, inheritable; };

pid_t airlock_spawn_tenant(unsigned int uid, const char *path, char *const argv[], char *const envp[],
                           int out_fd, int err_fd, const int *close_fds, int n) {
    pid_t pid = fork();
    if (pid < 0) return -errno;
    if (pid > 0) return pid;
    // The child: async-signal-safe system calls only, then exec.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int defaults[] = { SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT, SIGCHLD };
    for (unsigned i = 0; i < sizeof defaults / sizeof defaults[0]; i++) signal(defaults[i], SIG_DFL);
    if (setsid() < 0) _exit(126);
    int null = open("/dev/null", O_RDONLY);
    if (null < 0 || dup2(null, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) _exit(126);
    if (null > 2) close(null);
    for (int i = 0; i < n; i++) if (close_fds[i] > 2) close(close_fds[i]);
    // While still root: empty the bounding set, then no new privileges ever.
    for (int cap = 0; cap < 64; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) _exit(126);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) _exit(126);
    if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0) _exit(126);
    // Leaving uid 0 cleared the permitted and effective sets; clear the inheritable one too.
    struct airlock_cap_header h = { 0x20080522, 0 };
    struct airlock_cap_data d[2];
    memset(d, 0, sizeof d);
    if (syscall(SYS_capset, &h, d) < 0) _exit(126);
    if (getuid() != uid || geteuid() != uid || getgid() != uid) _exit(126);
    execve(path, argv, envp);
    _exit(127);
}

#include <spawn.h>

int airlock_spawn_addchdir(void *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np((posix_spawn_file_actions_t *)actions, path);
}

#include <sys/stat.h>

int airlock_file_status_of(const char *path, int follow, airlock_file_status *out) {
    struct stat st;
    int r = follow ? stat(path, &st) : lstat(path, &st);
    if (r != 0) return -1;
    out->mode = (unsigned int)st.st_mode;
    out->uid = (unsigned int)st.st_uid;
    out->is_directory = S_ISDIR(st.st_mode) ? 1 : 0;
    out->mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + (long long)st.st_mtim.tv_nsec;
    return 0;
}

#include <sys/vfs.h>

int airlock_is_tmpfs(const char *path) {
    struct statfs fs;
    if (statfs(path, &fs) != 0) return -1;
    return fs.f_type == 0x01021994 ? 1 : 0;  // TMPFS_MAGIC (linux/magic.h)
}
