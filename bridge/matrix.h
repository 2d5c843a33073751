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
 * (but the media fetcher's three, at the end)
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
struct audit;
struct guest;      /* guest_record.h */
struct mx_fetcher; /* the implementation's (mx_ops.fetcher_new) */

/** What a download from the homeserver's media repository answered (mx_ops.fetch). */
struct mx_download {
	long status;             /* HTTP status, 0 if none was received */
	uint64_t retry_after_ms; /* from a 429's body or Retry-After header, else 0 */
	unsigned char *buf;      /* a 2xx's bytes (new: the caller frees), NULL when empty or not a 2xx */
	size_t len;              /* bytes in @p buf */
};

/** A picture or file a guest sends (mx_ops.send_media); all borrowed. */
struct mx_media {
	const char *room_id; /* where */
	const char *user_id; /* as whom (the guest) */
	const char *blob;    /* the key of the bytes: put in the same @p t by the caller, or (data) here */
	const unsigned char *data; /* NULL, or the bytes (size of them): kept under blob by the
	                              implementation, sealed under the guest's key when it can */
	const char *name;          /* the file name to show, already cleaned (media.h) */
	const char *mimetype;      /* e.g. "image/jpeg" */
	const char *msgtype;       /* "m.image" or "m.file" */
	const char *local_id;      /* the guest's own id for it (the page shows it once) */
	uint64_t size;             /* bytes */
};

/** A guest's erasure (mx_ops.erase); all borrowed. */
struct mx_erasure {
	const char *guest;         /* whose */
	const char *const *events; /* 2 * nevents strings: room id, event id of each event they sent */
	size_t nevents;
	const char *const *purge; /* rooms that were the guest's alone (their conversation room) */
	size_t npurge;
	const char *const *after; /* the lanes the account steps wait for (the guest's rooms) */
	size_t nafter;
};

/** Where an erasure stands (mx_ops.erase_state). */
enum mx_erase_state {
	MX_ERASE_NONE = 0,   /* no erasure known */
	MX_ERASE_RUNNING,    /* steps still queued, running or being retried */
	MX_ERASE_DONE,       /* every step done */
	MX_ERASE_INCOMPLETE, /* finished, but a step failed or could not be done (recorded and alerted) */
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
	 * or when the action is dropped.  With @p m->data the implementation
	 * keeps them itself, outside the store (a file on disk before @p t
	 * commits: call media_unkeep if @p t is not committed), sealed under
	 * the guest's key (so a freed page or a backup of a file still waiting
	 * holds nothing readable once the guest is erased).  Room's lane.
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
	 * Make a new guest (guests_create in appservice/guests.h): a fresh
	 * random id and a unique pseudonym, its record (guest_record.h) and an
	 * AUDIT_GUEST_CREATED record by @p actor through @p au, all in @p t;
	 * its Matrix account (register, the block of invites to it, its
	 * display name) queued in the guest's lane.  Not retried by the
	 * caller: each call is a new guest.
	 * @param au   the audit log @p t belongs to (borrowed)
	 * @param out  filled on success only
	 * @return as the common rules, or TH_EIO (no randomness), TH_EINVAL,
	 *         TH_ETOOLARGE, or an audit error.
	 */
	int (*guest_create)(void *ctx, struct store_txn *t, struct audit *au, const char *actor,
	                    struct guest *out);

	/*
	 * Reading the homeserver's media repository.  Unlike every method above
	 * these queue nothing and take no transaction: they are made at once,
	 * on the calling thread, and block it (the gateway's media fetcher
	 * thread).  A fetcher holds one connection; one thread uses it at a
	 * time.
	 */

	/** A new fetcher into @p *out.  @return TH_OK or TH_ENET. */
	int (*fetcher_new)(void *ctx, struct mx_fetcher **out);

	/**
	 * Download mxc://@p server/@p media_id (authenticated media, with the
	 * application service's token), at most @p max bytes (TH_ETOOLARGE
	 * past it).  @p cancel, when not NULL, is asked about once a second and
	 * as data comes (with @p cancel_ctx): non-zero stops it (TH_ECANCELED).
	 * @param out  filled on TH_OK (any HTTP status); the caller frees out->buf
	 * @return TH_OK, TH_ETOOLARGE, TH_ECANCELED, TH_ETIMEOUT, TH_ENET, or
	 *         TH_EINVAL (an empty part, @p max 0).
	 */
	int (*fetch)(struct mx_fetcher *f, const char *server, const char *media_id, size_t max,
	             int (*cancel)(void *cancel_ctx), void *cancel_ctx, struct mx_download *out);

	/** Free @p f (NULL: nothing). */
	void (*fetcher_free)(struct mx_fetcher *f);

	/*
	 * Erase guest @p e->guest on the homeserver, as a durable job whose
	 * steps are each done by whoever holds the power to (appservice/
	 * erasure.h): every event in @p e->events redacted by the bot (room
	 * admin; the guest may have left), then -- in the guest's lane, after
	 * the lanes in @p e->after -- their uploads deleted from the media
	 * store, their account deactivated with erase, each room in
	 * @p e->purge deleted and purged, and the job marked finished.  A step
	 * refused for good is recorded and alerted, never silently dropped;
	 * erase_state() says when it is all done.  Restarts the job if one
	 * was finished.
	 */
	int (*erase)(void *ctx, struct store_txn *t, const struct mx_erasure *e);

	/** Where @p guest's erasure stands (MX_ERASE_NONE if none), as @p t sees it. */
	int (*erase_state)(void *ctx, struct store_txn *t, const char *guest, enum mx_erase_state *out);

	/*
	 * Send call signal @p type (one of m.call.invite, candidates, answer,
	 * select_answer, reject, negotiate, hangup; spec: VoIP module) with
	 * @p content, a JSON object as text, into @p room_id as @p user_id
	 * (the guest).  The caller has filtered its addresses (bridge/sdp.h).
	 * Room's lane.  @return also TH_EINVAL for content that is not a JSON
	 * object.
	 */
	int (*call_event)(void *ctx, struct store_txn *t, const char *room_id, const char *user_id,
	                  const char *type, const char *content);

	/*
	 * Optional (NULL: nothing to do).  The transaction in which send_media
	 * was given @p blob's bytes was not committed: drop what the
	 * implementation wrote outside the store for it (its spooled file).
	 */
	void (*media_unkeep)(void *ctx, const char *blob);

	/*
	 * Optional (NULL: nothing to do).  After the commit of @p guest's
	 * erasure: remove what the implementation keeps of the guest outside
	 * the store (their files still waiting to be uploaded).
	 */
	void (*erased)(void *ctx, const char *guest);
};

/** The bridge's handle on Matrix: borrowed by the bridge, outliving every call. */
struct matrix {
	const struct mx_ops *ops;
	void *ctx; /* the implementation's; passed to every method */
};

#endif
