/*
 * store.c - the LMDB environment behind Threshold: open with full
 * durability, one table of named databases, thin get/put wrappers that turn
 * LMDB's codes into the project's.
 */
#include "store.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <lmdb.h>

#include "dedupe.h"
#include "log.h"
#include "util.h"

struct store {
	MDB_env *env;
	MDB_dbi dbi[STORE_NDBS];
};

struct store_txn {
	store *st;
	MDB_txn *txn;
	int write;
};

static const struct {
	const char *name;
	unsigned flags;
} db_table[STORE_NDBS] = {
        [STORE_META] = {"meta", 0},
        [STORE_TXNS] = {"txns", 0},
        [STORE_EVENTS] = {"events_seen", 0},
        [STORE_ROOMS] = {"rooms", 0},
        [STORE_USERS] = {"users", 0},
        [STORE_OUTBOX] = {"outbox", 0},
        [STORE_AUDIT] = {"audit", 0},
        [STORE_AUDIT_CKPT] = {"audit_checkpoints", 0},
        [STORE_AUDIT_BY_SUBJECT] = {"audit_by_subject", MDB_DUPSORT},
        [STORE_SEAL_SLOTS] = {"seal_slots", 0},
        [STORE_INVITES] = {"invites", 0},
        [STORE_SESSIONS] = {"sessions", 0},
        [STORE_CONVS] = {"conversations", 0},
        [STORE_FEED] = {"feed", 0},
        [STORE_BLOBS] = {"blobs", 0},
        [STORE_STAFF_MEMBERS] = {"staff_members", MDB_DUPSORT},
        [STORE_MEMBERS] = {"members", 0},
        [STORE_MEMBER_ROOMS] = {"member_rooms", MDB_DUPSORT},
        [STORE_OUTBOX_FAILED] = {"outbox_failed", 0},
        [STORE_ROOM_GUESTS] = {"room_guests", 0},
        [STORE_ROOM_STAFF] = {"room_staff", 0},
        [STORE_ROOM_NAMES] = {"room_names", 0},
        [STORE_AUDIT_INDEX] = {"audit_index", MDB_DUPSORT | MDB_DUPFIXED},
        [STORE_AUDIT_BY_TIME] = {"audit_by_time", 0},
        [STORE_CASES] = {"cases", 0},
};

static int map_err(int rc)
{
	switch (rc) {
	case MDB_SUCCESS:
		return TH_OK;
	case MDB_NOTFOUND:
		return TH_ENOTFOUND;
	case MDB_KEYEXIST:
		return TH_EEXIST;
	case MDB_MAP_FULL:
		return TH_EFULL;
	case MDB_BAD_VALSIZE:
		return TH_EINVAL;
	default:
		return TH_ESTORE;
	}
}

void store_u64_key(unsigned char key[8], uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		key[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}

uint64_t store_key_u64(const unsigned char key[8])
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | key[i];
	return v;
}

int store_schema_get(store_txn *t, uint64_t *out)
{
	const void *val;
	size_t vlen;
	int rc = store_get(t, STORE_META, "schema_version", 14, &val, &vlen);
	if (rc == TH_ENOTFOUND) {
		*out = 0;
		return TH_OK;
	}
	if (rc)
		return rc;
	*out = vlen == 8 ? store_key_u64(val) : UINT64_MAX;
	return TH_OK;
}

int store_schema_set(store_txn *t, uint64_t v)
{
	unsigned char b[8];
	store_u64_key(b, v);
	return store_put(t, STORE_META, "schema_version", 14, b, 8, 0);
}

/* A new store gets this build's version; an older one is upgraded once, in
 * one transaction (a crash midway leaves the old store as it was); a newer
 * one is refused. */
static int check_schema(store *st)
{
	store_txn *t;
	uint64_t have;
	int rc = store_txn_begin(st, 0, &t);
	if (rc)
		return rc;
	rc = store_schema_get(t, &have);
	store_txn_abort(t);
	if (rc)
		return rc;
	if (have == STORE_SCHEMA_VERSION)
		return TH_OK; /* the usual case: a read, no write */
	if (have > STORE_SCHEMA_VERSION) {
		LOG(LOG_ERROR, "store: schema version %llu, this build knows %d; refusing to open",
		    (unsigned long long)have, STORE_SCHEMA_VERSION);
		return TH_ESTORE;
	}
	if ((rc = store_txn_begin(st, 1, &t)))
		return rc;
	rc = store_schema_get(t, &have); /* again, under the writer's lock */
	if (!rc && have < STORE_SCHEMA_VERSION) {
		if (have)
			LOG(LOG_INFO, "store: upgrading from schema version %llu to %d",
			    (unsigned long long)have, STORE_SCHEMA_VERSION);
		rc = have ? store_migrate(t, have) : TH_OK;
		if (!rc)
			rc = store_schema_set(t, STORE_SCHEMA_VERSION);
	}
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	return store_txn_commit(t);
}

int store_open(const char *path, size_t map_size_mb, store **out)
{
	store *st = xcalloc(1, sizeof(*st));
	MDB_txn *txn = NULL;
	int rc;

	if (mkdir(path, 0700) != 0 && errno != EEXIST) {
		LOG(LOG_ERROR, "store: cannot create %s: %s", path, strerror(errno));
		free(st);
		return TH_EIO;
	}
	if ((rc = mdb_env_create(&st->env)) != 0)
		goto fail;
	if ((rc = mdb_env_set_maxdbs(st->env, STORE_NDBS + 4)) != 0)
		goto fail;
	if ((rc = mdb_env_set_mapsize(st->env, map_size_mb * 1024 * 1024)) != 0)
		goto fail;
	/* Readers are threads of one process plus the CLI; 126 is LMDB's default. */
	/* Full durability: no MDB_NOSYNC, MDB_NOMETASYNC or MDB_MAPASYNC.
	 * MDB_NOTLS: read txns are not tied to threads (the AS server and the
	 * outbox worker each run their own). */
	if ((rc = mdb_env_open(st->env, path, MDB_NOTLS, 0600)) != 0)
		goto fail;
	int dead = 0;
	mdb_reader_check(st->env, &dead);
	if (dead > 0)
		LOG(LOG_INFO, "store: cleared %d stale reader slot(s) left by a dead process", dead);

	if ((rc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0)
		goto fail;
	for (int i = 0; i < STORE_NDBS; i++) {
		if ((rc = mdb_dbi_open(txn, db_table[i].name, MDB_CREATE | db_table[i].flags, &st->dbi[i])) !=
		    0)
			goto fail;
	}
	if ((rc = mdb_txn_commit(txn)) != 0) {
		txn = NULL;
		goto fail;
	}
	txn = NULL;
	if ((rc = check_schema(st)) != TH_OK) {
		mdb_env_close(st->env);
		free(st);
		return rc == TH_EFULL ? TH_EFULL : TH_ESTORE;
	}
	*out = st;
	return TH_OK;
fail:
	LOG(LOG_ERROR, "store: cannot open %s: %s", path, mdb_strerror(rc));
	if (txn)
		mdb_txn_abort(txn);
	if (st->env)
		mdb_env_close(st->env);
	free(st);
	return rc == MDB_MAP_FULL ? TH_EFULL : TH_ESTORE;
}

void store_close(store *st)
{
	if (!st)
		return;
	mdb_env_close(st->env);
	free(st);
}

int store_txn_begin(store *st, int write, store_txn **out)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(st->env, NULL, write ? 0 : MDB_RDONLY, &txn);
	if (rc) {
		LOG(LOG_ERROR, "store: cannot begin transaction: %s", mdb_strerror(rc));
		return map_err(rc) == TH_EFULL ? TH_EFULL : TH_ESTORE;
	}
	store_txn *t = xmalloc(sizeof(*t));
	t->st = st;
	t->txn = txn;
	t->write = write;
	*out = t;
	return TH_OK;
}

int store_txn_commit(store_txn *t)
{
	int rc = mdb_txn_commit(t->txn);
	free(t);
	if (rc) {
		/* LMDB reports a full file system as ENOSPC or, from its final
		 * write, as EIO: say what to check rather than only the errno. */
		LOG(LOG_ERROR, "store: commit failed: %s%s", mdb_strerror(rc),
		    rc == ENOSPC || rc == EIO || rc == EDQUOT
		            ? " (is the file system holding the store full? nothing of this change was kept)"
		            : "");
		return map_err(rc) == TH_EFULL ? TH_EFULL : TH_ESTORE;
	}
	return TH_OK;
}

void store_txn_abort(store_txn *t)
{
	if (!t)
		return;
	mdb_txn_abort(t->txn);
	free(t);
}

int store_get(store_txn *t, enum store_db db, const void *key, size_t klen, const void **val, size_t *vlen)
{
	MDB_val k = {klen, (void *)key}, v;
	int rc = mdb_get(t->txn, t->st->dbi[db], &k, &v);
	if (rc)
		return map_err(rc) == TH_ENOTFOUND ? TH_ENOTFOUND : TH_ESTORE;
	*val = v.mv_data;
	*vlen = v.mv_size;
	return TH_OK;
}

int store_put(store_txn *t, enum store_db db, const void *key, size_t klen, const void *val, size_t vlen,
              unsigned flags)
{
	MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
	unsigned mflags = 0;
	if (flags & STORE_NOOVERWRITE)
		mflags |= MDB_NOOVERWRITE;
	if (flags & STORE_APPEND)
		mflags |= MDB_APPEND;
	int rc = mdb_put(t->txn, t->st->dbi[db], &k, &v, mflags);
	if (rc == MDB_MAP_FULL)
		LOG(LOG_ERROR, "store: the map is full (%s); raise store.map_size_mb and restart",
		    db_table[db].name);
	else if (rc && rc != MDB_KEYEXIST)
		LOG(LOG_ERROR, "store: put into %s failed: %s", db_table[db].name, mdb_strerror(rc));
	return map_err(rc);
}

int store_del(store_txn *t, enum store_db db, const void *key, size_t klen)
{
	MDB_val k = {klen, (void *)key};
	int rc = mdb_del(t->txn, t->st->dbi[db], &k, NULL);
	return map_err(rc);
}

int store_del_dup(store_txn *t, enum store_db db, const void *key, size_t klen, const void *val, size_t vlen)
{
	MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
	int rc = mdb_del(t->txn, t->st->dbi[db], &k, &v);
	return map_err(rc);
}

int store_get_json(store_txn *t, enum store_db db, const char *key, json_t **out)
{
	return store_get_jsonb(t, db, key, strlen(key), out);
}

int store_get_jsonb(store_txn *t, enum store_db db, const void *key, size_t klen, json_t **out)
{
	const void *val;
	size_t vlen;
	int rc = store_get(t, db, key, klen, &val, &vlen);
	if (rc)
		return rc;
	json_t *j = json_loadb(val, vlen, 0, NULL);
	if (!j) {
		LOG(LOG_ERROR, "store: undecodable JSON in %s", db_table[db].name);
		return TH_ESTORE;
	}
	*out = j;
	return TH_OK;
}

int store_put_json(store_txn *t, enum store_db db, const char *key, const json_t *val)
{
	char *s = json_dumps(val, JSON_COMPACT);
	if (!s)
		return TH_EINVAL;
	int rc = store_put(t, db, key, strlen(key), s, strlen(s), 0);
	free(s);
	return rc;
}

static int cursor_edge(store_txn *t, enum store_db db, MDB_cursor_op op, const void **key, size_t *klen,
                       const void **val, size_t *vlen)
{
	MDB_cursor *c;
	int rc = mdb_cursor_open(t->txn, t->st->dbi[db], &c);
	if (rc)
		return TH_ESTORE;
	MDB_val k, v;
	rc = mdb_cursor_get(c, &k, &v, op);
	mdb_cursor_close(c);
	if (rc)
		return map_err(rc) == TH_ENOTFOUND ? TH_ENOTFOUND : TH_ESTORE;
	if (key) {
		*key = k.mv_data;
		*klen = k.mv_size;
	}
	if (val) {
		*val = v.mv_data;
		*vlen = v.mv_size;
	}
	return TH_OK;
}

int store_first(store_txn *t, enum store_db db, const void **key, size_t *klen, const void **val,
                size_t *vlen)
{
	return cursor_edge(t, db, MDB_FIRST, key, klen, val, vlen);
}

int store_last(store_txn *t, enum store_db db, const void **key, size_t *klen, const void **val, size_t *vlen)
{
	return cursor_edge(t, db, MDB_LAST, key, klen, val, vlen);
}

/* Visit entries from the cursor position @p first reaches (from key @p key
 * and, for MDB_GET_BOTH_RANGE, value @p val), moving by @p next. */
static int walk(store_txn *t, enum store_db db, const void *key, size_t klen, const void *val, size_t vlen,
                MDB_cursor_op first, MDB_cursor_op next, store_walk_fn fn, void *ctx)
{
	MDB_cursor *c;
	if (mdb_cursor_open(t->txn, t->st->dbi[db], &c))
		return TH_ESTORE;
	MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
	int rc = mdb_cursor_get(c, &k, &v, first);
	int result = TH_OK;
	while (rc == 0) {
		int r = fn(ctx, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
		if (r < 0) {
			result = -r;
			break;
		}
		if (r > 0)
			break;
		rc = mdb_cursor_get(c, &k, &v, next);
	}
	if (rc && rc != MDB_NOTFOUND)
		result = TH_ESTORE;
	mdb_cursor_close(c);
	return result;
}

int store_walk(store_txn *t, enum store_db db, const void *from, size_t fromlen, store_walk_fn fn, void *ctx)
{
	return walk(t, db, from, fromlen, NULL, 0, from ? MDB_SET_RANGE : MDB_FIRST, MDB_NEXT, fn, ctx);
}

int store_walk_dups(store_txn *t, enum store_db db, const void *key, size_t klen, store_walk_fn fn, void *ctx)
{
	return walk(t, db, key, klen, NULL, 0, MDB_SET_KEY, MDB_NEXT_DUP, fn, ctx);
}

int store_walk_dups_from(store_txn *t, enum store_db db, const void *key, size_t klen, const void *from,
                         size_t flen, store_walk_fn fn, void *ctx)
{
	return walk(t, db, key, klen, from, flen, MDB_GET_BOTH_RANGE, MDB_NEXT_DUP, fn, ctx);
}

int store_count_dups(store_txn *t, enum store_db db, const void *key, size_t klen, size_t *out)
{
	MDB_cursor *c;
	if (mdb_cursor_open(t->txn, t->st->dbi[db], &c))
		return TH_ESTORE;
	MDB_val k = {klen, (void *)key}, v;
	size_t n = 0;
	int rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY);
	if (rc == 0)
		rc = mdb_cursor_count(c, &n);
	mdb_cursor_close(c);
	if (rc && rc != MDB_NOTFOUND)
		return TH_ESTORE;
	*out = rc ? 0 : (size_t)n;
	return TH_OK;
}

int store_clear(store_txn *t, enum store_db db)
{
	return mdb_drop(t->txn, t->st->dbi[db], 0) ? TH_ESTORE : TH_OK;
}

int store_count(store_txn *t, enum store_db db, size_t *out)
{
	MDB_stat s;
	if (mdb_stat(t->txn, t->st->dbi[db], &s))
		return TH_ESTORE;
	*out = s.ms_entries;
	return TH_OK;
}

int store_db_bytes(store_txn *t, enum store_db db, size_t *out)
{
	MDB_stat s;
	if (mdb_stat(t->txn, t->st->dbi[db], &s))
		return TH_ESTORE;
	*out = (s.ms_branch_pages + s.ms_leaf_pages + s.ms_overflow_pages) * (size_t)s.ms_psize;
	return TH_OK;
}

/* Delete from @db every entry whose value starts with a BE/host u64 time < before. */
static int prune_db(store_txn *t, enum store_db db, uint64_t before_ms, size_t *removed)
{
	MDB_cursor *c;
	if (mdb_cursor_open(t->txn, t->st->dbi[db], &c))
		return TH_ESTORE;
	MDB_val k, v;
	int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
	while (rc == 0) {
		uint64_t when = UINT64_MAX;
		if (db == STORE_EVENTS && v.mv_size == 8) {
			when = store_key_u64(v.mv_data);
		}
		if (when < before_ms) {
			rc = mdb_cursor_del(c, 0);
			if (rc)
				break;
			(*removed)++;
		}
		rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND || rc == 0 ? TH_OK : map_err(rc);
}

int store_prune(store *st, uint64_t before_ms, size_t *removed)
{
	store_txn *t;
	int rc = store_txn_begin(st, 1, &t);
	if (rc)
		return rc;
	*removed = 0;
	rc = prune_db(t, STORE_EVENTS, before_ms, removed);
	if (!rc)
		rc = dedupe_prune(t, before_ms, removed);
	if (rc) {
		store_txn_abort(t);
		return rc;
	}
	return store_txn_commit(t);
}

int store_usage(store *st, size_t *used, size_t *mapsize)
{
	MDB_envinfo info;
	MDB_stat s;
	if (mdb_env_info(st->env, &info) || mdb_env_stat(st->env, &s))
		return TH_ESTORE;
	*used = (info.me_last_pgno + 1) * (size_t)s.ms_psize;
	*mapsize = info.me_mapsize;
	return TH_OK;
}

int store_usage_live(store *st, size_t *used, size_t *mapsize)
{
	MDB_txn *txn = NULL;
	MDB_cursor *c = NULL;
	MDB_envinfo info;
	MDB_stat s;
	size_t free_pages = 0;
	if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn))
		return TH_ESTORE;
	/* The environment's info as this snapshot sees it, then its free list
	 * (LMDB's database 0: txn id -> pgno count followed by the pages). */
	int rc = mdb_env_info(st->env, &info) || mdb_env_stat(st->env, &s) || mdb_cursor_open(txn, 0, &c);
	if (!rc) {
		MDB_val k, v;
		int r = mdb_cursor_get(c, &k, &v, MDB_FIRST);
		while (r == 0) {
			if (v.mv_size >= sizeof(size_t)) {
				size_t n;
				memcpy(&n, v.mv_data, sizeof(n)); /* pgno_t is size_t */
				free_pages += n;
			}
			r = mdb_cursor_get(c, &k, &v, MDB_NEXT);
		}
		rc = r != MDB_NOTFOUND;
		mdb_cursor_close(c);
	}
	mdb_txn_abort(txn);
	if (rc)
		return TH_ESTORE;
	size_t pages = info.me_last_pgno + 1;
	*used = (pages > free_pages ? pages - free_pages : 0) * (size_t)s.ms_psize;
	*mapsize = info.me_mapsize;
	return TH_OK;
}
