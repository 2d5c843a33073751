/*
 * calls.h - audio (and video) calls between a guest's page and staff in
 * Element, over Matrix's own call signalling (spec: VoIP module, version
 * "1", MSC2746: m.call.invite, candidates, answer, select_answer, reject,
 * negotiate, hangup).  The page does WebRTC; Threshold carries its signals
 * as the guest after policy agrees (POL_EV_GATEWAY_CALL: only in the guest's
 * open conversation room), and hands staff's signals to the page on its
 * feed (policy/visibility.h, POL_VIEW_SIGNAL).  In both directions only the
 * TURN relay's addresses pass (bridge/sdp.h), and only the members each
 * signal needs (an allow-list: nothing else a client adds goes across).
 *
 * The conversation record (conv.h) holds the call under way:
 *   "call": {"id":call_id, "by":"guest"|"staff", "offered_ms":T[, "answered_ms":T]}
 * from which the audit records call_offered, call_answered, call_declined
 * and call_ended (with its duration in seconds) are written; never any of
 * the signals' content, nor the media, which never touches Threshold.
 */
#ifndef THRESHOLD_CALLS_H
#define THRESHOLD_CALLS_H

#include <jansson.h>

#include "env.h"
#include "policy.h"

struct store_txn;

#define CALLS_MAX_LIFETIME_MS 120000 /* an invite rings at most this long */

/** What a signal from the page came to. */
enum calls_result {
	CALLS_SENT = 0,   /* queued to the room, as the guest */
	CALLS_NOT_READY,  /* the conversation's room is still being made */
	CALLS_CLOSED,     /* the conversation is closed (or gone: erased, expired) */
	CALLS_REFUSED,    /* policy said no (a group, not a member) */
	CALLS_BAD_SIGNAL, /* not a call signal Threshold carries, or malformed */
	CALLS_NOTHING,    /* nothing left to send (candidates that were all not relay) */
	CALLS_TOO_SOON,   /* a new invite within CALLS_MIN_GAP_MS of the last: not sent */
};

/* A guest's page rings at most once per this long (each invite is an audit
 * record, and the audit log is never pruned). */
#define CALLS_MIN_GAP_MS 5000

/**
 * The content of call signal @p type as the other side may see it: only
 * the members the signal needs, SDP and candidates filtered (sdp.h).
 * @param out  on TH_OK: a new object
 * @return TH_OK; TH_EINVAL (not a signal Threshold carries, or malformed);
 *         TH_ENOTFOUND (candidates, none of them relay: send nothing).
 */
int calls_content_filter(const char *type, const json_t *content, json_t **out);

/**
 * Send signal @p type with @p content (borrowed) from @p guest's page into
 * its conversation room, as the guest, in one write transaction with the
 * call's state and audit record.
 * @param result  out: always written on TH_OK
 * @return TH_OK or a store error.
 */
int calls_guest_signal(const struct txn_env *env, const char *guest, const char *type, const json_t *content,
                       enum calls_result *result);

/**
 * The guest asks staff for a call: a message from the guest into the room
 * (it notifies staff, as any message does; a notice would not), asking them
 * to ring back with the room's call button.
 * @return TH_OK or a store error; @p result as calls_guest_signal.
 */
int calls_guest_ask(const struct txn_env *env, const char *guest, enum calls_result *result);

/**
 * May @p guest call now (the same policy question, nothing written but a
 * refusal's record)?  For minting TURN credentials.
 * @return TH_OK or a store error; @p result CALLS_SENT when allowed.
 */
int calls_guest_may(const struct txn_env *env, const char *guest, enum calls_result *result);

/**
 * A call signal @p type in @p room_id from @p sender (role @p role), with
 * @p content (borrowed): what @p guest's feed shows of it (a "call" entry
 * when policy says so), and the call's state and audit record.  In the
 * caller's write transaction @p t.
 * @param fed  incremented when the feed grew
 * @return TH_OK or a store error.
 */
int calls_on_event(const struct txn_env *env, struct store_txn *t, const char *guest, const char *type,
                   const char *room_id, const char *sender, enum pol_role role, const json_t *content,
                   unsigned *fed);

#endif
