/*
 * feed.h - what a guest's page shows: one ordered list of entries per guest,
 * appended as the homeserver's transactions arrive (no /sync), read by the
 * gateway's long poll with a "since" id.
 *
 * STORE_FEED keys are <guest user id> 0x00 <u64 BE id>.  Id 0 holds the
 * guest's next id (u64 BE); entries are 1, 2, 3...  Entries are appended
 * (in the write transaction that learned of them) and deleted all together
 * (erasure, expiry), so reading from "since" never repeats or skips one.
 * The one change to an entry in place: when its Matrix event is redacted,
 * a message loses its words and attachment and says "removed":true, and a
 * "removed" entry naming it ("entry") is appended for pages showing it.
 *
 * An entry is a JSON object, as the gateway API shows it (docs/gateway-api.md)
 * plus private members the API never shows: "event_id" and "room_id" of
 * the Matrix event, so erasure can redact what the guest wrote, and "mxc",
 * where the picture or file of an attachment is on the homeserver, so the
 * gateway can fetch it when the guest asks (GET /media/{id}).
 *
 *   {"id":N, "kind":"message"|"notice"|"closed"|"removed", "ts":T, ["entry":N,]
 *    ["removed":true,]
 *    "from":{"role":"staff"|"guest"|"self"|"service", "name":S},
 *    "body":S [, "local_id":L] [, "event_id":E, "room_id":R]
 *    [, "attachment":{"kind":"picture"|"file", "name":S [, "mimetype":M]
 *                     [, "size":B] [, "caption":S]}, "mxc":U]}
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

/** One entry to append; every pointer borrowed, NULL where absent. */
struct feed_entry {
	const char *kind;     /* "message", "notice", "closed" or "removed" */
	const char *role;     /* from.role; NULL: no "from" */
	const char *name;     /* from.name */
	const char *body;     /* plain text */
	const char *local_id; /* the page's id for the guest's own message */
	const char *event_id; /* private: the Matrix event */
	const char *room_id;  /* private: its room */
	uint64_t ts;          /* ms; 0: now */
	uint64_t entry;       /* "removed": the entry taken down; 0: none */
	/* a picture or file someone else sent; its mxc is kept private, and
	 * an empty mxc keeps no attachment (it cannot be fetched) */
	const struct media_attachment *attachment;
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
 * Take down what @p guest's feed shows of Matrix event @p event_id (it was
 * redacted): each message made from it loses its body and attachment and
 * is marked "removed", and a "removed" entry naming it is appended.  One
 * already removed is left alone.
 * @param removed  out: how many entries were taken down (usually 0 or 1)
 * @return TH_OK, TH_EINVAL, or a store error.
 */
int feed_remove_event(store_txn *t, const char *guest, const char *event_id, unsigned *removed);

/**
 * Delete every entry of @p guest (and its counter) in write transaction @p t.
 * @param own  optional out: a new array of {"event_id","room_id"} of the
 *             guest's own messages, for redaction
 * @return TH_OK or a store error.
 */
int feed_erase(store_txn *t, const char *guest, json_t **own);

#endif
