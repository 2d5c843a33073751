/*
 * dedupe.h - what makes an AS transaction's events handled exactly once:
 * the ids of the events seen, and the last transactions committed, kept so
 * that a one-event commit writes as few pages as it can.
 *
 * An event id is seen if it is in STORE_EVENTS (event id -> u64 BE
 * first-seen time, a B-tree three or four levels deep in a store of some
 * size) or in the "recent" record of STORE_TXNS.  That one record, under
 * its one key (so in its database's only page), holds:
 *   - the last DEDUPE_TXNS_MAX transactions committed: txnId, the hash of
 *     their events' ids (txn.c), commit time; newest first;
 *   - the ids of the events seen most recently, with their first-seen time,
 *     until they fill it: then the commit that would overflow it moves them
 *     all into STORE_EVENTS and starts it again empty.
 * A transaction's events, its room records, audit records, actions and
 * this bookkeeping are one LMDB commit, so "seen" and "handled" are
 * recorded together or not at all.  Ids are compared whole, never by hash.
 *
 * A one-event commit thus dirties one page of STORE_TXNS where it used to
 * dirty the paths of two deep trees (docs/performance.md); the events are
 * written to STORE_EVENTS a record-full at a time.
 *
 * Use: dedupe_load at the start of the write transaction, dedupe_txn_find,
 * dedupe_event_add per event, dedupe_save before the commit, dedupe_free.
 */
#ifndef THRESHOLD_DEDUPE_H
#define THRESHOLD_DEDUPE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* The record's key in STORE_TXNS, and its bounds: it stays in its leaf
 * page (LMDB puts a value over about 2,000 bytes of a 4 KiB page on pages
 * of its own, each written whole). */
#define DEDUPE_KEY       "recent"
#define DEDUPE_TXNS_MAX  16   /* transactions remembered */
#define DEDUPE_TXN_BYTES 512  /* at most, of the record, for them */
#define DEDUPE_BYTES     2000 /* the whole record at most */
#define DEDUPE_ID_MAX    255  /* longer ids (none from a homeserver) go to STORE_EVENTS at once */

/** The record, read into memory for one write transaction.  Owns its buffers. */
struct dedupe {
	unsigned char *txns; /* serialized transactions, newest first */
	size_t txns_len;
	unsigned ntxns;
	unsigned char *ev; /* serialized events seen, in the record or added since */
	size_t ev_len, ev_cap;
	size_t nev;
	uint32_t *ev_hash; /* a hash of each one's id, in order: compared before the id */
	size_t hash_cap;
};

/**
 * Read the record in transaction @p t (a missing one is empty).
 * @return TH_OK or TH_ESTORE (also for a record this build cannot read).
 */
int dedupe_load(store_txn *t, struct dedupe *d);

/** Free what dedupe_load and the calls after it allocated.  Idempotent. */
void dedupe_free(struct dedupe *d);

/**
 * @return 1 if transaction @p txn_id is among those remembered (its events'
 *         hash in @p hash), else 0.
 */
int dedupe_txn_find(const struct dedupe *d, const char *txn_id, uint64_t *hash);

/**
 * Mark event @p id seen at @p now_ms unless it was: looked up in the record
 * (and what this transaction added) and in STORE_EVENTS.
 * @return TH_OK (first time: now recorded, kept by dedupe_save), TH_EEXIST
 *         (seen before), or a store error.
 */
int dedupe_event_add(struct dedupe *d, store_txn *t, const char *id, uint64_t now_ms);

/**
 * Write the record back with transaction @p txn_id (hash @p hash, at
 * @p now_ms) first among those remembered, moving the events into
 * STORE_EVENTS if they no longer fit.
 * @return TH_OK or a store error (TH_EFULL: the transaction can only be aborted).
 */
int dedupe_save(struct dedupe *d, store_txn *t, const char *txn_id, uint64_t hash, uint64_t now_ms);

/**
 * Numbers for `threshold status`: transactions remembered, event ids kept
 * (the record's and STORE_EVENTS').
 * @return TH_OK or TH_ESTORE.
 */
int dedupe_count(store_txn *t, size_t *txns, size_t *events);

/**
 * Drop from the record the transactions committed and the events first seen
 * before @p before_ms (store_prune does STORE_EVENTS), adding their number to
 * @p removed.
 * @return TH_OK or a store error.
 */
int dedupe_prune(store_txn *t, uint64_t before_ms, size_t *removed);

/**
 * Schema 2 -> 3: STORE_TXNS held one key per transaction (txnId -> struct
 * store_txn_rec); keep the newest DEDUPE_TXNS_MAX of them in the record and
 * delete the keys.
 * @return TH_OK or a store error.
 */
int dedupe_migrate_v3(store_txn *t);

#endif
