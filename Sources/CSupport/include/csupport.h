#ifndef AIRLOCK_CSUPPORT_H
#define AIRLOCK_CSUPPORT_H

/// Makes the calling process join a new, anonymous session keyring (keyctl
/// KEYCTL_JOIN_SESSION_KEYRING with no name). Children inherit it instead of the caller's
/// previous one. Returns the new keyring's id, or -1 with errno set.
long airlock_join_new_session_keyring(void);

/// The id of the calling process's session keyring (KEYCTL_GET_KEYRING_ID, no creation), or -1.
long airlock_session_keyring_id(void);

#include <sys/types.h>

/// Starts `path` (absolute) with `argv` and `envp` as a tenant: in a new session (no controlling
/// terminal), with stdin from /dev/null and stdout/stderr on `out_fd`/`err_fd`, as uid and gid
/// `uid` with no supplementary groups, an empty capability bounding set, no capabilities, and
/// no_new_privs; signal mask cleared and the usual signals at their defaults. `close_fds` (n of them)
/// are closed in the child. The child shares the caller's memory until it execs (clone with
/// CLONE_VM | CLONE_VFORK, on a stack of its own, every signal blocked until its handlers are reset)
/// and makes system calls only, so this is safe from a multi-threaded process. The caller must be
/// root. Returns the child's pid, or -errno when it cannot be started; a child that cannot drop its
/// privileges or exec exits 126 or 127 before running anything else.
pid_t airlock_spawn_tenant(unsigned int uid, const char *path, char *const argv[], char *const envp[],
                           int out_fd, int err_fd, const int *close_fds, int n);

/// posix_spawn_file_actions_addchdir_np (glibc 2.29), which Swift's Glibc module does not export:
/// the child changes to `path` before exec, without a shell in between. `actions` is a
/// posix_spawn_file_actions_t * (void * here: the type belongs to a different clang module in
/// debug and static builds). Returns 0 or an errno value.
int airlock_spawn_addchdir(void *actions, const char *path);

#include <stddef.h>
#include <stdint.h>

/// Whether the masker skips in[k] (of n): whitespace, or a backslash followed by CR or LF.
int airlock_skipped(const uint8_t *in, size_t n, size_t k);

/// Copies `in` (n bytes) to `out` without what `airlock_skipped` says (whitespace, line-continuing
/// backslashes) and returns how many bytes it wrote; `out` needs n bytes. For each block of
/// `block_size` input bytes (a multiple of 64), `block_starts[i]` receives how many bytes were
/// written before block i. The job-log masker's hot loop: 64 bytes at a time with AVX-512 VBMI2
/// where the CPU has it, 8 with SSSE3, byte by byte otherwise.
size_t airlock_compact_whitespace(const uint8_t *in, size_t n, uint8_t *out, size_t *block_starts, size_t block_size);

/// The implementation `airlock_compact_whitespace` uses on this CPU: 2 AVX-512 VBMI2 (64 bytes at a
/// time), 1 SSSE3 (8), 0 scalar.
int airlock_compact_whitespace_best(void);

/// `airlock_compact_whitespace` with the implementation `impl` (or the best below it the CPU has),
/// so that tests compare every one this machine can run.
size_t airlock_compact_whitespace_using(int impl, const uint8_t *in, size_t n, uint8_t *out, size_t *block_starts, size_t block_size);

/// The job-log masker's filter: the starts in [from, n - m] that a Wu-Manber walk over `buf` with
/// window `m` and this shift table (2^bits entries, indexed by StreamMasker.hash3 of the window's
/// last three bytes) finds with shift 0, ascending, in `candidates` (room for n - from entries); a
/// pattern at least `m` long can start nowhere else, and no prefix of one at least `m` long either.
/// Four walks over consecutive parts run interleaved. `resume` receives where the last walk ended
/// (at least n - m + 1): from there on a window no longer fits, and the caller looks at each start.
/// Returns how many candidates it wrote.
size_t airlock_wm_candidates(const uint8_t *buf, size_t n, size_t from, size_t m, const uint8_t *shift, unsigned bits,
                             uint32_t *candidates, size_t *resume);

/// What Airlock reads of a file's status. Swift sees this struct from this module alone: glibc's
/// `struct stat` is owned by a different clang module in debug and static-stdlib builds, which
/// MemberImportVisibility would make each Swift file name.
typedef struct {
    unsigned int mode;       // st_mode (type and permission bits)
    unsigned int uid;
    int is_directory;
    long long mtime_ns;      // st_mtim in nanoseconds
} airlock_file_status;

/// lstat(2) (follow = 0) or stat(2) (follow != 0) of `path` into `out`. Returns 0, or -1 with errno set.
int airlock_file_status_of(const char *path, int follow, airlock_file_status *out);

/// Sets the capacity of the pipe `fd` is an end of to at least `bytes` (F_SETPIPE_SZ). Returns the
/// new capacity, or -1 with errno set (EPERM past /proc/sys/fs/pipe-max-size for an unprivileged
/// caller, EBUSY below what the pipe holds, EBADF or EINVAL for something that is no pipe).
int airlock_widen_pipe(int fd, int bytes);

/// Whether the file system `path` is on (symlinks followed) is a tmpfs: 1 or 0, or -1 with errno set.
int airlock_is_tmpfs(const char *path);

/// The nftables ruleset generation (NFT_MSG_GETGEN) of the calling process's network namespace, a
/// counter the kernel moves on with every committed change to any table, and that namespace's cookie
/// (SO_NETNS_COOKIE, unique in the boot): the same pair means the same, unchanged ruleset. Needs
/// CAP_NET_ADMIN and Linux 5.14. Returns 0 with both set, or -1 with errno set.
int airlock_nft_generation(uint32_t *generation, uint64_t *netns_cookie);

#endif
