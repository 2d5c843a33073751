/*
 * outbox.h - durable queue of actions Threshold takes on the homeserver.
 *
 * Actions are written into STORE_OUTBOX inside the same LMDB write
 * transaction as the AS transaction that caused them (outbox_push), so the
 * ack to the homeserver and the intent to act are one commit.  Worker
 * threads then execute them with retries: exponential backoff for network
 * errors, timeouts and 5xx; the server's retry_after_ms for 429.  A
 * permanent refusal (other 4xx) is logged and the action dropped, and so is
 * an answer over CS_MAX_RESPONSE_BYTES (retrying it would wedge its lane).
 *
 * Lanes.  Every action belongs to one lane: its "lane" field when it has
 * one, else its "room_id", else its "user_id" (register: the user it makes).
 * Within a lane actions run one at a time in the order they were pushed, the
 * next only after the commit that removed the one before; lanes do not wait
 * for each other, and up to outbox.concurrency actions are in flight at
 * once, oldest ready first.  Optional fields on any action:
 *   "lane":   L        run in lane L (e.g. a user's lane for a create_room
 *                      that must follow that user's register)
 *   "after":  [L, ...] also wait until every action pushed earlier in each
 *                      lane L is gone (done, dropped or set aside): an order
 *                      that crosses lanes (a guest's deactivate after the
 *                      redactions and leave in their rooms; an invite after
 *                      the invitee's register)
 *   "remote": true     the homeserver may have to wait on another server
 * Actions that may wait on another server -- "remote", a join, leave, invite
 * or kick in a room whose id names another server, an invite of another
 * server's user -- hold at most a quarter of the slots (at least one), so a
 * slow federating server never takes the slot a guest's message needs.
 *
 * Failing for good.  An action that keeps failing with retryable errors for
 * outbox.give_up_after_seconds, counted from its first failure (written into
 * the stored action as "failed_since_ms", so a restart does not start it
 * again), is set aside: moved to STORE_OUTBOX_FAILED with its attempts (since
 * the daemon last started) and last error, logged, listed by `threshold
 * status`, and announced (ids only) in the safeguarding room as the bot.  Its
 * lane then carries on.
 *
 * Removal in batches.  Finished actions are removed, with what their done
 * fns queue or record, in one write transaction per batch, and each such
 * commit is followed by three times its length without one: a draining
 * backlog takes at most about a quarter of the store's writing time, and
 * the homeserver's transactions wait behind one removal commit at most.
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
 *   {"op":"directory_visibility", "room_id":R, "user_id":U, "visibility":"private"|"public"}
 *       R's entry in the homeserver's published room list (no state event shows it).
 * Any action may carry "erasure": G: it is a step of guest G's erasure
 * (erasure.h).  If it is refused for good, or set aside, the commit that
 * drops it records the failure on G's job, appends an erasure_step_failed
 * audit record and alerts the safeguarding room (erasure_step_failed).
 * A "send" may carry "sealed_content": S instead of its content (which is
 * then {}): the content, sealed under the key of its "user_id" (audit_seal);
 * opened just before the request, and dropped if the key is gone (erased).
 * Any action may carry "enforce": {"reason":S, "event_id":E}: it carries out a
 * policy decision (a kick, a revert).  If the homeserver refuses it for good,
 * the commit that drops it appends an enforcement_failed audit record and
 * queues an alert to the safeguarding room (outbox_enforcement_failed), so
 * no record is left claiming an enforcement that did not happen.
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
 *       room: the room_created hook (struct outbox_hooks) runs in the same
 *       commit; the bridge's conversation code does nothing there when the
 *       create event reached Threshold first and it ran then (bridge/conv.h).
 *   {"op":"staff_members", "room_id":R, "user_id":U}
 *       Read who is joined to staff room R (as U, the bot, who must be
 *       joined) and, in the commit that removes the action, make that the
 *       room's recorded membership, but for members whose events were
 *       handled since the read was queued (rooms_staff_refresh).  Queue it
 *       after rooms_staff_read_begin.
 *   {"op":"redact", "room_id":R, "user_id":U, "event_id":E[, "reason":S]}
 *       (a guest's messages, redacted by the bot when they erase their data)
 *   {"op":"send_media", "room_id":R, "user_id":U, "blob":B, "name":N, "mimetype":M,
 *                       "msgtype":T, "local_id":L, "size":S}
 *       Upload the bytes kept in spooled file B (spool.h) as U and, in the
 *       commit that removes the action, queue the m.image/m.file; the file
 *       is removed after that commit, and after the commit that drops the
 *       action or sets it aside.  "spool": {"bytes":N, "fnv":H} is the file's
 *       length and th_fnv1a64 (16 hex), checked on reading; a file that is
 *       gone (its guest erased) or damaged drops the action.  With "sealed":
 *       true the bytes are sealed under U's key (audit_seal_bytes) and opened
 *       for the upload.  An action without "spool" (queued by a Threshold
 *       that kept files in the map) reads B from STORE_BLOBS and deletes it
 *       in the commit that removes the action.
 *   {"op":"deactivate", "user_id":U}   (U's account, erased: a guest who deleted their data)
 *   {"op":"erase_media", "user_id":G, "erasure":G}
 *       Delete every file G uploaded from the homeserver's media store, with
 *       the admin token (hs_admin.h); without one, done as "skipped".
 *   {"op":"purge_room", "room_id":R, "user_id":G, "lane":G, "erasure":G}
 *       Delete and purge R (G's own conversation room) with the admin
 *       token; done once the homeserver says the purge is complete (retried
 *       while it runs); without a token, done as "skipped".
 *   {"op":"redact_reveals", "room_id":R, "user_id":U, "target":G, "lane":G, "erasure":G}
 *       Redact each answer to "!audit reveal" about G that U (the bot)
 *       posted in the safeguarding room R (read back from R's history).
 *   {"op":"erasure_done", "user_id":G, "erasure":G}
 *       No request: the commit that removes it finishes G's erasure job
 *       (erasure_job_finish), after every step before it in G's lane.
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

struct audit;
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
 * What the layer above is told, in the commit that removes an action: set by
 * the composition root (daemon.c), so the outbox, which the bridge's Matrix
 * implementation sits on, never calls into the bridge by name.
 */
struct outbox_hooks {
	/**
	 * The conversation room of guest @p guest exists: @p room_id (a
	 * create_room action with "conversation").  Queue what follows in @p t.
	 * Runs on the outbox's dispatcher thread.
	 * @return TH_OK or a store error (the removal is retried).
	 */
	int (*room_created)(void *ctx, store_txn *t, const char *guest, const char *room_id);
	void *ctx; /* borrowed; must outlive the outbox */
};

/**
 * Start the dispatcher and outbox.concurrency worker threads.  What is
 * already queued runs at once.
 * @param st     borrowed; must outlive the outbox
 * @param cfg    borrowed; must outlive the outbox
 * @param hooks  copied; NULL for none (a conversation room made then is only
 *               recorded as managed, and a warning logged)
 * @return TH_OK, TH_ENET (curl), TH_ESTORE / TH_EFULL (creating the txn id
 *         prefix on first use), or TH_EIO (no randomness, no thread).
 */
int outbox_start(store *st, const struct config *cfg, const struct outbox_hooks *hooks, outbox **out);

/**
 * Give the worker the audit log to record refused enforcement actions in
 * (see "enforce" above).  Call once, right after outbox_start; until then a
 * refusal is logged and alerted but not recorded.
 * @param au  borrowed; must outlive the outbox
 */
void outbox_set_audit(outbox *ob, struct audit *au);

/**
 * The hook of the drop path: record (when an audit log is set) and alert
 * that enforcement action @p a was refused for good, saying @p why ("HTTP 403
 * M_FORBIDDEN"), in write transaction @p t.
 * @return TH_OK or a store error.
 */
int outbox_enforcement_failed(const outbox *ob, store_txn *t, const json_t *a, const char *why);

/** Tell the dispatcher new actions are committed.  Safe from any thread. */
void outbox_wake(outbox *ob);

/**
 * Stop the threads and free.  A backoff wait is cut short; requests in
 * flight finish or time out (client_timeout_ms) and the removal of those
 * finished is committed.  What is still queued stays in the store for the
 * next start.  NULL is a no-op.
 */
void outbox_stop(outbox *ob);

/** Number of actions waiting (for logs and tests); 0 if the store fails. */
size_t outbox_pending(outbox *ob);

/** What the outbox has done since outbox_start (for logs and tests). */
struct outbox_stats {
	uint64_t removed;   /* actions removed from the queue: done, dropped or set aside */
	uint64_t set_aside; /* of which set aside after failing for good */
	uint64_t commits;   /* write transactions that removed them */
};

/** Copy the counts into @p out.  Safe from any thread. */
void outbox_stats_get(outbox *ob, struct outbox_stats *out);

/**
 * The actions set aside after failing for good, oldest first, in read or
 * write transaction @p t: an array of objects {seq, op, lane, room_id?,
 * user_id?, target?, attempts, first_failure_ms, set_aside_ms, last_error}
 * (ids and counts, never content).
 * @param out  new reference on success
 * @return TH_OK or TH_ESTORE.
 */
int outbox_failed_list(store_txn *t, json_t **out);

/* What the queue holds, for metrics: read in any transaction, no worker
 * involved.  (Across all lanes.) */
struct outbox_queue {
	size_t pending;    /* actions waiting */
	size_t set_aside;  /* actions set aside after failing for good (STORE_OUTBOX_FAILED) */
	uint64_t head_seq; /* the sequence number of the oldest, 0 when empty */
};

/** @return TH_OK (filled @p out) or TH_ESTORE. */
int outbox_queue_read(store_txn *t, struct outbox_queue *out);

/**
 * At the daemon's start, before anything is spooled: remove every spooled
 * file (spool.h) that no queued send_media action names (a crash between
 * the file's write and its commit, or between the commit that removed its
 * action and the unlink).
 * @param removed  files removed (may be NULL)
 * @return TH_OK, TH_ESTORE or TH_EIO.
 */
int outbox_spool_sweep(store *st, const struct config *cfg, size_t *removed);

/**
 * After the commit of @p guest's erasure: remove the files of their
 * send_media actions still queued (sealed under the key the erasure
 * destroyed, so already unreadable; the actions find them gone and are
 * dropped).
 * @param removed  files removed (may be NULL)
 * @return TH_OK or TH_ESTORE.
 */
int outbox_spool_remove_guest(store *st, const struct config *cfg, const char *guest, size_t *removed);

/**
 * The delay before attempt number @p attempt (0-based) after a retryable
 * failure: 500 ms doubling, capped at @p max_ms; a server's retry_after_ms,
 * when given, wins (still capped).
 */
uint64_t outbox_backoff_ms(unsigned attempt, uint64_t retry_after_ms, uint64_t max_ms);

#endif
