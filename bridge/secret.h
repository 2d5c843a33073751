/*
 * secret.h - the gateway's secrets: invitation tokens, session tokens and
 * resume codes.  Each is fresh randomness (never derived from anything),
 * shown once to whoever holds it, and stored only as a SHA-256 hash under a
 * domain label, so a copy of the store lets nobody redeem or resume.
 */
#ifndef THRESHOLD_SECRET_H
#define THRESHOLD_SECRET_H

#include <stddef.h>

#define SEC_TOKEN_BYTES 24 /* 192 random bits */
#define SEC_TOKEN_LEN   32 /* base64url characters of SEC_TOKEN_BYTES */
#define SEC_RESUME_LEN  19 /* "ABCD-EFGH-JKLM-NPQR": 16 symbols of 32, 80 bits */
#define SEC_HASH_LEN    32

/**
 * A new token of SEC_TOKEN_LEN base64url characters (A-Z a-z 0-9 - _).
 * @param out  SEC_TOKEN_LEN + 1 bytes
 * @return TH_OK or TH_EIO (no randomness).
 */
int sec_token_new(char *out);

/**
 * A new resume code, "ABCD-EFGH-JKLM-NPQR", from an alphabet without
 * look-alike letters (no I, O, 0, 1), easy to copy by hand.
 * @param out  SEC_RESUME_LEN + 1 bytes
 * @return TH_OK or TH_EIO.
 */
int sec_resume_new(char *out);

/**
 * Normalise a resume code as typed: letters upper-cased, spaces and dashes
 * dropped, dashes put back.  @return 1 if it has the shape of one (written
 * to @p out, SEC_RESUME_LEN + 1 bytes), else 0.
 */
int sec_resume_normalise(const char *typed, char *out);

/** @return 1 if @p s is SEC_TOKEN_LEN base64url characters. */
int sec_token_ok(const char *s);

/** SHA-256 of @p domain, a NUL byte and @p secret: the key it is stored under. */
void sec_hash(const char *domain, const char *secret, unsigned char out[SEC_HASH_LEN]);

#endif
