// Syscalls Swift cannot call itself (syscall(2) is variadic).
#include <stddef.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "csupport.h"

// linux/keyctl.h: KEYCTL_GET_KEYRING_ID 0, KEYCTL_JOIN_SESSION_KEYRING 1, KEY_SPEC_SESSION_KEYRING -3.
long airlock_join_new_session_keyring(void) { return syscall(SYS_keyctl, 1, NULL); }
long airlock_session_keyring_id(void) { return syscall(SYS_keyctl, 0, -3, 0); }
