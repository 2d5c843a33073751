/*
 * matrix.h - the bridge's view of Matrix: everything the bridge asks of the
 * homeserver, as one interface (a table of function pointers plus a
 * context, like h2o's handlers), so the bridge never builds a Matrix
 * request or an outbox action by hand and its tests can use a small fake.
 *
 * The daemon's implementation (appservice/matrix_outbox.h, wired in by the
 * composition root) queues each call as a durable outbox action; nothing
 * reaches the homeserver before the caller's write transaction commits, and
 * nothing is lost after it did (docs/reliability.md).  So every method
 * takes @p t, the caller's write transaction: the action is part of that
 * commit (with the state and the audit records the same change writes), and
 * disappears with it if the caller aborts.  The bridge never looks inside
 * @p t: it is the store's transaction handle, declared here opaque (the
 * bridge does not include the store's header for it).
 *
 * Common rules for every method:
 *  - @return TH_OK, or the store's error (TH_EFULL, TH_ESTORE; TH_EINVAL
 *    for a missing argument): the caller aborts @p t.
 *  - Every string is borrowed, valid only for the call (the implementation
 *    copies what it keeps).  Room and user ids are Matrix ids.
 *  - Order.  Actions run in lanes (appservice/outbox.h): in order within a
 *    lane, lanes independent of each other.  A method on a room runs in the
 *    room's lane, a method on a user alone in the user's lane, unless its
 *    contract names another.  "After lane L" means it also waits until every
 *    action queued earlier in lane L is gone (done, dropped or set aside).
 *  - Each runs at least once (retried after a crash or a timeout); the
 *    effect is once: joins, leaves, state, redactions, profile changes and
 *    deactivation are idempotent on the homeserver (an invite of someone
 *    already joined is refused and dropped, which leaves the same state), a
 *    message is sent under a transaction id fixed when it was queued, so a
 *    retry is deduplicated by the server, and a room is made once
 *    (conv_room_create).  An upload (send_media, qr_image) may be repeated;
 *    the message showing it is sent once.
 *  - An action the homeserver refuses for good is logged and dropped, so
 *    the caller must not assume it happened (what must not be lost is
 *    judged again from the events that come back).
 */
#ifndef THRESHOLD_MATRIX_H
#define THRESHOLD_MATRIX_H

#include <stddef.h>
#include <stdint.h>

/* The key in a guest's m.text content (mx_ops.text) that carries the id
 * its own page gave the message. */
#define MX_LOCAL_ID_KEY "org.threshold.local_id"

/* The caller's write transaction (opaque to the bridge). */
struct store_txn;

/** A picture or file a guest sends (mx_ops.send_media); all borrowed. */
struct mx_media {
	const char *room_id;  /* where */
	const char *user_id;  /* as whom (the guest) */
	const char *blob;     /* the key of the bytes, already put in the same @p t */
	const char *name;     /* the file name to show, already cleaned (media.h) */
	const char *mimetype; /* e.g. "image/jpeg" */
	const char *msgtype;  /* "m.image" or "m.file" */
	const char *local_id; /* the guest's own id for it (the page shows it once) */
	uint64_t size;        /* bytes */
};

struct mx_ops {
	/**
	 * Send an m.notice saying @p body into @p room_id as @p user_id, as a
	 * reply to event @p reply_to when that is not NULL.  Room's lane.
	 */
	int (*notice)(void *ctx, struct store_txn *t, const char *room_id, const char *user_id,
	              const char *body, const char *reply_to);

	/**
	 * notice(), sent only once every action queued before it in the lanes
	 * of @p after (@p nafter room ids, borrowed) is done: a staff room is
	 * told of conversation rooms only when their set-up (the guest handing
	 * the room to the bot, the bot's join) has run, so no colleague joins
	 * a room still being set up (their join would race the set-up's power
	 * change, and the homeserver's state resolution can drop it).
	 * Room's lane.
	 */
	int (*notice_after)(void *ctx, struct store_txn *t, const char *room_id, const char *user_id,
	                    const char *body, const char *const *after, size_t nafter);

	/**
	 * Send an m.text saying @p body into @p room_id as @p user_id (a guest
	 * writing from its channel), carrying the guest's @p local_id in the
	 * content (MX_LOCAL_ID_KEY) so its own page can tell it.
	 * Room's lane.
	 */
	int (*text)(void *ctx, struct store_txn *t, const char *room_id, const char *user_id,
	            const char *body, const char *local_id);

	/**
	 * Upload the bytes kept under @p m->blob as @p m->user_id, then send the
	 * m.image / m.file into @p m->room_id.  The bytes are deleted once sent,
	 * or when the action is dropped.  Room's lane.
	 */
	int (*send_media)(void *ctx, struct store_txn *t, const struct mx_media *m);

	/**
	 * Make a QR code of @p text (an invitation link), upload it as
	 * @p user_id and send it as an m.image into @p room_id, answering
	 * @p reply_to (may be NULL).  @p text is kept in the store only until
	 * the image is sent.  Room's lane.
	 */
	int (*qr_image)(void *ctx, struct store_txn *t, const char *room_id, const char *user_id,
	                const char *text, const char *reply_to);

	/** Redact @p event_id in @p room_id as @p user_id, giving @p reason (may be NULL).  Room's lane. */
	int (*redact)(void *ctx, struct store_txn *t, const char *room_id, const char *user_id,
	              const char *event_id, const char *reason);

	/**
	 * @p user_id joins @p room_id (it must be invited, or allowed by the join
	 * rule).  Room's lane, after lane @p after when that is not NULL.
	 */
	int (*join)(void *ctx, struct store_txn *t, const char *room_id, const char *user_id,
	            const char *after);

	/**
	 * @p user_id leaves @p room_id (also: rejects an invite to it).  Room's
	 * lane; it may wait on another server when the room is remote.
	 */
	int (*leave)(void *ctx, struct store_txn *t, const char *room_id, const char *user_id);

	/** @p user_id invites @p target into @p room_id.  Room's lane. */
	int (*invite)(void *ctx, struct store_txn *t, const char *room_id, const char *user_id,
	              const char *target);

	/**
	 * Set @p user_id's display name in @p room_id only (its m.room.member
	 * event, membership "join", sent as @p user_id).  Room's lane.
	 */
	int (*room_name)(void *ctx, struct store_txn *t, const char *room_id, const char *user_id,
	                 const char *displayname);

	/**
	 * Set @p user_id's global display name.  User's lane, after each of the
	 * @p nafter lanes in @p after (e.g. the rooms whose events must not show
	 * the new name yet).
	 */
	int (*displayname)(void *ctx, struct store_txn *t, const char *user_id, const char *displayname,
	                   const char *const *after, size_t nafter);

	/**
	 * Deactivate @p user_id's account, marked erased (a guest who asked for
	 * their data to be deleted).  User's lane, after each lane in @p after.
	 */
	int (*deactivate)(void *ctx, struct store_txn *t, const char *user_id, const char *const *after,
	                  size_t nafter);

	/**
	 * Make guest @p guest's conversation room, with the guest as its
	 * creator (nobody invites a guest: the homeserver refuses it): the
	 * conversation template (join rule restricted to @p staff_room, shared
	 * history, no guest access, federation per config), named
	 * "@p pseudonym · @p service_name", the bot invited at 100, the guest at
	 * 100 until conv_room_handover.  Made once even if retried.  In the
	 * guest's lane (after its register and invite block).  When the room
	 * exists, the implementation records it as managed (kind "portal") and
	 * calls the bridge back (conv_room_created) in the commit that removes
	 * the action, unless the room's create event reached the bridge first
	 * (conv_room_seen_created).
	 */
	int (*conv_room_create)(void *ctx, struct store_txn *t, const char *guest, const char *pseudonym,
	                        const char *service_name, const char *staff_room);

	/**
	 * In @p guest's new conversation room @p room_id, the guest lowers its
	 * own power to 0 (the bot, which it invited at 100, holds the room from
	 * then on).  Room's lane, after the guest's lane, where the createRoom
	 * may still be running.
	 */
	int (*conv_room_handover)(void *ctx, struct store_txn *t, const char *room_id, const char *guest);

	/**
	 * Bring guest @p guest, whose invites the homeserver blocks, into group
	 * room @p room_id: allow invites to the guest, invite it as @p user_id
	 * (the bot), join as the guest, block again, as one action whose steps
	 * are each idempotent (a failure after the first still blocks again).
	 * Room's lane, after the guest's lane (its register and block).
	 */
	int (*guest_enter)(void *ctx, struct store_txn *t, const char *room_id, const char *user_id,
	                   const char *guest);

	/**
	 * Send call signal @p type (one of m.call.invite, candidates, answer,
	 * select_answer, reject, negotiate, hangup; spec: VoIP module) with
	 * @p content, a JSON object as text, into @p room_id as @p user_id
	 * (the guest).  The caller has filtered its addresses (bridge/sdp.h).
	 * Room's lane.  @return also TH_EINVAL for content that is not a JSON
	 * object.
	 */
	int (*call_event)(void *ctx, struct store_txn *t, const char *room_id, const char *user_id,
	                  const char *type, const char *content);
};

/** The bridge's handle on Matrix: borrowed by the bridge, outliving every call. */
struct matrix {
	const struct mx_ops *ops;
	void *ctx; /* the implementation's; passed to every method */
};

#endif
