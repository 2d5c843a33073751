/*
 * outbox.h - durable queue of actions Threshold takes on the homeserver.
 *
 * Actions are written into STORE_OUTBOX inside the same LMDB write
 * transaction as the AS transaction that caused them (outbox_push), so the
 * ack to the homeserver and the intent to act are one commit.  A worker
 * thread then executes them in order with retries: exponential backoff for
 * network errors, timeouts and 5xx; the server's retry_after_ms for 429.
 * A permanent refusal (other 4xx) is logged and the action dropped, and so is
 * an answer over CS_MAX_RESPONSE_BYTES (retrying it would wedge the queue).
 * A crash between ack and action loses nothing: the action is still queued
 * and runs at the next start.  Sends use the outbox sequence as the Matrix
 * transaction id ("th<store prefix>_<seq>"), so a resend after a crash is
 * deduplicated by the server.  Sequence numbers never repeat within a store
 * (STORE_META "outbox_seq" keeps the highest one pushed), and the prefix is
 * random per store (STORE_META "outbox_txn_prefix"), so neither a drained
 * queue nor a wiped store reuses a transaction id.
 *
 * Action JSON (the "op" selects; all ids are Matrix ids):
 *   {"op":"join",  "room_id":R, "user_id":U}
 *   {"op":"leave", "room_id":R, "user_id":U[, "reason":S]}    (also rejects an invite)
 *   {"op":"send",  "room_id":R, "user_id":U, "type":T, "content":{...}}
 *   {"op":"register", "localpart":L}
 *   {"op":"displayname", "user_id":U, "displayname":D}
 *   {"op":"invite", "room_id":R, "user_id":U, "target":T}
 *   {"op":"kick",   "room_id":R, "user_id":U, "target":T[, "reason":S]}  (also withdraws an invite)
 *   {"op":"state",  "room_id":R, "user_id":U, "type":T[, "state_key":K], "content":{...}}
 *   {"op":"create_room", "user_id":U, "kind":K, "content":{createRoom body}
 *                        [, "reply":{"room_id":R, "event_id":E, "body":S}]}
 *       On success the new room is recorded as managed, of kind K, and when
 *       "reply" is given a notice "S <new room id>" answers event E in R, in
 *       the same commit that removes the action.  Made once: the room's
 *       create event carries the action's mark, and a retry (after a
 *       timeout, or a crash before that commit) first looks for it among
 *       the creator's rooms the store does not hold as managed (a guest's
 *       rooms: all of them, as its room is managed from its create event).
 *       With "conversation":G (U is the guest G) the guest's conversation
 *       room: conv_room_created runs in the same commit, unless the create
 *       event reached Threshold first and it ran then (bridge/conv.h).
 *   {"op":"staff_members", "room_id":R, "user_id":U}
 *       Read who is joined to staff room R (as U, the bot, who must be
 *       joined) and, in the commit that removes the action, make that the
 *       room's recorded membership, but for members whose events were
 *       handled since the read was queued (rooms_staff_refresh).  Queue it
 *       after rooms_staff_read_begin.
 *   {"op":"redact", "room_id":R, "user_id":U, "event_id":E[, "reason":S]}
 *       (a guest's own messages, when they erase their data)
 *   {"op":"send_media", "room_id":R, "user_id":U, "blob":B, "name":N, "mimetype":M,
 *                       "msgtype":T, "local_id":L, "size":S}
 *       Upload the bytes kept under B in STORE_BLOBS as U and, in the commit
 *       that removes the action, delete them and queue the m.image/m.file.
 *       A dropped action deletes its bytes too.
 *   {"op":"deactivate", "user_id":U}   (U's account, erased: a guest who deleted their data)
 *   {"op":"account_data", "user_id":U, "type":T, "content":{...}}
 *       Set U's global account data of type T (idempotent).  Used to block
 *       invites to a guest at the homeserver (outbox_block_invites).
 *   {"op":"guest_enter", "room_id":R, "user_id":U, "target":G}
 *       Bring guest G, whose invites the homeserver blocks, into R: allow
 *       invites to G, invite G as U (the bot), join as G, block again, as
 *       one action.  A failure after the first step still blocks again, or
 *       the action is retried until it can; each step is idempotent.  For
 *       group rooms; a guest's own conversation room is made by the guest
 *       (create_room with "user_id" the guest) and needs no invite.
 *   {"op":"qr_image", "room_id":R, "user_id":U, "text":S[, "reply_to":E]}
 *       Make a QR code of S (an invitation link; bridge/qr.h), upload it as
 *       U and, in the commit that removes the action, queue an m.image
 *       answering E.  S stays in the store only until then.
 *   {"op":"audit_export", "room_id":R, "user_id":U, "reply_to":E[, "since_ms":N]}
 *       Export the audit log (records from N on, up to its newest signed
 *       checkpoint) as JSON Lines, upload it to the media store as U, and in
 *       the commit that removes the action queue a send of an m.file in
 *       reply to event E in R (or, when there is no file, a notice saying
 *       why: over 50 MiB, no checkpoint, a log that cannot be read).  A
 *       retry uploads again; the extra copy is harmless and the m.file is
 *       sent once.  The file stays in the homeserver's media store.
 */
#ifndef THRESHOLD_OUTBOX_H
#define THRESHOLD_OUTBOX_H

#include <stdint.h>

#include <jansson.h>

#include "store.h"

struct config;
typedef struct outbox outbox;

/** Outcome of one attempt at an action. */
enum outbox_result {
	OUTBOX_DONE = 0, /* succeeded (or already done) */
	OUTBOX_RETRY,    /* try again later */
	OUTBOX_DROP,     /* refused for good: log and remove */
};

/**
 * A "send" action for an m.room.message from @p user_id into @p room_id,
 * as a reply to @p in_reply_to when that is not NULL (new reference).
 * @param content  the message content; the reference is taken
 */
json_t *outbox_message(const char *room_id, const char *user_id, json_t *content, const char *in_reply_to);

/* The key in a room's m.room.create content that carries the create_room
 * action's mark ("th<prefix>_<seq>"). */
#define OUTBOX_CREATE_MARK "org.threshold.outbox_action"

/* spec v1.18 (MSC4380): the account data type that blocks invites to a user. */
#define OUTBOX_INVITE_PERMISSION "m.invite_permission_config"

/** The "account_data" action that makes the homeserver refuse every invite
 *  to @p guest ({"default_action":"block"}; new reference). */
json_t *outbox_block_invites(const char *guest);

/** outbox_message() of a plain m.notice saying @p body. */
json_t *outbox_notice(const char *room_id, const char *user_id, const char *body, const char *in_reply_to);

/**
 * Queue @p action in write transaction @p t.
 * @param action  borrowed; must hold a known "op" and its fields as non-empty
 *                strings ("content" of a send: an object)
 * @return TH_OK, TH_EINVAL (unknown op / missing field), TH_EFULL or TH_ESTORE.
 */
int outbox_push(store_txn *t, const json_t *action);

/**
 * Start the worker thread.  What is already queued runs at once.
 * @param st   borrowed; must outlive the outbox
 * @param cfg  borrowed; must outlive the outbox
 * @return TH_OK, TH_ENET (curl), TH_ESTORE / TH_EFULL (creating the txn id
 *         prefix on first use), or TH_EIO (no randomness, no thread).
 */
int outbox_start(store *st, const struct config *cfg, outbox **out);

/** Tell the worker new actions are committed.  Safe from any thread. */
void outbox_wake(outbox *ob);

/**
 * Stop the worker and free.  A backoff wait is cut short; a request in
 * flight finishes or times out (client_timeout_ms).  What is still queued
 * stays in the store for the next start.  NULL is a no-op.
 */
void outbox_stop(outbox *ob);

/** Number of actions waiting (for logs and tests); 0 if the store fails. */
size_t outbox_pending(outbox *ob);

/* What the queue holds, for metrics: read in any transaction, no worker
 * involved.  (One queue today; lanes would add a row each.) */
struct outbox_stats {
	size_t pending;    /* actions waiting */
	uint64_t head_seq; /* the sequence number of the oldest, 0 when empty */
};

/** @return TH_OK (filled @p out) or TH_ESTORE. */
int outbox_stats_read(store_txn *t, struct outbox_stats *out);

/**
 * The delay before attempt number @p attempt (0-based) after a retryable
 * failure: 500 ms doubling, capped at @p max_ms; a server's retry_after_ms,
 * when given, wins (still capped).
 */
uint64_t outbox_backoff_ms(unsigned attempt, uint64_t retry_after_ms, uint64_t max_ms);

#endif
