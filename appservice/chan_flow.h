/*
 * chan_flow.h - the steps every outside channel (SMS, WhatsApp) takes, with
 * the channel's own wire format left to its driver: the lookup key file;
 * a message delivered again handled once; per-address and per-service rate
 * limits; policy/chanrules.h's decision carried out (language menu,
 * notice, consent, words to staff, STOP/END, DELETE, forget); a webhook
 * listener with its body cap; and the sender thread that carries staff's
 * words from the guests' feeds (conv_chan_due / conv_chan_sent) through
 * the driver's send.  A driver reads its requests, checks their
 * signatures, and says how words go out: in the HTTP reply (Kannel,
 * Twilio) or by its own API call (WhatsApp).  No address is ever logged.
 */
#ifndef THRESHOLD_CHAN_FLOW_H
#define THRESHOLD_CHAN_FLOW_H

#include <stddef.h>

#include <jansson.h>
#include <microhttpd.h>

#include "channel.h"
#include "config.h"
#include "conv.h"
#include "env.h"

typedef struct chan_flow chan_flow;

#define CHF_KEY_LEN 32 /* the lookup key, and an address's keyed hash */
#define CHF_HELD    1  /* send_due: kept in the feed on purpose (not a failure) */

/** Called after the channel committed actions for the outbox, or grew a feed (any thread). */
typedef void (*chf_on_queue_fn)(void *ctx);

struct chf_driver {
	const char *name; /* the conversation record's channel ("sms"); the log's prefix */
	const char *by;   /* said to staff: "by SMS" */
	unsigned caps;    /* CHAN_CAP_* */
	const char *key_file;
	unsigned per_address_per_minute, per_service_per_minute;
	/**
	 * Carry one entry of conv_chan_due() (borrowed: "guest", "service",
	 * "lang", "texts", "address" when there are texts) to its address.
	 * From the sender thread only.
	 * @return TH_OK (carried: the entries count as sent), CHF_HELD (kept
	 *         in the feed, to go later: no retry pressure), or an error
	 *         (retried later, with back-off).
	 */
	int (*send_due)(void *ctx, const json_t *item);
	void *ctx;
};

/**
 * Load (or create, 0600) @p drv's key file and start its sender.
 * @param drv  borrowed; must outlive the flow
 * @return TH_OK, TH_EIO (key file unusable, no thread: logged).
 */
int chf_start(const struct txn_env *env, const struct chf_driver *drv, chf_on_queue_fn on_queue, void *ctx,
              chan_flow **out);

/** Stop the sender and free.  NULL is a no-op. */
void chf_stop(chan_flow *f);

/** The lookup key (CHF_KEY_LEN bytes; borrowed, valid until chf_stop). */
const unsigned char *chf_key(const chan_flow *f);

/** Wake the sender: feeds grew, or a held message may go now.  Any thread. */
void chf_kick(chan_flow *f);

/** This channel, as bridge/channel.h sees it (ops NULL when @p f is NULL). */
struct channel chf_channel(chan_flow *f);

/** One message in from a person; all borrowed. */
struct chf_in {
	const struct config_service *svc;
	const unsigned char *key; /* CHF_KEY_LEN: the address's keyed hash */
	const char *address;      /* the person's address: sealed on agreeing, never logged */
	const char *dedupe;       /* "sms:kannel:<id>": handled once; NULL or "" for no id */
	const char *local_id;     /* the words' local id in the room, or NULL (random) */
	const char *text; /* the words ("" for a file alone; with a file, its caption, sent after it) */
	/* a file with it (already cleaned: media_clean), or NULL */
	const struct media_kind *kind;
	const unsigned char *data;
	size_t len;
	int recorded; /* 1: recorded durably by the driver, limits and dedupe taken then (chf_limit_take) */
};

/** What was done with a message in. */
struct chf_answer {
	unsigned status;                    /* HTTP status for a gateway that answers in its reply */
	char *say;                          /* new string: words to send back, or NULL */
	int repeat;                         /* 1: delivered before; nothing done */
	int action;                         /* enum pol_chan_action taken */
	char guest[GUESTS_MAX_USER_ID + 1]; /* the person's guest, when they have a conversation */
	char lang[16];                      /* the language the words are in */
};

/**
 * Take a message in: rate limits, dedupe, policy's decision carried out.
 * When a step fails (out->status 5xx) the dedupe mark is taken back, so
 * the gateway's retry is handled.
 * @param out  always written; free out->say
 */
void chf_answer_in(chan_flow *f, const struct chf_in *in, struct chf_answer *out);

/**
 * Take one message of @p key's address and @p svc from the rate limits.
 * @return TH_OK, or TH_EFULL: over a limit (logged; not to be answered).
 */
int chf_limit_take(chan_flow *f, const struct config_service *svc, const unsigned char key[CHF_KEY_LEN]);

/**
 * Mark @p id seen under @p ns ("whatsapp:status"): @return 1 if it was
 * seen before, 0 if first (now recorded).
 */
int chf_seen_before(chan_flow *f, const char *id);

/* ---- the webhook listener --------------------------------------------------------- */

typedef struct chf_listener chf_listener;

/**
 * A whole request, its body read (at most the cap).  Answer with
 * chf_reply or MHD_queue_response.
 * @param too_large  1: the body was over the cap (and dropped)
 */
typedef enum MHD_Result (*chf_request_fn)(void *ctx, struct MHD_Connection *conn, const char *url,
                                          const char *method, const char *body, size_t len, int too_large);

/** Is @p url one of the driver's paths (checked before any body is read)? */
typedef int (*chf_route_fn)(void *ctx, const char *url);

/**
 * Listen on @p address:@p port (0: any free one) for GET and POST to the
 * driver's paths, bodies capped at @p max_body before a byte is read.
 * @param what  the log's name ("sms.listen_address")
 * @return TH_OK or TH_EIO (logged).
 */
int chf_listen(const char *what, const char *address, unsigned port, size_t max_body, chf_route_fn route,
               chf_request_fn on_request, void *ctx, chf_listener **out);

/** The port bound. */
unsigned chf_listener_port(const chf_listener *l);

/** Stop listening (waits for requests in flight) and free.  NULL is a no-op. */
void chf_listener_stop(chf_listener *l);

/** Queue @p status with @p text (takes ownership) as @p type. */
enum MHD_Result chf_reply(struct MHD_Connection *conn, unsigned status, const char *type, char *text);

#endif
