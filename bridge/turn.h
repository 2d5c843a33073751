/*
 * turn.h - TURN credentials for a guest's call, in the shared-secret scheme
 * coturn's use-auth-secret and Synapse's turn_shared_secret both speak
 * (draft-uberti-behave-turn-rest-00): username "<expiry unix seconds>:<name>",
 * password base64(HMAC-SHA1(secret, username)).  The name is an opaque random
 * id, never the guest's Matrix id, so the TURN server's log holds nothing that
 * points at the guest.  Pure apart from the randomness of the name.
 */
#ifndef THRESHOLD_TURN_H
#define THRESHOLD_TURN_H

#include <stddef.h>
#include <stdint.h>

#define TURN_NAME_HEX     16 /* hex digits of the opaque name */
#define TURN_USERNAME_MAX 64 /* "<expiry>:<name>" and its NUL */
#define TURN_PASSWORD_MAX 32 /* base64 of 20 bytes (28) and its NUL */

struct turn_cred {
	char username[TURN_USERNAME_MAX];
	char password[TURN_PASSWORD_MAX];
	uint64_t expiry_s; /* unix seconds */
};

/**
 * The password for @p username under @p secret.
 * @param out  TURN_PASSWORD_MAX bytes, NUL-terminated on TH_OK
 * @return TH_OK, TH_EINVAL (a missing argument) or TH_ECRYPTO.
 */
int turn_password(const char *secret, const char *username, char out[TURN_PASSWORD_MAX]);

/**
 * New credentials valid until @p now_s + @p ttl_s, under an opaque random name.
 * @param out  written on TH_OK
 * @return TH_OK, TH_EINVAL, TH_EIO (no randomness) or TH_ECRYPTO.
 */
int turn_mint(const char *secret, uint64_t now_s, unsigned ttl_s, struct turn_cred *out);

#endif
