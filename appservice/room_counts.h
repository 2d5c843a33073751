/*
 * room_counts.h - the number of events handled in each room, without
 * rewriting the room's record for each of them.
 *
 * A room's count is its STORE_ROOMS record's "events" plus what is pending
 * for it in the "room_counts" record of STORE_TXNS: a transaction whose
 * events changed nothing of a room's record but its count adds to the
 * pending count instead of rewriting the record, which lives in a B-tree as
 * deep as there are rooms; the pending record shares its database's one
 * page with dedupe.h's record, which the same commit writes anyway.  It
 * holds the rooms counted most recently, newest first, at most
 * ROOM_COUNTS_BYTES: a room that does not fit makes room by folding the
 * oldest one's count into that room's record.  A transaction that rewrites
 * a room's record anyway folds the room's pending count into it.
 *
 * Layout, integers big-endian: u8 format (1), then to the end
 * u8 room id length, u32 FNV-1a of the room id (compared before the id),
 * room id, u64 pending count.
 */
#ifndef THRESHOLD_ROOM_COUNTS_H
#define THRESHOLD_ROOM_COUNTS_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define ROOM_COUNTS_KEY   "room_counts"
#define ROOM_COUNTS_BYTES 1900 /* with dedupe.h's record, one page */

/** The record, read for one write transaction.  Owns its buffer. */
struct room_counts {
	unsigned char *buf; /* the entries, newest first, as stored */
	size_t len, cap;
	int dirty;
};

/** Read the record in @p t (missing: empty).  @return TH_OK or TH_ESTORE. */
int room_counts_load(store_txn *t, struct room_counts *rc);

/** Free its buffer.  Idempotent. */
void room_counts_free(struct room_counts *rc);

/**
 * Count @p n more events in room @p room_id, whose record exists and is
 * otherwise unchanged; may fold the oldest pending count into its record.
 * @return TH_OK or a store error.
 */
int room_counts_add(struct room_counts *rc, store_txn *t, const char *room_id, uint64_t n);

/** Remove and @return the pending count of @p room_id (0 if none): for a
 *  caller about to rewrite the room's record, who adds it to "events". */
uint64_t room_counts_take(struct room_counts *rc, const char *room_id);

/** Write the record back if it changed.  @return TH_OK or a store error. */
int room_counts_save(struct room_counts *rc, store_txn *t);

/**
 * The pending count of @p room_id in @p t (read or write), for whoever
 * shows a room's count: add it to the record's "events".
 * @return TH_OK or TH_ESTORE.
 */
int room_counts_pending(store_txn *t, const char *room_id, uint64_t *n);

#endif
