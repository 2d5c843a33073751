/*
 * store.h - the LMDB store: one environment, named databases, full
 * durability.  A write transaction either commits durably (fsync'd) or
 * leaves nothing behind; a full map is reported as TH_EFULL, never as
 * corruption.
 *
 * Values returned by store_get() point into LMDB's map: borrowed, valid
 * until the transaction ends, never written through.
 *
 * Keys of sequence-numbered databases (outbox, audit) are 8-byte big-endian
 * u64 so that LMDB's byte order is numeric order and appends are MDB_APPEND.
 */
#ifndef THRESHOLD_STORE_H
#define THRESHOLD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct store store;
typedef struct store_txn store_txn;

/* The named databases.  Adding one is adding a row to store.c's table. */
enum store_db {
	STORE_META = 0,         /* "schema_version" -> u64 BE, and other singletons */
	STORE_TXNS,             /* "recent" -> the last transactions and events seen (dedupe.h) */
	STORE_EVENTS,           /* event_id -> u64 BE first-seen time (ms), pruned (dedupe.h) */
	STORE_ROOMS,            /* room_id -> JSON object (rooms Threshold knows) */
	STORE_USERS,            /* user_id -> JSON object (namespaced users registered) */
	STORE_OUTBOX,           /* u64 BE seq -> JSON action, executed after the ack */
	STORE_AUDIT,            /* u64 BE seq -> audit record (audit.h), MDB_APPEND */
	STORE_AUDIT_CKPT,       /* u64 BE seq -> signed checkpoint of the chain at that record */
	STORE_AUDIT_BY_SUBJECT, /* subject id -> u64 BE seq, one duplicate per record (dupsort) */
	STORE_SEAL_SLOTS,       /* subject id -> seal key slot and state (audit.c) */
	STORE_INVITES,          /* SHA-256 of an invitation token -> JSON (bridge/invites.c) */
	STORE_SESSIONS,         /* SHA-256 of a session token or resume code -> JSON (bridge/conv.c) */
	STORE_CONVS,            /* guest user id -> JSON conversation record (bridge/conv.c) */
	STORE_FEED,             /* guest user id, 0, u64 BE id -> JSON feed entry (bridge/feed.c) */
	STORE_BLOBS,            /* random id -> a guest's file, until the outbox has uploaded it */
	STORE_STAFF_MEMBERS, /* user id -> staff room id, one duplicate per room joined (dupsort; rooms.c) */
	STORE_MEMBERS,       /* managed room id, 0, user id -> "join" or "invite" (rooms.c) */
	STORE_MEMBER_ROOMS,  /* user id -> managed room id, one duplicate per room (dupsort; rooms.c) */
	STORE_OUTBOX_FAILED, /* u64 BE seq -> JSON: an action set aside after failing for good (outbox.c) */
	STORE_ROOM_GUESTS,   /* managed room id, 0, guest id -> membership, "leave" kept (rooms.c) */
	STORE_ROOM_STAFF,    /* managed room id, 0, staff id -> display name shown to guests (rooms.c) */
	STORE_ROOM_NAMES,    /* managed room id, 0, guest id -> the guest's pseudonym there (rooms.c) */
	STORE_AUDIT_INDEX,   /* 'k'|'r'|'a', kind|room|actor -> u64 BE seq, one duplicate each (audit.c) */
	STORE_AUDIT_BY_TIME, /* u64 BE second -> u64 BE first seq whose running-max ts reaches it (audit.c) */
	STORE_CASES,         /* 'c' u64 BE id -> case; 'g' guest -> u64 BE id of their open case (cases.c) */
	STORE_NDBS
};

/*
 * 1: the first release.  2: a room's per-user facts (guests' memberships,
 * staff names, per-room pseudonyms) in their own keys, no longer in its
 * STORE_ROOMS record; audit indexes by kind, room, actor and time.
 * 3: STORE_TXNS holds one record, the last transactions and the events
 * seen most recently (dedupe.h), no longer a key per transaction.
 * store_open upgrades an older store once (migrate.c), in one transaction.
 */
#define STORE_SCHEMA_VERSION 4

/* put flags */
#define STORE_NOOVERWRITE 0x1 /* TH_EEXIST if the key exists */
#define STORE_APPEND      0x2 /* key is greater than every key present */

/** What a committed AS transaction left behind under its txnId in STORE_TXNS
 *  up to schema version 2 (read by the upgrade, dedupe_migrate_v3). */
struct store_txn_rec {
	uint64_t body_hash; /* hash of the events' ids (txn.c), to spot a reused txnId */
	uint64_t time_ms;   /* when it was committed */
};

/**
 * Open (creating if needed) the environment in directory @p path, mode 0700.
 * Clears stale reader slots left by dead processes and checks the schema
 * version (a newer version than this build knows is refused).
 * @param map_size_mb  the map size; may grow an existing environment
 * @param out          new handle on success; free with store_close()
 * @return TH_OK, TH_EIO (path unusable) or TH_ESTORE (message logged).
 */
int store_open(const char *path, size_t map_size_mb, store **out);

/**
 * The schema version recorded in the store (0: none yet, a new store).
 * @return TH_OK or TH_ESTORE.
 */
int store_schema_get(store_txn *t, uint64_t *out);

/** Record schema version @p v in write txn @p t.  @return TH_OK or a store error. */
int store_schema_set(store_txn *t, uint64_t v);

/**
 * Bring an older store up to STORE_SCHEMA_VERSION (migrate.c), in write txn
 * @p t; @p from is the version found.  Called by store_open.
 * @return TH_OK or a store error (then nothing of it is kept).
 */
int store_migrate(store_txn *t, uint64_t from);

/** Close the environment.  All transactions must have ended.  NULL is a no-op. */
void store_close(store *st);

/**
 * Begin a transaction.  At most one write transaction runs at a time (LMDB
 * serialises them); read transactions never block.
 * @return TH_OK or TH_ESTORE.
 */
int store_txn_begin(store *st, int write, store_txn **out);

/**
 * Commit.  For a write transaction, TH_OK means the data is on disk.
 * The handle is freed whatever the result.
 * @return TH_OK, TH_EFULL (map full; nothing was written) or TH_ESTORE.
 */
int store_txn_commit(store_txn *t);

/** Abandon a transaction and free the handle.  NULL is a no-op. */
void store_txn_abort(store_txn *t);

/**
 * @return TH_OK with a borrowed value, TH_ENOTFOUND, or TH_ESTORE.
 */
int store_get(store_txn *t, enum store_db db, const void *key, size_t klen, const void **val, size_t *vlen);

/**
 * @param flags  STORE_NOOVERWRITE, STORE_APPEND or 0
 * @return TH_OK, TH_EEXIST (with STORE_NOOVERWRITE), TH_EFULL, TH_EINVAL
 *         (key too long for LMDB) or TH_ESTORE.
 *         After TH_EFULL the transaction can only be aborted.
 */
int store_put(store_txn *t, enum store_db db, const void *key, size_t klen, const void *val, size_t vlen,
              unsigned flags);

/** @return TH_OK, TH_ENOTFOUND or TH_ESTORE.  In a dupsort database every value of @p key goes. */
int store_del(store_txn *t, enum store_db db, const void *key, size_t klen);

/**
 * Delete one value @p val of @p key in a dupsort database, leaving its others.
 * @return TH_OK, TH_ENOTFOUND (no such pair) or TH_ESTORE.
 */
int store_del_dup(store_txn *t, enum store_db db, const void *key, size_t klen, const void *val, size_t vlen);

/** JSON helpers over store_get/store_put.  store_get_json returns a new reference. */
int store_get_json(store_txn *t, enum store_db db, const char *key, json_t **out);

/**
 * store_get_json() under a key of @p klen bytes (not a string).
 * @param out  new reference, written only on TH_OK
 * @return TH_OK, TH_ENOTFOUND, or TH_ESTORE (also for a value that is not JSON).
 */
int store_get_jsonb(store_txn *t, enum store_db db, const void *key, size_t klen, json_t **out);
int store_put_json(store_txn *t, enum store_db db, const char *key, const json_t *val);

/** Encode/decode the 8-byte big-endian keys of sequence databases. */
void store_u64_key(unsigned char key[8], uint64_t v);
uint64_t store_key_u64(const unsigned char key[8]);

/**
 * The first (lowest) or last (highest) entry of @p db.  Borrowed as store_get().
 * @return TH_OK, TH_ENOTFOUND (empty) or TH_ESTORE.
 */
int store_first(store_txn *t, enum store_db db, const void **key, size_t *klen, const void **val,
                size_t *vlen);
int store_last(store_txn *t, enum store_db db, const void **key, size_t *klen, const void **val,
               size_t *vlen);

/**
 * Call @p fn for each entry of @p db in key order, starting at the first key
 * >= @p from (NULL: from the start).  @p fn returns 0 to go on, 1 to stop, or
 * a negative TH_ code to abort the walk with that error.
 * @return TH_OK or the error.
 */
typedef int (*store_walk_fn)(void *ctx, const void *key, size_t klen, const void *val, size_t vlen);
int store_walk(store_txn *t, enum store_db db, const void *from, size_t fromlen, store_walk_fn fn, void *ctx);

/**
 * Call @p fn for each value stored under @p key in a dupsort database
 * (STORE_AUDIT_BY_SUBJECT), in value byte order; @p fn as for store_walk.
 * A key with no values calls nothing.
 * @return TH_OK or the error.
 */
int store_walk_dups(store_txn *t, enum store_db db, const void *key, size_t klen, store_walk_fn fn,
                    void *ctx);

/**
 * As store_walk_dups, starting at the first value >= @p from (@p flen bytes).
 * @return TH_OK or the error.
 */
int store_walk_dups_from(store_txn *t, enum store_db db, const void *key, size_t klen, const void *from,
                         size_t flen, store_walk_fn fn, void *ctx);

/** Number of values of @p key in dupsort database @p db (0 if none).  @return TH_OK or TH_ESTORE. */
int store_count_dups(store_txn *t, enum store_db db, const void *key, size_t klen, size_t *out);

/** Delete every entry of @p db, keeping the database.  @return TH_OK or TH_ESTORE. */
int store_clear(store_txn *t, enum store_db db);

/** Number of entries in @p db. */
int store_count(store_txn *t, enum store_db db, size_t *out);

/** Bytes of the map @p db's pages take (whole pages: a little over its data). */
int store_db_bytes(store_txn *t, enum store_db db, size_t *out);

/**
 * Delete STORE_EVENTS entries first seen before @p before_ms, and the
 * transactions committed and events seen before it from STORE_TXNS'
 * record (dedupe_prune), in one write transaction.
 * @return TH_OK (count in @p removed), TH_EFULL or TH_ESTORE.
 */
int store_prune(store *st, uint64_t before_ms, size_t *removed);

/** Bytes of the map in use and the map size, for diagnostics. */
int store_usage(store *st, size_t *used, size_t *mapsize);

/**
 * Bytes of the map in use now: store_usage()'s high-water mark less the
 * pages LMDB keeps on its free list for reuse, so it falls again when
 * entries are deleted.  Reads the free list in a read transaction (a few
 * records per write transaction since the last reuse: cheap).
 * @return TH_OK or TH_ESTORE.
 */
int store_usage_live(store *st, size_t *used, size_t *mapsize);

#endif
