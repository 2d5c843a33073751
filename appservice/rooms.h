/*
 * rooms.h - what Threshold keeps about a room in STORE_ROOMS: a small JSON
 * object with the number of events handled, the bot's membership, and for
 * rooms Threshold manages their kind ("group" or "portal") and the guests'
 * memberships.  Room names and topics are never kept: whoever set them may
 * have written a message into them.
 *
 *   {"events": N, "bot": "join"|..., "kind": "group", "guests": {"@guest_..": "join"}}
 *
 * Who is joined to the staff rooms (roles.staff_rooms) is kept apart, in
 * STORE_STAFF_MEMBERS: user id -> room id, one duplicate per staff room the
 * user is joined to, so that "is this sender staff?" on the hot path is one
 * B-tree lookup, never a scan or a JSON parse.
 */
#ifndef THRESHOLD_ROOMS_H
#define THRESHOLD_ROOMS_H

#include <jansson.h>

#include "store.h"

struct config_ids;

/** A fresh state object for a room first seen (new reference). */
json_t *rooms_state_new(void);

/** @return 1 if @p state is a room Threshold manages (a group or portal room). */
int rooms_is_managed(const json_t *state);

/**
 * Record @p room_id as managed, of @p kind, in write txn @p t, keeping what
 * is already known about it.
 * @return TH_OK or a store error.
 */
int rooms_mark_managed(store_txn *t, const char *room_id, const char *kind);

/**
 * Record that @p user_id joined staff room @p room_id (@p joined = 1), or is
 * no longer joined to it (0: left, was kicked or banned, or only invited).
 * @return TH_OK (also when nothing changes) or a store error.
 */
int rooms_staff_set(store_txn *t, const char *room_id, const char *user_id, int joined);

/**
 * @return 1 if @p user_id is joined to a room of @p staff_rooms (as recorded
 *         by rooms_staff_set; a room no longer configured does not count),
 *         else 0.  A store error counts as "not staff": fail closed.
 */
int rooms_staff_has(store_txn *t, const struct config_ids *staff_rooms, const char *user_id);

/**
 * Replace what is known of staff room @p room_id's members: forget them all,
 * then record each user id key of @p joined (the "joined" object of the
 * homeserver's joined_members answer), or none when @p joined is NULL (the
 * bot left: Threshold can no longer see who is there).  Walks the whole of
 * STORE_STAFF_MEMBERS: for the bot's own joins and leaves, not every event.
 * @return TH_OK or a store error.
 */
int rooms_staff_reset(store_txn *t, const char *room_id, const json_t *joined);

#endif
