/*
 * rooms.h - what Threshold keeps about a room in STORE_ROOMS: a small JSON
 * object with the number of events handled, the bot's membership, and for
 * rooms Threshold manages their kind ("group" or "portal") and the guests'
 * memberships.  Room names and topics are never kept: whoever set them may
 * have written a message into them.
 *
 *   {"events": N, "bot": "join"|..., "kind": "group", "guests": {"@guest_..": "join"}}
 */
#ifndef THRESHOLD_ROOMS_H
#define THRESHOLD_ROOMS_H

#include <jansson.h>

#include "store.h"

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

#endif
