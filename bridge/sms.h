/*
 * sms.h - the SMS channel's wire formats, with no I/O: form decoding
 * (application/x-www-form-urlencoded, as Kannel's sms-service and Twilio's
 * webhooks send), an incoming text read from those fields, Twilio's
 * X-Twilio-Signature, the keyed hash a phone number is looked up by, the
 * words sent back (language menu, notice, confirmations) and TwiML.
 *
 * A phone number is personal data: these functions never log it, and the
 * caller keeps it only sealed under the guest's key (docs/privacy.md).
 */
#ifndef THRESHOLD_SMS_H
#define THRESHOLD_SMS_H

#include <stddef.h>

#include <jansson.h>

#define SMS_MAX_FIELDS     64   /* form fields one request may carry */
#define SMS_MAX_NUMBER     24   /* "+" and up to 20 digits, NUL */
#define SMS_MAX_TEXT       1600 /* bytes of one incoming text (10 concatenated SMS) */
#define SMS_MAX_ID         64   /* a message id from Kannel or Twilio */
#define SMS_KEY_LEN        32   /* the server's lookup key, and a keyed hash */
#define SMS_TWILIO_SIG_LEN 28   /* base64 of a SHA-1 HMAC */

/**
 * Decode a form (name=value&..., '+' a space, %XX a byte) into @p out, an
 * object of name -> value.  A name given twice keeps its first value.
 * @param out  new reference on TH_OK
 * @return TH_OK, TH_EINVAL (bad %-escape, a name or value that is not
 *         UTF-8 or holds a NUL), TH_ETOOLARGE (more than SMS_MAX_FIELDS).
 */
int sms_form_parse(const char *s, size_t len, json_t **out);

/** An incoming text, read from a request's fields. */
struct sms_in {
	char from[SMS_MAX_NUMBER]; /* the person's number, normalised (sms_number_norm) */
	char to[SMS_MAX_NUMBER];   /* the service's number it was sent to */
	char id[SMS_MAX_ID + 1];   /* the gateway's message id, "" when none */
	char text[SMS_MAX_TEXT + 1];
};

/**
 * Read the text from @p fields: Kannel's names ("from", "to", "text",
 * "id"), or Twilio's ("From", "To", "Body", "MessageSid") when @p twilio.
 * @return TH_OK, TH_EINVAL (a field missing or malformed: a number that is
 *         not one, an id with other than [A-Za-z0-9._:-]), TH_ETOOLARGE
 *         (text over SMS_MAX_TEXT).
 */
int sms_in_read(const json_t *fields, int twilio, struct sms_in *out);

/** Where a sent text stands, from the gateway's delivery reports (the latest kept). */
enum sms_dlr_state {
	SMS_DLR_SENT = 0,  /* handed to the gateway; no report yet */
	SMS_DLR_ACCEPTED,  /* the SMSC took it (Kannel's 8) */
	SMS_DLR_BUFFERED,  /* the SMSC holds it for now (4) */
	SMS_DLR_DELIVERED, /* it reached the phone (1) */
	SMS_DLR_FAILED,    /* it will not reach the phone (2), or the SMSC refused it (16) */
	SMS_DLR_COUNT
};

#define SMS_DLR_ID_LEN 32 /* the id Threshold gives a text it sends: hex */
/* spec: Kannel sendsms dlr-mask: 1 delivered, 2 failed, 4 buffered, 8 SMSC accepted, 16 SMSC refused */
#define SMS_DLR_MASK 19 /* asked for: delivered and failed (2 and 16) */

/**
 * Read a delivery report Kannel sent to the dlr-url Threshold gave it
 * (`...?id=<our id>&type=%d`): @p fields "id" (SMS_DLR_ID_LEN lowercase
 * hex) and "type" (Kannel's %d: one of 1, 2, 4, 8, 16).
 * @param id  out, SMS_DLR_ID_LEN + 1 bytes
 * @return TH_OK, TH_EINVAL (missing or malformed).
 */
int sms_kannel_dlr_read(const json_t *fields, char id[SMS_DLR_ID_LEN + 1], enum sms_dlr_state *state);

/** "sent", "accepted", "buffered", "delivered", "failed"; NULL if out of range. */
const char *sms_dlr_state_name(enum sms_dlr_state s);

/** The state named @p name, or -1. */
int sms_dlr_state_from_name(const char *name);

/**
 * Normalise a phone number: spaces, dots, dashes and brackets dropped, a
 * leading "00" becomes "+"; then "+"? and 3..20 digits.
 * @return TH_OK (@p out, SMS_MAX_NUMBER bytes) or TH_EINVAL.
 */
int sms_number_norm(const char *in, char out[SMS_MAX_NUMBER]);

/**
 * X-Twilio-Signature: base64(HMAC-SHA1(@p token, @p url followed by each
 * POST parameter, sorted by name, as name then value, no separators)).
 * spec: twilio.com/docs/usage/security#validating-requests
 * @param params  object of name -> string (others are skipped)
 * @param out     SMS_TWILIO_SIG_LEN + 1 bytes
 */
void sms_twilio_sign(const char *token, const char *url, const json_t *params, char *out);

/** @return 1 if @p header is the signature of the request, compared in constant time; else 0. */
int sms_twilio_check(const char *token, const char *url, const json_t *params, const char *header);

/**
 * The keyed hash a number is looked up by: HMAC-SHA256(@p key, "sms" 0
 * @p service 0 @p number).  Without the server's key it cannot be
 * recomputed from a list of numbers.
 */
void sms_address_hash(const unsigned char key[SMS_KEY_LEN], const char *service, const char *number,
                      unsigned char out[SMS_KEY_LEN]);

/**
 * The same for any channel: HMAC-SHA256(@p key, @p channel 0 @p service 0
 * @p address), so one number on two channels is two addresses.
 */
void chan_address_hash(const unsigned char key[SMS_KEY_LEN], const char *channel, const char *service,
                       const char *address, unsigned char out[SMS_KEY_LEN]);

/** What the service says back by text. */
enum sms_say {
	SMS_SAY_MENU = 0, /* which language (built from the service's languages) */
	SMS_SAY_AGREE,    /* after the notice: how to agree, stop or erase */
	SMS_SAY_REMIND,   /* the notice still waits for an answer */
	SMS_SAY_OPENED,   /* agreed: someone will answer; STOP and DELETE */
	SMS_SAY_ENDED,    /* STOP: the conversation ended */
	SMS_SAY_ERASED,   /* DELETE: the erasure is under way */
	SMS_SAY_FORGOT,   /* STOP or DELETE before agreeing: nothing kept */
	SMS_SAY_NOTHING,  /* STOP or DELETE with nothing going on */
	SMS_SAY_HELD,     /* DELETE held back by an open safeguarding case */
	SMS_SAY_COUNT
};

/**
 * The words for @p what in language @p lang (en, fr, es, ar; anything else
 * English).  @p langs / @p nlangs list the service's languages, for the
 * menu.  @return a new string.
 */
char *sms_say(enum sms_say what, const char *lang, const char *const *langs, size_t nlangs);

/** TwiML answering with @p text as one message, or none when NULL (new string). */
char *sms_twiml(const char *text);

/** @p s %-encoded for a URL's query (unreserved kept; new string). */
char *sms_urlencode(const char *s);

#endif
