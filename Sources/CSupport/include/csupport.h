#ifndef AIRLOCK_CSUPPORT_H
#define AIRLOCK_CSUPPORT_H

/// Makes the calling process join a new, anonymous session keyring (keyctl
/// KEYCTL_JOIN_SESSION_KEYRING with no name). Children inherit it instead of the caller's
/// previous one. Returns the new keyring's id, or -1 with errno set.
long airlock_join_new_session_keyring(void);

/// The id of the calling process's session keyring (KEYCTL_GET_KEYRING_ID, no creation), or -1.
long airlock_session_keyring_id(void);

#endif
