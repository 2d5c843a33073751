/*
 * whatsapp.h - the WhatsApp Cloud API's wire formats, with no I/O: the
 * webhook's verification handshake and X-Hub-Signature-256, its
 * notifications read (messages and statuses), and the bodies Threshold
 * posts to /{phone_number_id}/messages.  The channel that uses them is
 * appservice/wa_channel.c (docs/channels.md).
 *
 * A phone number is personal data: nothing here logs it.
 */
#ifndef THRESHOLD_WHATSAPP_H
#define THRESHOLD_WHATSAPP_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

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

#define WA_MAX_ID     160  /* a message or media id ("wamid.…") */
#define WA_MAX_TEXT   4096 /* bytes of one text (Cloud API's own limit) */
#define WA_MAX_ITEMS  64   /* messages and statuses one notification may carry */
#define WA_MAX_PNID   32   /* digits of a phone number id */
#define WA_MAX_NUMBER 21   /* a WhatsApp id (the number, digits only), NUL */

/**
 * Read a webhook notification (the raw body, signature already checked):
 * {"object":"whatsapp_business_account","entry":[{"changes":[{"field":
 * "messages","value":{"metadata":{"phone_number_id"},"messages":[…],
 * "statuses":[…]}}]}]}.
 * @param out  on TH_OK a new array, in order, of
 *   {"kind":"message","pnid","from","id","ts","type", "text"? (text and a
 *    caption), "media_id"?, "mime_type"? (image)} and
 *   {"kind":"status","pnid","id","status","ts"} (status one of sent,
 *   delivered, read, failed); an item missing a part or malformed (an id
 *   not [A-Za-z0-9._=:-], a number not 3..20 digits) is left out.
 * @return TH_OK, TH_EINVAL (not JSON, not this object), TH_ETOOLARGE (over
 *         WA_MAX_ITEMS items, or a text over WA_MAX_TEXT).
 */
int wa_notification_parse(const char *body, size_t len, json_t **out);

/** A status's rank, so statuses arriving out of order are kept monotone: sent 1 < delivered 2 < read 3;
 * failed 4; else 0. */
int wa_status_rank(const char *status);

/** The body of a text message to @p to (new string). */
char *wa_text_body(const char *to, const char *text);

/** The body of template @p name in @p lang, with no parameters (new string). */
char *wa_template_body(const char *to, const char *name, const char *lang);

/** The body of an image message sending uploaded media @p media_id (new string). */
char *wa_image_body(const char *to, const char *media_id);

#endif
