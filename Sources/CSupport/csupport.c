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
#include <sys/mman.h>
#include <sched.h>
#include "csupport.h"

// linux/keyctl.h: KEYCTL_GET_KEYRING_ID 0, KEYCTL_JOIN_SESSION_KEYRING 1, KEY_SPEC_SESSION_KEYRING -3.
long airlock_join_new_session_keyring(void) { return syscall(SYS_keyctl, 1, NULL); }
long airlock_session_keyring_id(void) { return syscall(SYS_keyctl, 0, -3, 0); }

// linux/capability.h, without the header: _LINUX_CAPABILITY_VERSION_3 and its two 32-bit sets.
struct airlock_cap_header { unsigned int version; int pid; };
struct airlock_cap_data { unsigned int effective, permitted, inheritable; };

// The kernel's struct sigaction on x86-64 and arm64 (asm/signal.h), for rt_sigaction(2) itself.
struct airlock_kernel_sigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    unsigned long mask;
};

struct airlock_tenant {
    unsigned int uid;
    const char *path;
    char *const *argv;
    char *const *envp;
    int out_fd, err_fd;
    const int *close_fds;
    int n;
};

// The child, on its own stack in the parent's memory (CLONE_VM | CLONE_VFORK: the parent waits until
// it has exec'd or exited). Raw system calls only where glibc would act for the whole process: its
// setgroups/setresgid/setresuid signal every thread of what it takes for this process (the parent's)
// to change their credentials too. Nothing here writes the parent's memory but errno.
static int airlock_tenant_child(void *p) {
    const struct airlock_tenant *t = p;
    unsigned int uid = t->uid;
    // Every signal is blocked (the parent blocked them all before clone): no handler of the parent's can
    // run here. Each one the parent catches or ignores goes back to its default before any is let in,
    // through the system call itself (glibc's sigaction will not touch the two it keeps for itself,
    // and an ignored signal stays ignored across exec).
    struct airlock_kernel_sigaction dfl, old;
    memset(&dfl, 0, sizeof dfl);  // SIG_DFL
    for (int sig = 1; sig <= 64; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        if (syscall(SYS_rt_sigaction, sig, NULL, &old, 8) == 0 && old.handler != NULL) {
            syscall(SYS_rt_sigaction, sig, &dfl, NULL, 8);
        }
    }
    sigset_t none;
    sigemptyset(&none);
    if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, NSIG / 8) < 0) _exit(126);
    if (setsid() < 0) _exit(126);
    int null = open("/dev/null", O_RDONLY);  // no O_CLOEXEC: it may be fd 0 itself
    if (null < 0 || dup2(null, 0) < 0 || dup2(t->out_fd, 1) < 0 || dup2(t->err_fd, 2) < 0) _exit(126);
    if (null > 2) close(null);
    for (int i = 0; i < t->n; i++) if (t->close_fds[i] > 2) close(t->close_fds[i]);
    // While still root: empty the bounding set, then no new privileges ever.
    for (int cap = 0; cap < 64; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) _exit(126);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) _exit(126);
    if (syscall(SYS_setgroups, 0, NULL) < 0 || syscall(SYS_setresgid, uid, uid, uid) < 0
        || syscall(SYS_setresuid, uid, uid, uid) < 0) _exit(126);
    // Leaving uid 0 cleared the permitted and effective sets; clear the inheritable one too.
    struct airlock_cap_header h = { 0x20080522, 0 };
    struct airlock_cap_data d[2];
    memset(d, 0, sizeof d);
    if (syscall(SYS_capset, &h, d) < 0) _exit(126);
    if (syscall(SYS_getuid) != uid || syscall(SYS_geteuid) != uid || syscall(SYS_getgid) != uid) _exit(126);
    execve(t->path, t->argv, t->envp);
    _exit(127);
}

// clone(2) with CLONE_VM | CLONE_VFORK, as posix_spawn does, instead of fork(2): fork copied the page
// tables of a static Swift executable in every run stage (a third of a millisecond, issue 19).
// The child's credential change marks the shared memory, and so the caller, not dumpable (with
// fs.suid_dumpable = 0: no core dump of the run stage), as posix_spawn with POSIX_SPAWN_RESETIDS does.
pid_t airlock_spawn_tenant(unsigned int uid, const char *path, char *const argv[], char *const envp[],
                           int out_fd, int err_fd, const int *close_fds, int n) {
    struct airlock_tenant t = { uid, path, argv, envp, out_fd, err_fd, close_fds, n };
    const size_t stack_size = 64 * 1024;
    // Every signal, glibc's own two (32 and 33, which sigfillset and pthread_sigmask leave out)
    // included: through the system call, as posix_spawn does.
    unsigned long all = ~0UL, old = 0;
    syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, &old, 8);
    void *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    pid_t pid = -1;
    int err = 0;
    if (stack == MAP_FAILED) {
        err = errno;
    } else {
        pid = clone(airlock_tenant_child, (char *)stack + stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, &t);
        if (pid < 0) err = errno;
        munmap(stack, stack_size);
    }
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, 8);
    return pid < 0 ? -err : pid;
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

int airlock_widen_pipe(int fd, int bytes) { return fcntl(fd, F_SETPIPE_SZ, bytes); }
