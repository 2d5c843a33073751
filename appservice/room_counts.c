/*
 * room_counts.c - events counted per room, pending in one record of
 * STORE_TXNS until the room's record is written anyway (room_counts.h).
 * The record is used as stored: entries are found by walking it, their
 * hash compared before their id.
 */
#include "room_counts.h"

#include <string.h>

#include <jansson.h>

#include "log.h"
#include "util.h"

#define FORMAT 1
#define HEAD   5 /* length byte and hash */

static uint32_t id_hash(const void *id, size_t len)
{
	return (uint32_t)th_fnv1a64(id, len);
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Size of the entry at @p off. */
static size_t entry_size(const struct room_counts *rc, size_t off)
{
	return HEAD + rc->buf[off] + 8;
}

int room_counts_load(store_txn *t, struct room_counts *rc)
{
	memset(rc, 0, sizeof(*rc));
	const void *val;
	size_t vlen;
	int r = store_get(t, STORE_TXNS, ROOM_COUNTS_KEY, strlen(ROOM_COUNTS_KEY), &val, &vlen);
	if (r == TH_ENOTFOUND)
		return TH_OK;
	if (r)
		return r;
	const unsigned char *p = val;
	size_t off = 1;
	while (vlen && off < vlen && off + HEAD + p[off] + 8 <= vlen)
		off += HEAD + p[off] + 8;
	if (!vlen || p[0] != FORMAT || off != vlen) {
		LOG(LOG_ERROR, "store: the record of rooms' pending event counts is damaged");
		return TH_ESTORE;
	}
	rc->len = vlen - 1;
	rc->cap = rc->len + 300;
	rc->buf = xmalloc(rc->cap);
	memcpy(rc->buf, p + 1, rc->len);
	return TH_OK;
}

void room_counts_free(struct room_counts *rc)
{
	free(rc->buf);
	memset(rc, 0, sizeof(*rc));
}

/* Offset of @p room_id's entry, or rc->len if it has none. */
static size_t find(const struct room_counts *rc, const char *room_id, size_t len)
{
	uint32_t h = id_hash(room_id, len);
	for (size_t off = 0; off < rc->len; off += entry_size(rc, off)) {
		if (rc->buf[off] == len && get_u32(rc->buf + off + 1) == h &&
		    memcmp(rc->buf + off + HEAD, room_id, len) == 0)
			return off;
	}
	return rc->len;
}

static uint64_t count_at(const struct room_counts *rc, size_t off)
{
	return store_key_u64(rc->buf + off + HEAD + rc->buf[off]);
}

/* Remove the entry at @p off. */
static void drop(struct room_counts *rc, size_t off)
{
	size_t l = entry_size(rc, off);
	memmove(rc->buf + off, rc->buf + off + l, rc->len - off - l);
	rc->len -= l;
	rc->dirty = 1;
}

uint64_t room_counts_take(struct room_counts *rc, const char *room_id)
{
	size_t off = find(rc, room_id, strlen(room_id));
	if (off == rc->len)
		return 0;
	uint64_t n = count_at(rc, off);
	drop(rc, off);
	return n;
}

/* Add @p n to the "events" of @p room_id's record; a room with no record
 * (none is deleted today) keeps none. */
static int fold(store_txn *t, const char *room_id, size_t len, uint64_t n)
{
	json_t *state = NULL;
	int r = store_get_jsonb(t, STORE_ROOMS, room_id, len, &state);
	if (r == TH_ENOTFOUND)
		return TH_OK;
	if (r)
		return r;
	char *key = xstrndup(room_id, len);
	json_object_set_new(
	        state, "events",
	        json_integer(json_integer_value(json_object_get(state, "events")) + (json_int_t)n));
	r = store_put_json(t, STORE_ROOMS, key, state);
	free(key);
	json_decref(state);
	return r;
}

int room_counts_add(struct room_counts *rc, store_txn *t, const char *room_id, uint64_t n)
{
	size_t len = strlen(room_id);
	if (len > 255)
		return fold(t, room_id, len, n);
	size_t off = find(rc, room_id, len);
	if (off == 0 && rc->len) { /* the newest already: the usual case when one room is busy */
		store_u64_key(rc->buf + HEAD + len, count_at(rc, 0) + n);
		rc->dirty = 1;
		return TH_OK;
	}
	if (off < rc->len) {
		n += count_at(rc, off);
		drop(rc, off);
	}
	size_t need = HEAD + len + 8;
	/* Make room: fold the oldest counts into their records. */
	while (rc->len && 1 + rc->len + need > ROOM_COUNTS_BYTES) {
		size_t last = 0;
		for (size_t o = 0; o < rc->len; o += entry_size(rc, o))
			last = o;
		int r = fold(t, (const char *)rc->buf + last + HEAD, rc->buf[last], count_at(rc, last));
		if (r)
			return r;
		drop(rc, last);
	}
	if (rc->len + need > rc->cap) {
		rc->cap = rc->len + need + 300;
		rc->buf = xrealloc(rc->buf, rc->cap);
	}
	memmove(rc->buf + need, rc->buf, rc->len);
	uint32_t h = id_hash(room_id, len);
	rc->buf[0] = (unsigned char)len;
	rc->buf[1] = (unsigned char)(h >> 24);
	rc->buf[2] = (unsigned char)(h >> 16);
	rc->buf[3] = (unsigned char)(h >> 8);
	rc->buf[4] = (unsigned char)h;
	memcpy(rc->buf + HEAD, room_id, len);
	store_u64_key(rc->buf + HEAD + len, n);
	rc->len += need;
	rc->dirty = 1;
	return TH_OK;
}

int room_counts_save(struct room_counts *rc, store_txn *t)
{
	if (!rc->dirty)
		return TH_OK;
	unsigned char *rec = xmalloc(1 + rc->len);
	rec[0] = FORMAT;
	if (rc->len)
		memcpy(rec + 1, rc->buf, rc->len);
	int r = store_put(t, STORE_TXNS, ROOM_COUNTS_KEY, strlen(ROOM_COUNTS_KEY), rec, 1 + rc->len, 0);
	free(rec);
	if (!r)
		rc->dirty = 0;
	return r;
}

int room_counts_pending(store_txn *t, const char *room_id, uint64_t *n)
{
	struct room_counts rc;
	int r = room_counts_load(t, &rc);
	*n = 0;
	if (!r) {
		size_t off = find(&rc, room_id, strlen(room_id));
		if (off < rc.len)
			*n = count_at(&rc, off);
	}
	room_counts_free(&rc);
	return r;
}
