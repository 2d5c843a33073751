/*
 * feed.h - what a guest's page shows: one ordered list of entries per guest,
 * appended as the homeserver's transactions arrive (no /sync), read by the
 * gateway's long poll with a "since" id.
 *
 * STORE_FEED keys are <guest user id> 0x00 <u64 BE id>.  Id 0 holds the
 * guest's next id (u64 BE); entries are 1, 2, 3...  Entries are appended
 * (in the write transaction that learned of them) and deleted all together
 * (erasure, expiry), so reading from "since" never repeats or skips one.
 * Two changes to an entry in place: when its Matrix event is redacted, a
 * message loses its words and attachment and says "removed":true, and a
 * "removed" entry naming it ("entry") is appended for pages showing it;
 * when it is edited (m.replace), a message takes the new words and says
 * "edited":true, and an "edited" entry naming it, with the new "body", is
 * appended (an earlier "edited" entry of the same message loses its body,
 * so an old version is kept nowhere).
 *
 * Beside the entries, each feed remembers which Matrix events it holds
 * and which it keeps hidden, so an edit, reply, reaction or redaction can
 * be judged against what it relates to (policy/visibility.h):
 * <guest> 0x01 <event id> -> {"entry":N (0: hidden), "room":R, "sender":S},
 * at most FEED_MAX_MARKS per guest, oldest forgotten first (a ring:
 * <guest> 0x02 <u64 BE slot> -> event id, and <guest> 0x02 -> u64 BE
 * count).  They go with the feed (feed_erase).
 *
 * An entry is a JSON object, as the gateway API shows it (docs/gateway-api.md)
 * plus private members the API never shows: "event_id" and "room_id" of
 * the Matrix event, so erasure can redact what the guest wrote, and "mxc",
 * where the picture or file of an attachment is on the homeserver, so the
 * gateway can fetch it when the guest asks (GET /media/{id}).
 *
 *   {"id":N, "kind":"message"|"notice"|"closed"|"removed"|"edited"|"call", "ts":T,
 *    ["entry":N,] ["removed":true,] ["edited":true,]
 *    "from":{"role":"staff"|"guest"|"self"|"service", "name":S},
 *    "body":S [, "local_id":L] [, "event_id":E, "room_id":R]
 *    [, "attachment":{"kind":"picture"|"file", "name":S [, "mimetype":M]
 *                     [, "size":B] [, "caption":S]}, "mxc":U]
 *    [, "call":{"type":"m.call.invite"|..., "content":{...}}]}
 *
 * Never a user id in "from": staff by display name, guests by pseudonym.
 */
#ifndef THRESHOLD_FEED_H
#define THRESHOLD_FEED_H

#include <stdint.h>

#include <jansson.h>

#include "media.h"
#include "store.h"

#define FEED_MAX_READ 100 /* entries one read returns at most */

/**
 * How entries are sealed: each entry (its whole JSON) is stored sealed
 * under its guest's own key, so that once the key is destroyed (the guest's
 * erasure) no copy of what the feed showed -- in an LMDB page freed by the
 * deletion, or in a backup of the store -- can be read.  Entries stored in
 * clear (no sealer, or kept from before) are read as they are.  The
 * daemon sets one at start (the audit log's per-subject keys); a test may
 * run without.
 */
struct feed_sealer {
	/**
	 * Seal @p text for @p guest (made a key if it has none).
	 * @param out  new string on TH_OK (no '{' at its start)
	 * @return TH_OK, TH_ENOTFOUND (the guest's key was destroyed: nothing
	 *         is kept), or another error (the caller aborts).
	 */
	int (*seal)(void *ctx, store_txn *t, const char *guest, const char *text, char **out);
	/** Open what seal() made.  @return TH_OK with a new string, or an error. */
	int (*unseal)(void *ctx, store_txn *t, const char *guest, const char *sealed, char **out);
	void *ctx;
};

/**
 * Set the sealer for every feed of this process (copied), before any
 * thread uses a feed; NULL: entries are kept in clear from now on.
 */
void feed_sealer_set(const struct feed_sealer *s);
#define FEED_MAX_MARKS 2048 /* Matrix events a feed remembers, visible or hidden */

/** One entry to append; every pointer borrowed, NULL where absent. */
struct feed_entry {
	const char *kind;     /* "message", "notice", "closed" or "removed" */
	const char *role;     /* from.role; NULL: no "from" */
	const char *name;     /* from.name */
	const char *body;     /* plain text */
	const char *local_id; /* the page's id for the guest's own message */
	const char *event_id; /* private: the Matrix event */
	const char *room_id;  /* private: its room */
	const char *sender;   /* with event_id and room_id: remembered beside the feed (never
	                         in the entry), so relations to it can be judged */
	uint64_t ts;          /* ms; 0: now */
	uint64_t entry;       /* "removed": the entry taken down; 0: none */
	/* a picture or file someone else sent; its mxc is kept private, and
	 * an empty mxc keeps no attachment (it cannot be fetched) */
	const struct media_attachment *attachment;
	/* a call signal for the page (kind "call"): {"type":"m.call.*", "content":{...}},
	 * its addresses already filtered (bridge/calls.h); copied */
	const json_t *call;
};

/**
 * Append @p e to @p guest's feed in write transaction @p t.
 * @param id_out  optional: the entry's id
 * @return TH_OK, TH_EINVAL (guest too long for a key), TH_EFULL or TH_ESTORE.
 */
int feed_append(store_txn *t, const char *guest, const struct feed_entry *e, uint64_t *id_out);

/**
 * Entries of @p guest after @p since, at most FEED_MAX_READ, as the API
 * shows them (private members removed).
 * @param events  out: a new JSON array (possibly empty)
 * @param next    out: the id to pass as "since" next time (@p since if none)
 * @return TH_OK or TH_ESTORE.
 */
int feed_read(store_txn *t, const char *guest, uint64_t since, json_t **events, uint64_t *next);

/**
 * feed_read(), each entry keeping the room it came from ("room_id", where
 * it has one): for a channel that must say which words came from a group
 * (conv_chan_due).  Never for the gateway API, which shows no room.
 */
int feed_read_rooms(store_txn *t, const char *guest, uint64_t since, json_t **events, uint64_t *next);

/**
 * The attachment of entry @p id in @p guest's own feed, to fetch it.
 * @param out  written on TH_OK: kind, name, mimetype, size and mxc (never
 *             empty); caption NULL
 * @return TH_OK; TH_ENOTFOUND (no entry @p id in this guest's feed, or one
 *         without an attachment); TH_EINVAL (guest too long); TH_ESTORE.
 */
int feed_attachment(store_txn *t, const char *guest, uint64_t id, struct media_attachment *out);

/** @return 1 if @p guest has an entry after @p since (0 on any error). */
int feed_has_after(store_txn *t, const char *guest, uint64_t since);

/**
 * feed_has_after() less the guest's own messages echoed back: 1 if an
 * entry after @p since is news to the guest (staff's words, a notice, a
 * takedown...).  What wakes a waiting poll: the page marks its own message
 * sent when the gateway takes it (durably queued), so its echo alone need
 * not cost the guest a round trip; it comes with the next answer.
 */
int feed_has_news(store_txn *t, const char *guest, uint64_t since);

/**
 * Take down what @p guest's feed shows of Matrix event @p event_id (it was
 * redacted): each message made from it loses its body and attachment and
 * is marked "removed", and a "removed" entry naming it is appended.  One
 * already removed is left alone.
 * @param removed  out: how many entries were taken down (usually 0 or 1)
 * @return TH_OK, TH_EINVAL, or a store error.
 */
int feed_remove_event(store_txn *t, const char *guest, const char *event_id, unsigned *removed);

/** Where a Matrix event stands in a guest's feed. */
enum feed_mark_kind {
	FEED_MARK_UNKNOWN = 0, /* not remembered, or remembered in another room */
	FEED_MARK_VISIBLE,     /* entry @c entry shows it */
	FEED_MARK_HIDDEN,      /* kept from the guest (a note, a command, the bot's words...) */
};

struct feed_mark {
	enum feed_mark_kind kind;
	uint64_t entry;   /* FEED_MARK_VISIBLE: the entry */
	char sender[256]; /* who sent the event ("" if not known) */
};

/**
 * What @p guest's feed remembers of @p event_id in @p room_id.
 * @param out  always written (FEED_MARK_UNKNOWN on any error)
 * @return TH_OK, TH_EINVAL (a too long id) or TH_ESTORE.
 */
int feed_mark_get(store_txn *t, const char *guest, const char *room_id, const char *event_id,
                  struct feed_mark *out);

/**
 * Remember @p event_id of @p room_id, sent by @p sender, as shown by entry
 * @p entry of @p guest's feed, or hidden (@p entry 0).  The oldest of more
 * than FEED_MAX_MARKS is forgotten.
 * @return TH_OK, TH_EINVAL (a too long id), or a store error.
 */
int feed_mark_put(store_txn *t, const char *guest, const char *room_id, const char *event_id,
                  const char *sender, uint64_t entry);

/**
 * An edit: message entry @p entry of @p guest's feed (made from
 * @p event_id) takes @p body and says "edited":true; an "edited" entry
 * naming it is appended with the same body.  An entry removed, or not a
 * message, is left alone.
 * @param replaced  out: 1 if the entry was changed, else 0
 * @return TH_OK, TH_EINVAL (a body that is not UTF-8), or a store error.
 */
int feed_replace(store_txn *t, const char *guest, uint64_t entry, const char *event_id, const char *room_id,
                 const char *body, unsigned *replaced);

/**
 * Delete every entry of @p guest (its counter, and what it remembers of
 * Matrix events) in write transaction @p t.
 * @param own  optional out: a new array of {"event_id","room_id"} of the
 *             guest's own messages, for redaction
 * @return TH_OK or a store error.
 */
int feed_erase(store_txn *t, const char *guest, json_t **own);

#endif
