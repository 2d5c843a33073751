/*
 * whatsapp.h - the WhatsApp Cloud API webhook's two checks, with no I/O:
 * the verification handshake Meta makes when the webhook is set up, and
 * X-Hub-Signature-256 on every notification.  (The channel itself, its
 * messages, media and 24-hour window, is not built yet: docs/channels.md.)
 */
#ifndef THRESHOLD_WHATSAPP_H
#define THRESHOLD_WHATSAPP_H

#include <stddef.h>

#define WA_MAX_CHALLENGE 128 /* bytes of hub.challenge echoed back */

/**
 * The verification handshake: Meta calls
 * GET <webhook>?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C and
 * expects C back with 200 when T is the token set with it, else 403.
 * @param mode, token, challenge  the three query values (NULL: absent)
 * @param want                    the configured verify token
 * @param out                     WA_MAX_CHALLENGE + 1 bytes: the challenge to answer
 * @return 1 when the handshake is good (the token compared in constant time,
 *         the challenge 1..WA_MAX_CHALLENGE of [A-Za-z0-9_-.]), else 0.
 */
int wa_verify(const char *mode, const char *token, const char *challenge, const char *want, char *out);

/**
 * X-Hub-Signature-256: "sha256=" and the lower-case hex HMAC-SHA256 of the
 * raw request body under the app secret.  It must be checked over the
 * bytes as received: parsing and writing the JSON again changes them.
 * @param header  the header's value (NULL: absent)
 * @return 1 if it matches (compared in constant time), else 0.
 */
int wa_signature_check(const char *app_secret, const void *body, size_t len, const char *header);

/** The header's value for @p body (for tests and fakes): "sha256=" + 64 hex, in @p out (72 bytes). */
void wa_signature(const char *app_secret, const void *body, size_t len, char out[72]);

#endif
