/*
 * audit_witness.h - a witness outside the store: each signed audit
 * checkpoint's sequence number and hash (nothing else) is posted by the bot
 * to a room on the homeserver that safeguarding leads read, and `threshold
 * audit verify` checks the store against what was witnessed there.
 *
 * Why: someone with write access to the store can cut the log back to an
 * earlier signed checkpoint and rewrite the head; what is left is a valid,
 * signed log (audit.h).  The homeserver is a second system Threshold's store
 * cannot rewrite, so a checkpoint posted there is proof that the log once
 * reached it.
 *
 * WHERE.  audit.witness_room, else safeguarding.room (the bot is joined to
 * it).  The event is of type AUDIT_WITNESS_TYPE, not a message, so clients
 * do not show it in the room's timeline and the leads' alerts are not buried;
 * any member can still read it through the API (or a client's "show hidden
 * events").  Content: {"seq": N, "hash": "<64 lower-case hex>"}.
 *
 * HOW.  audit_witness_queue() (the daemon, once a second) pushes a "send"
 * outbox action for every checkpoint after STORE_META "audit_witness_seq",
 * in one write transaction that also moves that mark, so each is posted
 * once, durably, in the room's lane.  When the mark does not exist yet (a
 * store older than this, or a witness room newly configured) only the newest
 * checkpoint is witnessed: the point from which rollbacks are detected.
 *
 * CHECK.  audit_witness_read() reads the room's history backwards as the bot
 * (as_token; only the bot's own events of that type count: anyone else in
 * the room could post one).  audit_witness_check() then compares: the
 * store's newest checkpoint must be at or after the newest witnessed one,
 * and every witnessed checkpoint must be in the store with the same hash.
 * A witness event that was redacted (its content gone) is reported too: only
 * someone holding the bot's token could have hidden a witness that way.
 */
#ifndef THRESHOLD_AUDIT_WITNESS_H
#define THRESHOLD_AUDIT_WITNESS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "audit.h"
#include "cs.h"
#include "store.h"

struct config;

/* The event type of a witnessed checkpoint (a non-message room event). */
#define AUDIT_WITNESS_TYPE "org.threshold.audit.checkpoint"

/* At most this many witness actions are queued per call. */
#define AUDIT_WITNESS_BATCH 256

/** The room checkpoints are witnessed in (borrowed from @p cfg), or NULL for none. */
const char *audit_witness_room(const struct config *cfg);

/**
 * Queue an outbox "send" of every checkpoint not yet witnessed (up to
 * AUDIT_WITNESS_BATCH), and move the mark, in one write transaction.
 * Opens a write transaction only when there is something to queue.
 * @param queued  out: how many were queued (0 when there is no witness room)
 * @return TH_OK, TH_EFULL or TH_ESTORE.
 */
int audit_witness_queue(const struct config *cfg, store *st, size_t *queued);

/** One witnessed checkpoint as read back from the room. */
struct audit_witness {
	uint64_t seq;                      /* 0 for a redacted witness (see event_id) */
	char hash[2 * AUDIT_HASH_LEN + 1]; /* lower-case hex; "" when redacted */
	char event_id[256];                /* the witness event */
	uint64_t ts_ms;                    /* when the homeserver received it */
};

/** A growing list of witnesses (v: xrealloc'd; the caller frees v). */
struct audit_witness_list {
	struct audit_witness *v;
	size_t n, cap;
};

/**
 * Take the bot's witness events out of one page of GET /rooms/{id}/messages
 * (@p page as the homeserver answered it, untrusted) and append them to @p l:
 * a well-formed one with its seq and hash, a redacted one (content emptied,
 * or unsigned.redacted_because) with seq 0; anything else is passed by.
 * @return the page's "end" token (borrowed from @p page), or NULL.
 */
const char *audit_witness_page(const json_t *page, const char *bot_user_id, struct audit_witness_list *l);

/**
 * Read every witness event of the bot in the witness room, newest first.
 * @param out  new array (caller frees) on TH_OK, @p n its length
 * @return TH_OK, TH_ENOTFOUND (no witness room configured), TH_EHTTP (the
 *         homeserver refused: status in @p status, e.g. the bot not in the
 *         room), TH_ENET / TH_ETIMEOUT (unreachable), TH_ETOOLARGE.
 */
int audit_witness_read(cs_client *c, const struct config *cfg, struct audit_witness **out, size_t *n,
                       long *status);

/** What audit_witness_check found.  Always written. */
struct audit_witness_result {
	size_t witnessed;    /* witness events read (redacted ones included) */
	uint64_t newest_seq; /* newest witnessed checkpoint; 0 if none */
	uint64_t store_ckpt; /* the store's newest checkpoint */
	size_t unwitnessed;  /* store checkpoints after newest_seq (posting pending) */
	char what[512];      /* the first problem, in plain words; "" if none */
};

/**
 * Compare the store's checkpoints with @p w (as audit_witness_read gave
 * them).  Run after audit_verify() passed, so the store's checkpoints are
 * known to sign its records.
 * @return TH_OK, TH_EVERIFY (res->what says what: a rollback, a divergence,
 *         a redacted witness) or TH_ESTORE.
 */
int audit_witness_check(store *st, const struct audit_witness *w, size_t n, struct audit_witness_result *res);

#endif
