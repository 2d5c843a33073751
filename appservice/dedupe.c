/*
 * dedupe.c - the "recent" record of STORE_TXNS (dedupe.h): the last
 * transactions committed and the events seen most recently, in one value of
 * at most DEDUPE_BYTES.  Its layout, all integers big-endian:
 *
 *   u8 format (1), u8 number of transactions,
 *   that many of: u64 hash, u64 commit time (ms), u8 id length, id;
 *   to the end:   u64 first-seen time (ms), u8 id length, id.
 */
#include "dedupe.h"

#include <string.h>

#include "log.h"
#include "util.h"

#define FORMAT 1

static void put_u64(unsigned char *p, uint64_t v)
{
	store_u64_key(p, v);
}

static uint64_t get_u64(const unsigned char *p)
{
	return store_key_u64(p);
}

/* Walk serialized entries of @p fixed bytes before a length and an id; @return
 * the offset past them, or 0 if they do not end exactly at @p len (damaged). */
static size_t entries_end(const unsigned char *p, size_t len, size_t fixed, size_t count, size_t *n)
{
	size_t off = 0, k = 0;
	while (off < len && k < count) {
		if (off + fixed + 1 > len || off + fixed + 1 + p[off + fixed] > len)
			return 0;
		off += fixed + 1 + p[off + fixed];
		k++;
	}
	if (n)
		*n = k;
	return off;
}

static uint32_t id_hash(const void *id, size_t len)
{
	return (uint32_t)th_fnv1a64(id, len);
}

static void hash_push(struct dedupe *d, uint32_t h)
{
	if (d->nev >= d->hash_cap) {
		d->hash_cap = d->hash_cap ? d->hash_cap * 2 : 64;
		d->ev_hash = xrealloc(d->ev_hash, d->hash_cap * sizeof(*d->ev_hash));
	}
	d->ev_hash[d->nev++] = h;
}

static void ev_reserve(struct dedupe *d, size_t more)
{
	if (d->ev_len + more <= d->ev_cap)
		return;
	d->ev_cap = (d->ev_len + more) * 2;
	d->ev = xrealloc(d->ev, d->ev_cap);
}

int dedupe_load(store_txn *t, struct dedupe *d)
{
	memset(d, 0, sizeof(*d));
	const void *val;
	size_t vlen;
	int rc = store_get(t, STORE_TXNS, DEDUPE_KEY, strlen(DEDUPE_KEY), &val, &vlen);
	if (rc == TH_ENOTFOUND)
		return TH_OK;
	if (rc)
		return rc;
	const unsigned char *p = val;
	if (vlen < 2 || p[0] != FORMAT) {
		LOG(LOG_ERROR, "store: the record of recent transactions is not one this build reads");
		return TH_ESTORE;
	}
	size_t n = 0, tl = entries_end(p + 2, vlen - 2, 16, p[1], &n);
	if (n != p[1] || (p[1] && !tl)) {
		LOG(LOG_ERROR, "store: the record of recent transactions is damaged");
		return TH_ESTORE;
	}
	size_t el = vlen - 2 - tl;
	if (el && entries_end(p + 2 + tl, el, 8, SIZE_MAX, NULL) != el) {
		LOG(LOG_ERROR, "store: the record of recent events is damaged");
		return TH_ESTORE;
	}
	d->ntxns = p[1];
	d->txns_len = tl;
	d->txns = xmalloc(tl ? tl : 1);
	memcpy(d->txns, p + 2, tl);
	ev_reserve(d, el + 64);
	memcpy(d->ev, p + 2 + tl, el);
	d->ev_len = el;
	for (size_t off = 0; off < el; off += 9 + d->ev[off + 8])
		hash_push(d, id_hash(d->ev + off + 9, d->ev[off + 8]));
	return TH_OK;
}

void dedupe_free(struct dedupe *d)
{
	free(d->txns);
	free(d->ev);
	free(d->ev_hash);
	memset(d, 0, sizeof(*d));
}

int dedupe_txn_find(const struct dedupe *d, const char *txn_id, uint64_t *hash)
{
	size_t idlen = strlen(txn_id), off = 0;
	for (unsigned i = 0; i < d->ntxns; i++) {
		const unsigned char *e = d->txns + off;
		size_t l = e[16];
		if (l == idlen && memcmp(e + 17, txn_id, l) == 0) {
			*hash = get_u64(e);
			return 1;
		}
		off += 17 + l;
	}
	return 0;
}

/* @return 1 if @p id (of @p len bytes, hash @p h) is among the record's events. */
static int ev_has(const struct dedupe *d, const char *id, size_t len, uint32_t h)
{
	size_t off = 0;
	for (size_t i = 0; i < d->nev; i++) {
		if (d->ev_hash[i] == h && d->ev[off + 8] == len && memcmp(d->ev + off + 9, id, len) == 0)
			return 1;
		off += 9 + d->ev[off + 8];
	}
	return 0;
}

int dedupe_event_add(struct dedupe *d, store_txn *t, const char *id, uint64_t now_ms)
{
	size_t len = strlen(id);
	const void *v;
	size_t vl;
	unsigned char when[8];
	put_u64(when, now_ms);
	if (len > DEDUPE_ID_MAX || len == 0)
		return store_put(t, STORE_EVENTS, id, len, when, 8, STORE_NOOVERWRITE);
	uint32_t h = id_hash(id, len);
	if (ev_has(d, id, len, h))
		return TH_EEXIST;
	int rc = store_get(t, STORE_EVENTS, id, len, &v, &vl);
	if (rc == TH_OK)
		return TH_EEXIST;
	if (rc != TH_ENOTFOUND)
		return rc;
	ev_reserve(d, 9 + len);
	memcpy(d->ev + d->ev_len, when, 8);
	d->ev[d->ev_len + 8] = (unsigned char)len;
	memcpy(d->ev + d->ev_len + 9, id, len);
	d->ev_len += 9 + len;
	hash_push(d, h);
	return TH_OK;
}

/* Move every event of the record into STORE_EVENTS. */
static int ev_flush(struct dedupe *d, store_txn *t)
{
	for (size_t off = 0; off < d->ev_len; off += 9 + d->ev[off + 8]) {
		int rc = store_put(t, STORE_EVENTS, d->ev + off + 9, d->ev[off + 8], d->ev + off, 8,
		                   STORE_NOOVERWRITE);
		if (rc && rc != TH_EEXIST) /* EEXIST cannot be (an id is added once); harmless */
			return rc;
	}
	d->ev_len = 0;
	d->nev = 0;
	return TH_OK;
}

/* Write the record as @p d holds it. */
static int write_record(struct dedupe *d, store_txn *t)
{
	size_t len = 2 + d->txns_len + d->ev_len;
	unsigned char *rec = xmalloc(len);
	rec[0] = FORMAT;
	rec[1] = (unsigned char)d->ntxns;
	if (d->txns_len) /* either may be unallocated while empty */
		memcpy(rec + 2, d->txns, d->txns_len);
	if (d->ev_len)
		memcpy(rec + 2 + d->txns_len, d->ev, d->ev_len);
	int rc = store_put(t, STORE_TXNS, DEDUPE_KEY, strlen(DEDUPE_KEY), rec, len, 0);
	free(rec);
	return rc;
}

/* Put transaction @p txn_id first in @p d's list, dropping an older entry
 * of the same id and what no longer fits. */
static void txn_push(struct dedupe *d, const char *txn_id, uint64_t hash, uint64_t now_ms)
{
	size_t idlen = strlen(txn_id);
	unsigned char *out = xmalloc(DEDUPE_TXN_BYTES);
	size_t len = 0;
	unsigned n = 0;
	if (idlen <= DEDUPE_TXN_BYTES - 17 && idlen <= 255) {
		put_u64(out, hash);
		put_u64(out + 8, now_ms);
		out[16] = (unsigned char)idlen;
		memcpy(out + 17, txn_id, idlen);
		len = 17 + idlen;
		n = 1;
	}
	size_t off = 0;
	for (unsigned i = 0; i < d->ntxns; i++) {
		const unsigned char *e = d->txns + off;
		size_t l = 17 + e[16];
		off += l;
		if (e[16] == idlen && memcmp(e + 17, txn_id, idlen) == 0)
			continue;
		if (n == DEDUPE_TXNS_MAX || len + l > DEDUPE_TXN_BYTES)
			break;
		memcpy(out + len, e, l);
		len += l;
		n++;
	}
	free(d->txns);
	d->txns = out;
	d->txns_len = len;
	d->ntxns = n;
}

int dedupe_save(struct dedupe *d, store_txn *t, const char *txn_id, uint64_t hash, uint64_t now_ms)
{
	txn_push(d, txn_id, hash, now_ms);
	if (2 + d->txns_len + d->ev_len > DEDUPE_BYTES) {
		int rc = ev_flush(d, t);
		if (rc)
			return rc;
	}
	return write_record(d, t);
}

int dedupe_count(store_txn *t, size_t *txns, size_t *events)
{
	struct dedupe d;
	size_t n = 0;
	int rc = dedupe_load(t, &d);
	if (!rc)
		rc = store_count(t, STORE_EVENTS, &n);
	if (!rc) {
		*txns = d.ntxns;
		*events = n + d.nev;
	}
	dedupe_free(&d);
	return rc;
}

int dedupe_prune(store_txn *t, uint64_t before_ms, size_t *removed)
{
	struct dedupe d;
	int rc = dedupe_load(t, &d);
	if (rc)
		return rc;
	size_t dropped = 0, off = 0, keep = 0;
	unsigned n = 0;
	for (unsigned i = 0; i < d.ntxns; i++) {
		size_t l = 17 + d.txns[off + 16];
		if (get_u64(d.txns + off + 8) >= before_ms) {
			memmove(d.txns + keep, d.txns + off, l);
			keep += l;
			n++;
		} else {
			dropped++;
		}
		off += l;
	}
	d.txns_len = keep;
	d.ntxns = n;
	off = keep = 0;
	size_t nev = 0;
	for (size_t i = 0; off < d.ev_len; i++) {
		size_t l = 9 + d.ev[off + 8];
		if (get_u64(d.ev + off) >= before_ms) {
			memmove(d.ev + keep, d.ev + off, l);
			keep += l;
			d.ev_hash[nev++] = d.ev_hash[i];
		} else {
			dropped++;
		}
		off += l;
	}
	d.ev_len = keep;
	d.nev = nev;
	if (dropped)
		rc = write_record(&d, t);
	if (!rc)
		*removed += dropped;
	dedupe_free(&d);
	return rc;
}

/* The newest transactions of the old table, by commit time. */
struct old_txns {
	struct {
		char id[256];
		uint64_t hash, time_ms;
	} v[DEDUPE_TXNS_MAX];
	unsigned n;
};

static int collect_old(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
	struct old_txns *o = ctx;
	struct store_txn_rec rec;
	if (vlen != sizeof(rec) || klen > 255 || memchr(key, 0, klen))
		return 0;
	memcpy(&rec, val, sizeof(rec));
	/* Keep the newest: replace the oldest kept when full. */
	unsigned slot = o->n;
	if (o->n == DEDUPE_TXNS_MAX) {
		slot = 0;
		for (unsigned i = 1; i < o->n; i++)
			if (o->v[i].time_ms < o->v[slot].time_ms)
				slot = i;
		if (o->v[slot].time_ms > rec.time_ms)
			return 0;
	} else {
		o->n++;
	}
	memcpy(o->v[slot].id, key, klen);
	o->v[slot].id[klen] = 0;
	o->v[slot].hash = rec.body_hash;
	o->v[slot].time_ms = rec.time_ms;
	return 0;
}

int dedupe_migrate_v3(store_txn *t)
{
	struct old_txns *o = xcalloc(1, sizeof(*o));
	struct dedupe d;
	memset(&d, 0, sizeof(d));
	int rc = store_walk(t, STORE_TXNS, NULL, 0, collect_old, o);
	if (!rc)
		rc = store_clear(t, STORE_TXNS);
	/* Oldest first, so that each push puts the newer one ahead. */
	for (unsigned done = 0; !rc && done < o->n; done++) {
		unsigned pick = 0;
		for (unsigned i = 1; i < o->n; i++)
			if (o->v[i].time_ms < o->v[pick].time_ms)
				pick = i;
		txn_push(&d, o->v[pick].id, o->v[pick].hash, o->v[pick].time_ms);
		o->v[pick].time_ms = UINT64_MAX;
	}
	if (!rc)
		rc = write_record(&d, t);
	free(o);
	dedupe_free(&d);
	return rc;
}
