/*
 * conv.h - conversations: a guest, a service and the room where they talk.
 *
 * Redeeming an invitation (after consent) creates a guest (matrix.h), a
 * session, and a portal room that the guest creates itself (no one can
 * invite a guest: the homeserver refuses it) and Threshold's bot administers:
 * joinable by members of the service's staff
 * room (join rule "restricted"), not federated unless rooms.federate, with
 * history shared with staff who join later so they can read what the guest
 * wrote while waiting.  The service's staff room is told someone is
 * waiting; staff join from Element.
 *
 * STORE_CONVS maps the guest's user id to
 *
 *   {"service":S, "room":R|null, "state":"waiting"|"open"|"closed",
 *    "created_ms":T, "expires_ms":T, "lang":L,
 *    "sessions":[hex hash...], "resume":hex|null, "local_ids":[...]}
 *
 * STORE_SESSIONS maps sec_hash("session", token) to {"guest":G,
 * "expires_ms":T} and sec_hash("resume", code) to {"guest":G}.
 *
 * Every change is one LMDB write transaction holding the state, the audit
 * record and the homeserver actions, like the hot path.  Threshold acts on
 * the homeserver for the guest only through the Matrix interface
 * (matrix.h), whose actions are part of that commit, after policy agreed.
 */
#ifndef THRESHOLD_CONV_H
#define THRESHOLD_CONV_H

#include <stdint.h>

#include <jansson.h>

#include "channel.h"
#include "env.h"
#include "guest_record.h"
#include "matrix.h"
#include "policy.h"
#include "secret.h"
#include "store.h"

struct config;
struct config_service;
struct matrix;
struct mxev;

#define CONV_MAX_LOCAL_ID 64

/* A conversation's state, as the gateway shows it. */
#define CONV_WAITING "waiting"
#define CONV_OPEN    "open"
#define CONV_CLOSED  "closed"

/** What redeeming or resuming hands the guest (shown once). */
struct conv_started {
	char session[SEC_TOKEN_LEN + 1];
	char resume[SEC_RESUME_LEN +
	            1]; /* the code to continue elsewhere; "" when gateway.resume_codes is false */
	char pseudonym[GUESTS_PSEUDONYM_LEN];
	uint64_t expires_ms;
};

/** An authenticated session. */
struct conv_session {
	char guest[GUESTS_MAX_USER_ID + 1];
	char pseudonym[GUESTS_PSEUDONYM_LEN];
	char service[65];
	char room[256]; /* "" while the room is being made */
	char state[16];
	uint64_t expires_ms;
	int erase_only; /* the guest ended the conversation or staff removed them: only erasure is left */
};

/**
 * Start a conversation: use one use of the invitation @p invite (or open
 * @p svc_name's public entry when @p invite is NULL; the caller has checked
 * it is allowed and rate-limited it), create the guest, record consent to
 * notice version @p version in @p lang, queue the portal room, and make a
 * session.
 * @return TH_OK; TH_ENOTFOUND (invitation unknown, used or expired; or no
 *         such service); TH_EIO (no randomness); TH_EFULL / TH_ESTORE.
 */
int conv_redeem(const struct txn_env *env, const char *invite, const char *svc_name, const char *version,
                const char *lang, struct conv_started *out);

/**
 * A new session for the guest whose resume code is @p code.  The code is
 * used up: @p out->resume is its replacement (when gateway.resume_codes),
 * and the guest's feed gets a "continued" entry, so every device's page
 * says the conversation was continued elsewhere.  No session ends.
 * @return TH_OK, TH_ENOTFOUND (wrong or used code, or the conversation is
 *         gone), TH_ETOOLARGE (MAX_SESSIONS live sessions already), or a
 *         store error.
 */
int conv_resume(const struct txn_env *env, const char *code, struct conv_started *out);

/**
 * Headroom: may a guest's action write to the store now?  Past
 * store.guest_share_percent of the map in use (store_usage_live), no: the
 * rest is kept for homeserver transactions, audit records and the outbox.
 * conv_redeem, conv_resume, conv_send and conv_send_media ask it first.
 * @return TH_OK, or TH_EFULL (refuse with 503 and a retry).
 */
int conv_guest_headroom(const struct txn_env *env);

/**
 * Look up the session @p token.
 * @return TH_OK, TH_ENOTFOUND (unknown, expired, ended), or TH_ESTORE.
 */
int conv_auth(store *st, const char *token, uint64_t now_ms, struct conv_session *out);

/** Outcome of conv_send(). */
enum conv_send_result {
	CONV_SENT = 0,    /* queued (or already queued under this local_id) */
	CONV_NOT_READY,   /* the room is still being made */
	CONV_CLOSED_NOW,  /* the conversation is closed */
	CONV_REFUSED,     /* policy refused (recorded) */
	CONV_SENT_BEFORE, /* internal: this local_id was sent already (reported as CONV_SENT) */
	CONV_OVER_BUDGET, /* the guest's bytes for this hour are spent (gateway.guest_bytes_per_hour) */
	CONV_OVER_TOTAL,  /* the conversation's bytes in all are spent (gateway.conversation_bytes_total):
	                   * no waiting helps; nothing was kept */
	CONV_BUSY,        /* a global cap: outbox length or files held (outbox.max_pending_guest,
	                   * gateway.max_blob_bytes_held); nothing was kept */
};

/**
 * Send @p body as the guest into its conversation, after asking policy
 * (POL_EV_GATEWAY_SEND).  A @p local_id already sent is not sent again.
 * Guests' writes are refused with TH_EFULL past store.guest_share_percent
 * of the map (headroom), and with CONV_OVER_BUDGET / CONV_BUSY past the
 * byte budgets; a refusal keeps nothing.
 * @param retry_ms  NULL, or set with CONV_OVER_BUDGET / CONV_BUSY: how long to wait
 * @return TH_OK with @p result, TH_EFULL (no headroom), or a store error.
 */
int conv_send(const struct txn_env *env, const char *guest, const char *local_id, const char *body,
              enum conv_send_result *result, uint64_t *retry_ms);

/**
 * Send a picture or file as the guest, like conv_send(): policy first, then
 * the bytes go into STORE_BLOBS and a "send_media" outbox action uploads
 * them as the guest and sends the m.image / m.file (docs/gateway-api.md),
 * named media_neutral_name(kind, n) for the conversation's n-th file.
 * @param kind   read from the bytes (media_sniff)
 * @param data   borrowed; already made clean (media_clean)
 * @return TH_OK with @p result, or a store error (TH_EFULL for no room).
 */
struct media_kind;
int conv_send_media(const struct txn_env *env, const char *guest, const char *local_id,
                    const struct media_kind *kind, const unsigned char *data, size_t len,
                    enum conv_send_result *result, uint64_t *retry_ms);

/**
 * The guest ends the conversation: leaves the room, staff are told, the
 * conversation is closed and every session ended.
 * @return TH_OK, TH_ENOTFOUND, or a store error.
 */
int conv_leave(const struct txn_env *env, const char *guest);

#define CONV_RECEIPT_LEN 14 /* "ABCD-EFGH-JKLM": an erasure's receipt, 60 bits */

/**
 * The guest asks for help now (the page's one-tap button): after policy
 * (POL_EV_GATEWAY_HELP), a report_received audit record, a notice to the
 * conversation's staff in its room (when it has one) and an alert in the
 * safeguarding room naming the service's duty leads, all in one commit.
 * @param when_ms  out: when it was recorded
 * @return TH_OK, TH_ENOTFOUND (no conversation), or a store/audit error.
 */
int conv_help(const struct txn_env *env, const char *guest, uint64_t *when_ms);

/**
 * Erase the guest (docs/gateway-api.md, "delete my data"), in any state of
 * the conversation (open, closed by staff, ended by the guest): a neutral
 * notice to staff, the guest leaves if still in the room, the profile is
 * cleared, and the erasure job is queued (matrix.h mx_ops.erase: the bot
 * redacts every message and file they sent, then their media, account and
 * conversation room go on the homeserver); here and now the sessions,
 * conversation and feed are deleted, the pseudonym removed and the sealing
 * key destroyed (audit_erase_subject, then audit_txn_committed() after the
 * commit).  The job finishes later: conv_erasure_state() says when.
 * @param receipt  out on TH_OK: the guest's receipt, CONV_RECEIPT_LEN
 *                 characters, the only handle on the job's state
 * @return TH_OK, TH_ENOTFOUND (no conversation), TH_EEXIST (held: something
 *         keeps the guest's data for now, e.g. an open case), TH_EIO (no
 *         randomness), or a store/audit error.
 */
int conv_erase(const struct txn_env *env, const char *guest, char receipt[CONV_RECEIPT_LEN + 1]);

/**
 * Where the erasure whose receipt is @p receipt stands.
 * @return TH_OK with @p out (never MX_ERASE_NONE), TH_ENOTFOUND (no such
 *         receipt), or TH_ESTORE.
 */
int conv_erasure_state(const struct txn_env *env, const char *receipt, enum mx_erase_state *out);

/**
 * Retention: end every conversation past its services.<name>.
 * conversation_expiry_days.  The guest leaves the room, the feed, the
 * sessions and the conversation record are deleted, and the audit log says
 * the conversation was closed (actor "threshold").  The room's history stays
 * on the homeserver, under its own retention policy (docs/services.md).
 * @param expired  out: conversations ended
 * @return TH_OK or a store/audit error (what was done so far stays done).
 */
int conv_expire(const struct txn_env *env, uint64_t now_ms, size_t *expired);

/**
 * Remove one conversation as conv_expire() does (close it, the guest leaves,
 * feed, sessions and record deleted), in the caller's write transaction @p t:
 * the retention job (appservice/retention.h) decides which, holds included.
 * A guest with no conversation has only their feed (if any) deleted.
 * @return TH_OK or a store/audit error (abort @p t).
 */
int conv_remove(const struct txn_env *env, store_txn *t, const char *guest);

/**
 * A guest joined a group room (staff's `group add`): their feed gets the
 * service's words, in their language, on how to write to the group ("# "
 * and words, policy/route.h) and that anything else stays with staff.
 * Nothing for a guest whose own conversation is that room, or whose
 * conversation ended.  In @p t.
 * @return TH_OK or TH_ESTORE.
 */
int conv_group_joined(store_txn *t, const struct config *cfg, const char *guest, const char *room_id);

/**
 * Called back by the Matrix implementation (matrix.h conv_room_create) in
 * the commit that removes the create_room action of @p guest's room (made
 * by the guest itself): record the room, queue the guest handing it to the
 * bot and the bot's join, and tell the service's staff room (at once when it
 * heard nothing from this service for a minute, else in the next grouped
 * notice).  Does nothing when conv_room_seen_created did it first.
 * @param mx  borrowed, for the actions queued in @p t
 */
int conv_room_created(const struct config *cfg, const struct matrix *mx, store_txn *t, const char *guest,
                      const char *room_id);

/**
 * The transaction path's hook for an m.room.create event that carries the
 * mark of a room Threshold asked for (matrix.h conv_room_create; the caller
 * checks the mark): when a guest sent it (only Threshold acts as a guest),
 * the room is the guest's conversation room and managed from this event
 * on, before the outbox's commit may have run: @p room (its state, updated
 * in place) gets kind "portal" and "setup" (the guest, until it lowers
 * itself to 0: events.c does not judge its settings until then), and
 * conv_room_created's work is done here if not yet.  Anything else is left
 * alone.
 * @return TH_OK or a store error.
 */
int conv_room_seen_created(const struct txn_env *env, store_txn *t, const struct mxev *ev, json_t *room);

/**
 * The hot path's hook for events in a managed room (events.c).  For each
 * message, reaction and redaction, policy decides what each guest's feed
 * shows (policy/visibility.h): a new entry, an edited one, one taken down,
 * or nothing; the feed remembers what it shows and hides, so relations are
 * judged.  A late message of an erased guest is redacted by the bot and
 * recorded.  Staff joining and leaving become notices; staff display names
 * are remembered in @p room ("staff"), and what the redact check needs of
 * its power levels ("power").
 * @param sender_role  policy's role for the sender
 * @param fed          incremented per feed entry appended or changed, or
 *                     action queued
 * @return TH_OK or a store error (aborts the transaction).
 */
int conv_on_event(const struct txn_env *env, store_txn *t, const struct mxev *ev, enum pol_role sender_role,
                  enum pol_role target_role, json_t *room, unsigned *fed);

/**
 * Carry out a staff conversation command (POL_ACT_CONVERSATION): invite,
 * close, handover, note.  Policy has checked the sender is staff and the
 * bot is in the room; this checks where (a service's staff room for
 * invite, a portal room for the others) and answers with a notice.
 */
int conv_command(const struct txn_env *env, store_txn *t, const struct mxev *ev, enum pol_command cmd,
                 json_t *room, unsigned *queued);

/**
 * Post the grouped "waiting" notices that are due (one per service per
 * minute at most, naming up to 10 people each; STORE_META
 * "waiting_notice/<service>").  Called about once a second.
 * @param posted  out: notices queued (wake the outbox when > 0)
 * @return TH_OK or a store error.
 */
int conv_waiting_flush(const struct txn_env *env, uint64_t now_ms, size_t *posted);

/** The words after "!threshold" naming a conversation command, or POL_CMD_NONE. */
enum pol_command conv_parse(const char *after_prefix);

/**
 * Whose service @p guest is, and which room is theirs (their conversation
 * room, or the group an invitation brought them into): copied into
 * @p service and @p room (each "" when not known yet; truncated to the
 * sizes given).
 * @return TH_OK, or TH_ENOTFOUND for a guest with no conversation (made on
 *         the command line, or whose conversation expired).
 */
int conv_of_guest(store_txn *t, const char *guest, char *service, size_t service_len, char *room,
                  size_t room_len);

/* ---- outside channels (channel.h) ------------------------------------------------
 *
 * A guest who came by SMS has, in the conversation record, "channel":"sms",
 * "by":"by SMS" (what staff are told), "address": the phone number sealed
 * under the guest's key (audit_seal: erasure destroys the key), and
 * "address_key": the hex of its keyed hash.  STORE_META "chan/a/" + keyed
 * hash holds where that number stands with the service ({"stage":
 * "language"|"notice"|"open", "lang", "guest", "ts"}: no number), and
 * "chan/o/" + guest the last feed entry carried out to it.
 */

#define CONV_CHAN_KEY_LEN 32

/* STORE_META CONV_CHAN_TIMES + guest: a channel driver's own record about
 * the guest (WhatsApp's window: two times; SMS: its last text's delivery
 * state, {"dlr": id, "state"}: no content, no address), deleted with the
 * conversation's channel records on erasure and expiry, and with it
 * CONV_CHAN_DLR + the id it names (that id -> the guest, for the report). */
#define CONV_CHAN_TIMES "chan/w/"
#define CONV_CHAN_DLR   "chan/d/"

/** How a guest came by an outside channel; all borrowed. */
struct conv_channel {
	const char *name;         /* "sms" */
	const char *by;           /* said to staff: "by SMS" */
	const char *address;      /* the outside address: sealed, never kept in clear */
	const unsigned char *key; /* CONV_CHAN_KEY_LEN bytes: its keyed hash (sms_address_hash) */
};

/** Where an address stands (policy/chanrules.h's stage). */
struct conv_chan_state {
	int stage;                          /* enum pol_chan_stage */
	char lang[16];                      /* chosen language, "" if none yet */
	char guest[GUESTS_MAX_USER_ID + 1]; /* OPEN and CLOSED: whose conversation */
};

/**
 * Where the address hashed to @p key stands (a menu or notice unanswered
 * for a day counts as nothing).  @return TH_OK or TH_ESTORE.
 */
int conv_chan_state(store *st, const unsigned char key[CONV_CHAN_KEY_LEN], uint64_t now_ms,
                    struct conv_chan_state *out);

/**
 * Before agreeing: remember that the address was asked for a language
 * (POL_CHAN_LANG) or shown the notice in @p lang (POL_CHAN_NOTICE), or
 * forget it (POL_CHAN_NONE: a conversation's record is left alone).
 * @return TH_OK, TH_EFULL (no headroom), or a store error.
 */
int conv_chan_pending(const struct txn_env *env, const unsigned char key[CONV_CHAN_KEY_LEN], int stage,
                      const char *lang);

/**
 * The person agreed: as conv_redeem() for service @p svc_name (consent to
 * its notice @p version in @p lang recorded, the room queued), for a guest
 * who came by @p ch.  The web session it makes is never shown.
 * @param guest  out: the new guest's user id
 * @return as conv_redeem(); TH_EINVAL for a @p ch missing a part.
 */
int conv_redeem_channel(const struct txn_env *env, const char *svc_name, const char *version,
                        const char *lang, const struct conv_channel *ch, char guest[GUESTS_MAX_USER_ID + 1]);

/**
 * What is due to go out by channel @p channel: for at most @p max guests
 * with feed entries not yet carried, a new array of {"guest", "upto" (pass
 * to conv_chan_sent once sent), "texts":[...], "files":[...] (one per
 * text: null, or {"mxc", "kind" ("picture"/"file"), "mimetype"?} for a
 * text that stands for a file staff sent), "address" (opened, only
 * when there are texts; the caller wipes it), "lang"}.  Policy judges each
 * (staff never write first; nothing after the end): "texts" may be empty,
 * and then the entries are passed over.
 * @return TH_OK or a store error.
 */
int conv_chan_due(const struct txn_env *env, const char *channel, size_t max, json_t **out);

/** The entries of @p guest's feed up to @p upto were carried out.  @return TH_OK or a store error. */
int conv_chan_sent(const struct txn_env *env, const char *guest, uint64_t upto);

/* ---- for bridge/calls.c ---- */

/**
 * May @p guest's page send a call signal now (policy: POL_EV_GATEWAY_CALL)?
 * A refusal policy records is recorded in @p t (at most once a minute).
 * @param conv    out: on TH_OK and an allowed call, the guest's conversation
 *                record (a new reference, for conv_call_put); else NULL
 * @param reason  out: policy's reason (POL_R_GUEST_CALL_ALLOWED when allowed)
 * @return TH_OK or a store error (abort @p t).
 */
int conv_call_check(const struct txn_env *env, store_txn *t, const char *guest, json_t **conv,
                    enum pol_reason *reason);

/** @p guest's conversation record (a new reference), or NULL: none. */
json_t *conv_call_get(store_txn *t, const char *guest);

/** Write @p guest's conversation record @p c back (its "call" member changed). */
int conv_call_put(store_txn *t, const char *guest, const json_t *c);

enum conv_call_rec { CONV_CALL_OFFERED, CONV_CALL_ANSWERED, CONV_CALL_DECLINED, CONV_CALL_ENDED };

/**
 * Write audit record call_offered/answered/declined/ended about @p guest's
 * call in @p room_id, by @p actor, with @p reason (may be NULL) and
 * @p details (integers and short words only: never a signal's content).
 * @return TH_OK or the audit log's error.
 */
int conv_call_record(const struct txn_env *env, store_txn *t, enum conv_call_rec what, const char *actor,
                     const char *guest, const char *room_id, const char *reason, const json_t *details);

#endif
