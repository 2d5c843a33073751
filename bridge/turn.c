/*
 * turn.c - TURN REST credentials (turn.h).
 */
#include "turn.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "util.h"

int turn_password(const char *secret, const char *username, char out[TURN_PASSWORD_MAX])
{
	if (!secret || !*secret || !username)
		return TH_EINVAL;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	/* coturn: HMAC-SHA1 over the username, keyed by static-auth-secret (RFC 5389's long-term
	 * credential then uses this as the password) */
	if (!HMAC(EVP_sha1(), secret, (int)strlen(secret), (const unsigned char *)username, strlen(username),
	          mac, &maclen) ||
	    maclen != 20)
		return TH_ECRYPTO;
	/* 20 bytes -> 28 base64 characters and a NUL */
	if (EVP_EncodeBlock((unsigned char *)out, mac, (int)maclen) != 28)
		return TH_ECRYPTO;
	return TH_OK;
}

int turn_mint(const char *secret, uint64_t now_s, unsigned ttl_s, struct turn_cred *out)
{
	char name[TURN_NAME_HEX + 1];
	struct turn_cred c;
	int rc = th_random_hex(name, TURN_NAME_HEX / 2);
	if (rc)
		return rc;
	c.expiry_s = now_s + ttl_s;
	snprintf(c.username, sizeof(c.username), "%" PRIu64 ":%s", c.expiry_s, name);
	if ((rc = turn_password(secret, c.username, c.password)))
		return rc;
	*out = c;
	return TH_OK;
}
